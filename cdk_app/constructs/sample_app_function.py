"""The sample application's Lambda (`sample_app.handler.handler`), deployed after the schema.

The stack connects it to the migrations (`DatabaseMigrations.connect_application`): their
environment (AUTO_MIGRATE, MIGRATION_TIMEOUT, ...), the secret, and a dependency on the
migration custom resource, so CloudFormation updates the code only once the database has been
migrated (schema before code). With AUTO_MIGRATE=true it also migrates on its first request
(the guide's original mode, safely); otherwise it only checks and answers 503 while the schema
is behind.

Its code is the application bundle (cdk_app/bundling.py `application_bundle`), not the
migration function's: no crhelper, and no pglast (the change gate) unless it auto-migrates.
The stack sets AUTO_MIGRATE from the same setting as the bundle, so the two agree; a function
whose variable is flipped to true by hand without a redeploy answers 503 (`ensure_schema`
reports the missing gate) rather than migrating ungated.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.bundling import SAMPLE_APP_HANDLER
from cdk_app.lambda_function import FunctionNetwork, vpc_python_function

SERVICE_NAME = "sample-app"
REQUEST_TIMEOUT_SECONDS = 30
MEMORY_MB = 512
# Seconds beyond MIGRATION_TIMEOUT an auto-migrating first request may need (connection,
# classification, lock wait).
AUTO_MIGRATE_MARGIN_SECONDS = 60


class SampleAppFunction(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, code: lambda_.Code, network: FunctionNetwork,
        database_secret_arn: str, stage_kind: str, auto_migrate: bool,
        migration_timeout_seconds: int,
        log_retention: logs.RetentionDays, log_removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        # An auto-migrating first request may run the migrations itself.
        timeout = (min(migration_timeout_seconds + AUTO_MIGRATE_MARGIN_SECONDS, 900)
                   if auto_migrate else REQUEST_TIMEOUT_SECONDS)
        parts = vpc_python_function(
            self, code=code, network=network,
            handler=SAMPLE_APP_HANDLER,
            description="Sample task-tracker API over the migrated schema",
            role_description="Sample application Lambda: database secret only",
            service=SERVICE_NAME, database_secret_arn=database_secret_arn,
            stage_kind=stage_kind,
            environment={},
            timeout=Duration.seconds(timeout), memory_mb=MEMORY_MB,
            log_retention=log_retention, log_removal_policy=log_removal_policy,
            runtime_reason="Python 3.12 on purpose: its bundle's wheels are built for cp312 "
                           "(cdk_app/bundling.py) and the suite import-tests it under 3.12.")
        self.log_group, self.role, self.function = parts.log_group, parts.role, parts.function
