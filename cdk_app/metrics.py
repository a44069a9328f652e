"""Metric definitions, apart from the alarms and the dashboard that use them.

The names and the `Stage` dimension come from `migration_resource.metric_names`, the same
constants the Lambdas emit with; the Lambda and database metrics come from their constructs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_

from cdk_app.constructs.database import Database
from migration_resource import metric_names as names

PERIOD = Duration.minutes(5)


def migration_metric(name: str, stage_kind: str, statistic: str,
                     unit: cloudwatch.Unit = cloudwatch.Unit.COUNT) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=names.NAMESPACE, metric_name=name,
        dimensions_map={names.STAGE_DIMENSION: stage_kind},
        statistic=statistic, unit=unit, period=PERIOD)


@dataclass(frozen=True)
class MigrationMetrics:
    """Every metric the alarms and the dashboard show, for one stage."""

    duration_seconds: cloudwatch.Metric
    failed: cloudwatch.Metric
    succeeded: cloudwatch.Metric
    applied: cloudwatch.Metric
    snapshot_seconds: cloudwatch.Metric
    connection_errors: cloudwatch.Metric
    schema_behind: cloudwatch.Metric
    function_errors: cloudwatch.Metric
    function_throttles: cloudwatch.Metric
    function_duration: cloudwatch.Metric
    app_errors: cloudwatch.Metric
    database_cpu: cloudwatch.Metric
    database_free_storage: cloudwatch.Metric
    database_connections: cloudwatch.Metric

    @classmethod
    def define(cls, *, stage_kind: str, migration_function: lambda_.IFunction,
               app_function: lambda_.IFunction, database: Database) -> MigrationMetrics:
        seconds = cloudwatch.Unit.SECONDS
        return cls(
            duration_seconds=migration_metric(names.MIGRATION_DURATION_SECONDS, stage_kind,
                                              "Maximum", seconds),
            failed=migration_metric(names.MIGRATION_FAILED, stage_kind, "Sum"),
            succeeded=migration_metric(names.MIGRATION_SUCCEEDED, stage_kind, "Sum"),
            applied=migration_metric(names.MIGRATIONS_APPLIED, stage_kind, "Sum"),
            snapshot_seconds=migration_metric(names.SNAPSHOT_DURATION_SECONDS, stage_kind,
                                              "Maximum", seconds),
            connection_errors=migration_metric(names.DATABASE_CONNECTION_ERRORS, stage_kind,
                                               "Sum"),
            schema_behind=migration_metric(names.SCHEMA_BEHIND, stage_kind, "Sum"),
            function_errors=migration_function.metric_errors(period=PERIOD, statistic="Sum"),
            function_throttles=migration_function.metric_throttles(period=PERIOD,
                                                                   statistic="Sum"),
            function_duration=migration_function.metric_duration(period=PERIOD,
                                                                 statistic="Maximum"),
            app_errors=app_function.metric_errors(period=PERIOD, statistic="Sum"),
            database_cpu=database.metric_cpu(),
            database_free_storage=database.metric_free_storage(),
            database_connections=database.metric_connections(),
        )
