"""The stateless stack: the migrations (`DatabaseMigrations`: the migration Lambda, its custom
resource, alarms and the dashboard) and the sample application Lambda connected to them.
Composes constructs and wires grants; nothing else.

The database is the database stack's (imported here by its fixed identifier) or, for a stage
with `existingDatabase`, one this app does not own (`ImportedDatabase`): the same construct
migrates both. A stage with `existingDatabase` also has the team's own function
(`sample_app.team_function`), connected as a team connects the Lambdas it already has:
`connect_application(function)`, check-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk_app.config import StageSettings
from cdk_app.constructs.database_migrations import (
    DEFAULT_FREE_STORAGE_THRESHOLD_BYTES,
    DatabaseMigrations,
    MigrationSettings,
)
from cdk_app.constructs.imported_database import ImportedDatabase
from cdk_app.constructs.sample_app_function import SampleAppFunction
from cdk_app.lambda_function import FunctionNetwork, vpc_python_function
from cdk_app.stacks.database_stack import DatabaseStack, log_retention

# The key remote_admin.py --stack-name reads (scripts/remote_admin.py STACK_OUTPUT).
FUNCTION_NAME_OUTPUT = "MigrationFunctionName"
# The id of the migrations construct: "Default" leaves it out of its resources' logical ids,
# which stay what they were before the construct existed (deployed stacks update in place).
MIGRATIONS_ID = "Default"
# The team's own function (existing-database stages): its output, read by the local deploy.
TEAM_FUNCTION_OUTPUT = "TeamFunctionName"
TEAM_FUNCTION_HANDLER = "sample_app.team_function.handler"


class ApplicationStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, settings: StageSettings,
                 data: DatabaseStack | None, application_code: lambda_.Code,
                 project_root: Path, migrations: Path,
                 naming_convention: dict[str, str] | None, release_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        if data is not None:
            database = data.database.reference(self, "Database")
            secret = data.database.secret
            network = FunctionNetwork(vpc=data.network.vpc,
                                      subnets=data.network.function_subnets,
                                      security_group=data.network.functions_security_group)
            free_storage = data.database.free_storage_threshold_bytes()
        else:
            existing = settings.existing_database
            assert existing is not None, "a stage without a database stack names one"
            imported = ImportedDatabase(self, "ExistingDatabase", existing=existing)
            database, secret, network = imported.database, imported.secret, imported.network
            free_storage = DEFAULT_FREE_STORAGE_THRESHOLD_BYTES
            CfnOutput(self, "DatabaseEndpoint", value=existing.endpoint,
                      description="The existing database this stack migrates")
        logs_removal = (RemovalPolicy.RETAIN if settings.production
                        else RemovalPolicy.DESTROY)

        self.migrations = DatabaseMigrations(
            self, MIGRATIONS_ID, database=database, secret=secret, vpc=network.vpc,
            subnets=network.subnets, security_group=network.security_group,
            migrations=migrations, naming_convention=naming_convention,
            free_storage_threshold_bytes=free_storage, engine_root=project_root,
            release_id=release_id,
            settings=MigrationSettings(
                stage_kind=settings.kind,
                snapshot_before_migrate=settings.snapshot_before_migrate,
                allow_destructive=settings.allow_destructive,
                migrate_on_deploy=settings.migrate_on_deploy,
                migration_timeout_seconds=settings.migration_timeout_seconds,
                lock_timeout_seconds=settings.migration_lock_timeout_seconds,
                lock_retries=settings.migration_lock_retries,
                function_timeout_seconds=settings.migration_function_timeout_seconds,
                function_memory_mb=settings.migration_function_memory_mb,
                service_timeout_seconds=settings.service_timeout_seconds,
                log_retention=log_retention(settings),
                log_removal_policy=logs_removal,
                alarm_email=settings.alarm_email,
            ))

        app = SampleAppFunction(
            self, "SampleApp", code=application_code, network=self.migrations.network,
            database_secret_arn=secret.secret_arn, stage_kind=settings.kind,
            auto_migrate=settings.auto_migrate,
            migration_timeout_seconds=settings.migration_timeout_seconds,
            log_retention=log_retention(settings), log_removal_policy=logs_removal)
        # Its environment and secret, and schema before code: the application is created or
        # updated only after the migration resource has succeeded.
        self.migrations.connect_application(app.function, auto_migrate=settings.auto_migrate)

        self.team_function: lambda_.Function | None = None
        if data is None:
            # A function the team already has, as a team would add it: its own handler in
            # the migrations' network, then connected (check-only: it never migrates).
            team = Construct(self, "Team")
            self.team_function = vpc_python_function(
                team, code=application_code, network=self.migrations.network,
                handler=TEAM_FUNCTION_HANDLER,
                description="The team's own function: a report over its existing tables",
                role_description="The team's function: database secret only",
                service="team-report", database_secret_arn=secret.secret_arn,
                stage_kind=settings.kind, environment={}, timeout=Duration.seconds(30),
                memory_mb=256, log_retention=log_retention(settings),
                log_removal_policy=logs_removal,
                runtime_reason="Python 3.12 on purpose: it shares the application bundle, "
                               "whose wheels are built for cp312").function
            self.migrations.connect_application(self.team_function, label="Team function")
            CfnOutput(self, TEAM_FUNCTION_OUTPUT, value=self.team_function.function_name,
                      description="The team's own function, connected check-only")

        self.migration = self.migrations.custom_resource
        self.migration_function = self.migrations.migration_function
        self.app_function = app
        self.alarms = self.migrations.alarms
        self.dashboard = self.migrations.dashboard
        CfnOutput(self, FUNCTION_NAME_OUTPUT, value=self.migrations.function.function_name,
                  description="The migration Lambda: remote_admin.py --stack-name reads this")
        CfnOutput(self, "DashboardUrl", value=self.dashboard.url,
                  description="CloudWatch dashboard: migrations and database side by side")
        CfnOutput(self, "AlarmTopicArn", value=self.migrations.topic.topic_arn,
                  description="SNS topic the alarms notify; subscribe to it")
        CfnOutput(self, "SampleAppFunctionName", value=app.function.function_name,
                  description="The sample application's Lambda")
