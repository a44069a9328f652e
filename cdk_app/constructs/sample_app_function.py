"""The sample application's Lambda (`sample_app.handler.handler`), deployed after the schema.

The stack makes it depend on the migration custom resource: CloudFormation updates the code
only once the database has been migrated (schema before code). With AUTO_MIGRATE=true it also
migrates on its first request (the guide's original mode, safely); otherwise it only checks
and answers 503 while the schema is behind.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.bundling import ARCHITECTURE, RUNTIME, SAMPLE_APP_HANDLER
from cdk_app.constructs.migration_function import FunctionNetwork, powertools_environment
from cdk_app.lambda_role import vpc_lambda_role
from cdk_app.nag import Checks

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
        allow_destructive: bool, migration_timeout_seconds: int,
        log_retention: logs.RetentionDays, log_removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       removal_policy=log_removal_policy)
        subnets = network.vpc.select_subnets(
            subnet_group_name=network.subnets.subnet_group_name).subnets
        self.role = vpc_lambda_role(
            self, "Role", log_group=self.log_group, subnets=subnets,
            security_group=network.security_group,
            description="Sample application Lambda: database secret only")
        # An auto-migrating first request may run the migrations itself.
        timeout = (min(migration_timeout_seconds + AUTO_MIGRATE_MARGIN_SECONDS, 900)
                   if auto_migrate else REQUEST_TIMEOUT_SECONDS)
        self.function = lambda_.Function(
            self, "Function",
            description="Sample task-tracker API over the migrated schema",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=SAMPLE_APP_HANDLER,
            code=code,
            role=self.role,
            timeout=Duration.seconds(timeout),
            memory_size=MEMORY_MB,
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            security_groups=[network.security_group],
            log_group=self.log_group,
            environment={
                "DATABASE_SECRET_ARN": database_secret_arn,
                "STAGE": stage_kind,
                "AUTO_MIGRATE": str(auto_migrate).lower(),
                "ALLOW_DESTRUCTIVE": str(allow_destructive).lower(),
                "MIGRATION_TIMEOUT": str(migration_timeout_seconds),
                **powertools_environment(SERVICE_NAME),
            },
        )
        Checks(self.function).acknowledge(
            id="AwsSolutions-L1",
            reason="Python 3.12 on purpose: it shares the migration Lambda's bundle, whose "
                   "wheels are built for cp312 and import-tested under 3.12.")
