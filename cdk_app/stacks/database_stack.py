"""The stateful stack: network and database. Nothing stateless lives here, so changing a
Lambda, an alarm or a migration never touches this stack, let alone replaces the database."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.config import LOG_RETENTION_DAYS, StageSettings
from cdk_app.constructs.database import Database, DatabaseOptions
from cdk_app.constructs.network import Network


def removal_policy(settings: StageSettings) -> RemovalPolicy:
    return RemovalPolicy.SNAPSHOT if settings.removal_policy == "snapshot" \
        else RemovalPolicy.DESTROY


# CloudWatch Logs' periods in days, in the order of the RetentionDays members (Python's
# enum carries the names, not the days).
RETENTION_BY_DAYS = dict(zip(
    LOG_RETENTION_DAYS,
    [member for member in logs.RetentionDays if member is not logs.RetentionDays.INFINITE],
    strict=True))


def log_retention(settings: StageSettings) -> logs.RetentionDays:
    return RETENTION_BY_DAYS[settings.log_retention_days]


class DatabaseStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, settings: StageSettings,
                 **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        policy = removal_policy(settings)
        self.network = Network(
            self, "Network", nat_gateway=settings.egress == "nat-gateway",
            log_retention=log_retention(settings),
            removal_policy=RemovalPolicy.DESTROY if policy is RemovalPolicy.DESTROY
            else RemovalPolicy.RETAIN)
        self.database = Database(
            self, "Database", vpc=self.network.vpc, subnets=self.network.database_subnets,
            clients=[self.network.functions_security_group],
            identifier=f"{id_}".lower(),
            options=DatabaseOptions(
                kind=settings.database_kind,
                engine_version=settings.engine_version,
                instance_class=settings.instance_class,
                allocated_storage_gb=settings.allocated_storage_gb,
                multi_az=settings.multi_az,
                deletion_protection=settings.deletion_protection,
                removal_policy=policy,
                backup_retention=Duration.days(settings.backup_retention_days),
                log_retention=log_retention(settings),
            ))
        CfnOutput(self, "DatabaseEndpoint", value=self.database.endpoint_address,
                  description="The database's writer endpoint (reachable from the VPC only)")
        CfnOutput(self, "DatabaseSecretArn", value=self.database.secret.secret_arn,
                  description="Secrets Manager secret with the database credentials")
