"""The stateful stack: network and database. Nothing stateless lives here, so changing a
Lambda, an alarm or a migration never touches this stack, let alone replaces the database."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.config import LOG_RETENTION_DAYS, NewDatabase, StageSettings
from cdk_app.constructs.database import Database, DatabaseOptions
from cdk_app.constructs.network import Network


def removal_policy(database: NewDatabase) -> RemovalPolicy:
    return RemovalPolicy.SNAPSHOT if database.removal_policy == "snapshot" \
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
    """Only for a stage that creates its database (`settings.new_database`); a stage with
    `existingDatabase` has no database stack at all."""

    def __init__(self, scope: Construct, id_: str, *, settings: StageSettings,
                 **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        database = settings.new_database
        if database is None:
            raise ValueError(f"stage {settings.name} names an existing database: it has no "
                             "database stack")
        policy = removal_policy(database)
        self.network = Network(
            self, "Network", nat_gateway=database.egress == "nat-gateway",
            log_retention=log_retention(settings),
            removal_policy=RemovalPolicy.DESTROY if policy is RemovalPolicy.DESTROY
            else RemovalPolicy.RETAIN)
        self.database = Database(
            self, "Database", vpc=self.network.vpc, subnets=self.network.database_subnets,
            clients=[self.network.functions_security_group],
            identifier=f"{id_}".lower(),
            options=DatabaseOptions(
                kind=database.kind,
                engine_version=database.engine_version,
                instance_class=database.instance_class,
                allocated_storage_gb=database.allocated_storage_gb,
                multi_az=database.multi_az,
                deletion_protection=database.deletion_protection,
                removal_policy=policy,
                backup_retention=Duration.days(database.backup_retention_days),
                log_retention=log_retention(settings),
            ))
        CfnOutput(self, "DatabaseEndpoint", value=self.database.endpoint_address,
                  description="The database's writer endpoint (reachable from the VPC only)")
        CfnOutput(self, "DatabaseSecretArn", value=self.database.secret.secret_arn,
                  description="Secrets Manager secret with the database credentials")
