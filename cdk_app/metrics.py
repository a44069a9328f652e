"""Metric definitions, apart from the alarms and the dashboard that use them.

The names and the `Stage` dimension come from `migration_resource.metric_names`, the same
constants the Lambdas emit with; the Lambda metrics come from the function, the database's
from AWS/RDS by the database's identifier (no reference to the database itself, so a
database of another stack, or one this app does not own, is watched the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_

from migration_resource import metric_names as names

PERIOD = Duration.minutes(5)


def migration_metric(name: str, stage_kind: str, statistic: str,
                     unit: cloudwatch.Unit = cloudwatch.Unit.COUNT) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=names.NAMESPACE, metric_name=name,
        dimensions_map={names.STAGE_DIMENSION: stage_kind},
        statistic=statistic, unit=unit, period=PERIOD)


def database_metric(name: str, *, cluster: bool, identifier: str,
                    statistic: str = "Average") -> cloudwatch.Metric:
    """An AWS/RDS metric of the DB instance or Aurora cluster `identifier`."""
    dimension = "DBClusterIdentifier" if cluster else "DBInstanceIdentifier"
    return cloudwatch.Metric(namespace="AWS/RDS", metric_name=name, statistic=statistic,
                             dimensions_map={dimension: identifier}, period=PERIOD)


def application_errors(function: lambda_.IFunction) -> cloudwatch.Metric:
    return function.metric_errors(period=PERIOD, statistic="Sum")


@dataclass(frozen=True)
class MigrationMetrics:
    """Every metric the alarms and the dashboard show, for one stage and database."""

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
    database_cpu: cloudwatch.Metric
    database_free_storage: cloudwatch.Metric
    database_connections: cloudwatch.Metric

    @classmethod
    def define(cls, *, stage_kind: str, migration_function: lambda_.IFunction,
               database_cluster: bool, database_identifier: str) -> MigrationMetrics:
        seconds = cloudwatch.Unit.SECONDS

        def database(name: str, statistic: str = "Average") -> cloudwatch.Metric:
            return database_metric(name, cluster=database_cluster,
                                   identifier=database_identifier, statistic=statistic)

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
            database_cpu=database("CPUUtilization"),
            # Free storage in bytes: the instance's volume, or an Aurora cluster's local
            # (temporary) storage, since Aurora's cluster volume grows by itself.
            database_free_storage=database(
                "FreeLocalStorage" if database_cluster else "FreeStorageSpace", "Minimum"),
            database_connections=database("DatabaseConnections"),
        )
