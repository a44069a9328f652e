"""The stateless stack: the migration Lambda and its custom resource, the sample application
Lambda, alarms and the dashboard. Composes constructs and wires grants; nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk_app.bundling import migrations_hash, scripts_history_digest, target_revision
from cdk_app.config import StageSettings
from cdk_app.constructs.alarms import MigrationAlarms
from cdk_app.constructs.dashboard import MigrationDashboard
from cdk_app.constructs.migration_custom_resource import (
    MigrationCustomResource,
    MigrationProperties,
)
from cdk_app.constructs.migration_function import MigrationFunction
from cdk_app.constructs.sample_app_function import SampleAppFunction
from cdk_app.lambda_function import FunctionNetwork
from cdk_app.metrics import MigrationMetrics
from cdk_app.stacks.database_stack import DatabaseStack, log_retention

# The key remote_admin.py --stack-name reads (scripts/remote_admin.py STACK_OUTPUT).
FUNCTION_NAME_OUTPUT = "MigrationFunctionName"


class ApplicationStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, settings: StageSettings,
                 data: DatabaseStack, migration_code: lambda_.Code,
                 application_code: lambda_.Code, project_root: Path,
                 **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        database = data.database
        network = FunctionNetwork(vpc=data.network.vpc, subnets=data.network.function_subnets,
                                  security_group=data.network.functions_security_group)
        logs_removal = (RemovalPolicy.RETAIN if settings.production
                        else RemovalPolicy.DESTROY)
        identifier_variable = ("DB_CLUSTER_IDENTIFIER" if database.cluster is not None
                               else "DB_INSTANCE_IDENTIFIER")

        migration = MigrationFunction(
            self, "Migration", code=migration_code, network=network,
            database_secret_arn=database.secret.secret_arn,
            database_identifiers={identifier_variable: database.identifier},
            stage_kind=settings.kind,
            migration_timeout_seconds=settings.migration_timeout_seconds,
            lock_timeout_seconds=settings.migration_lock_timeout_seconds,
            lock_retries=settings.migration_lock_retries,
            timeout=Duration.seconds(settings.migration_function_timeout_seconds),
            memory_mb=settings.migration_function_memory_mb,
            log_retention=log_retention(settings), log_removal_policy=logs_removal)
        database.grant_secret_read(migration.function)
        database.grant_pre_migration_snapshot(migration.function, self)

        self.migration = MigrationCustomResource(
            self, "Migrations", function=migration.function,
            service_timeout=Duration.seconds(settings.service_timeout_seconds),
            properties=MigrationProperties(
                target_revision=target_revision(project_root),
                history_digest=scripts_history_digest(project_root),
                migrations_hash=migrations_hash(project_root),
                snapshot_before_migrate=settings.snapshot_before_migrate,
                allow_destructive=settings.allow_destructive,
                migrate_on_deploy=settings.migrate_on_deploy,
                stage_kind=settings.kind,
                database_property=database.snapshot_property,
                database_identifier=database.identifier,
            ))

        app = SampleAppFunction(
            self, "SampleApp", code=application_code, network=network,
            database_secret_arn=database.secret.secret_arn, stage_kind=settings.kind,
            auto_migrate=settings.auto_migrate, allow_destructive=settings.allow_destructive,
            migration_timeout_seconds=settings.migration_timeout_seconds,
            lock_timeout_seconds=settings.migration_lock_timeout_seconds,
            lock_retries=settings.migration_lock_retries,
            log_retention=log_retention(settings), log_removal_policy=logs_removal)
        database.grant_secret_read(app.function)
        # Schema before code: the application is created or updated only after the
        # migration resource has succeeded.
        app.function.node.add_dependency(self.migration.resource)

        metrics = MigrationMetrics.define(
            stage_kind=settings.kind, migration_function=migration.function,
            app_function=app.function, database=database)
        alarms = MigrationAlarms(
            self, "Alarms", metrics=metrics,
            free_storage_threshold_bytes=database.free_storage_threshold_bytes(),
            alarm_email=settings.alarm_email, name_prefix=self.stack_name)
        dashboard = MigrationDashboard(
            self, "Dashboard", dashboard_name=f"{self.stack_name}-migrations",
            metrics=metrics, alarms=list(alarms.alarms.values()))

        self.migration_function = migration
        self.app_function = app
        self.alarms = alarms
        self.dashboard = dashboard
        CfnOutput(self, FUNCTION_NAME_OUTPUT, value=migration.function.function_name,
                  description="The migration Lambda: remote_admin.py --stack-name reads this")
        CfnOutput(self, "DashboardUrl", value=dashboard.url,
                  description="CloudWatch dashboard: migrations and database side by side")
        CfnOutput(self, "AlarmTopicArn", value=alarms.topic.topic_arn,
                  description="SNS topic the alarms notify; subscribe to it")
        CfnOutput(self, "SampleAppFunctionName", value=app.function.function_name,
                  description="The sample application's Lambda")
