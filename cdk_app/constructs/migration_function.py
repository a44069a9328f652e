"""The migration Lambda: `Custom::DatabaseMigration`'s handler and the admin endpoint.

Python 3.12, the shared bundle (cdk_app/bundling.py), one run at a time (reserved concurrency
1: two deploys, or a deploy and an admin command, queue instead of racing to the advisory
lock), timeout and memory from the stage settings, JSON logs and embedded metrics through
Powertools' environment variables, its own log group with a retention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.bundling import ARCHITECTURE, MIGRATION_HANDLER, RUNTIME
from cdk_app.lambda_role import vpc_lambda_role
from cdk_app.nag import Checks
from migration_resource.metric_names import NAMESPACE

SERVICE_NAME = "db-migrations"


@dataclass(frozen=True)
class FunctionNetwork:
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup


def powertools_environment(service: str) -> dict[str, str]:
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


class MigrationFunction(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, code: lambda_.Code, network: FunctionNetwork,
        database_secret_arn: str, database_identifiers: Mapping[str, str], stage_kind: str,
        migration_timeout_seconds: int, timeout: Duration, memory_mb: int,
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
            description="Migration Lambda: database secret, pre-migration snapshots, own stack "
                        "status, crhelper polling")
        self.function = lambda_.Function(
            self, "Function",
            description="Custom::DatabaseMigration and admin operations (remote_admin.py)",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=MIGRATION_HANDLER,
            code=code,
            role=self.role,
            timeout=timeout,
            memory_size=memory_mb,
            reserved_concurrent_executions=1,
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            security_groups=[network.security_group],
            log_group=self.log_group,
            environment={
                "DATABASE_SECRET_ARN": database_secret_arn,
                "STAGE": stage_kind,
                "MIGRATION_TIMEOUT": str(migration_timeout_seconds),
                **database_identifiers,
                **powertools_environment(SERVICE_NAME),
            },
        )
        Checks(self.function).acknowledge(
            id="AwsSolutions-L1",
            reason="Python 3.12 on purpose: the bundle's wheels are built for cp312 "
                   "(cdk_app/bundling.py) and the suite import-tests it under 3.12.")
