"""RDS PostgreSQL: a DB instance or an Aurora PostgreSQL cluster, by configuration.

Credentials are generated into Secrets Manager and attached to the database (RDS fills in
host, port, username, password and dbname: the JSON `migration_resource.connection` reads).
Storage is encrypted, nothing is public, and the security group admits only the given client
security groups on the PostgreSQL port. The parameter group forces TLS (`rds.force_ssl`) and
logs slow statements (`log_min_duration_statement`), lock waits and DDL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk_app.nag import Checks

PORT = 5432
DATABASE_NAME = "app"
MASTER_USERNAME = "dbadmin"
SLOW_STATEMENT_MS = 1000
PARAMETERS = {
    "rds.force_ssl": "1",  # connection.py asks sslmode=require
    "log_min_duration_statement": str(SLOW_STATEMENT_MS),
    "log_lock_waits": "1",  # a migration waiting on a table lock shows up in the log
    "log_statement": "ddl",  # every schema change is in the database's own log too
}
# Performance Insights is not offered on the smallest burstable classes; enabling it there
# fails the deploy.
NO_PERFORMANCE_INSIGHTS_SIZES = frozenset({"micro", "small"})


def performance_insights_supported(instance_class: str) -> bool:
    """`db.t4g.micro` → False, `db.t4g.medium` or `db.r7g.large` → True."""
    return instance_class.rsplit(".", 1)[-1] not in NO_PERFORMANCE_INSIGHTS_SIZES


@dataclass(frozen=True)
class DatabaseOptions:
    kind: str  # "instance" or "aurora"
    engine_version: str  # "17.6"
    instance_class: str  # "db.t4g.micro"
    allocated_storage_gb: int
    multi_az: bool
    deletion_protection: bool
    removal_policy: RemovalPolicy
    backup_retention: Duration
    log_retention: logs.RetentionDays


class Database(Construct):
    """The database and its secret; the migrations construct grants what it needs from the
    identifier (`reference`)."""

    def __init__(
        self, scope: Construct, id_: str, *, vpc: ec2.IVpc, subnets: ec2.SubnetSelection,
        clients: Sequence[ec2.ISecurityGroup], identifier: str, options: DatabaseOptions,
    ) -> None:
        super().__init__(scope, id_)
        self.options = options
        # A fixed identifier: CloudFormation cannot replace a named database, so a change
        # that would need a replacement fails instead of swapping the database for an empty
        # one. It also lets this construct own the exported log groups (retention set here
        # instead of by CDK's LogRetention Lambda, which needs logs:PutRetentionPolicy on *).
        self.identifier = identifier
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
            description=f"PostgreSQL: port {PORT} from the migration and application Lambdas "
                        "only",
        )
        credentials = rds.Credentials.from_generated_secret(MASTER_USERNAME)
        major = options.engine_version.split(".")[0]
        instance_type = ec2.InstanceType(options.instance_class.removeprefix("db."))
        insights = performance_insights_supported(options.instance_class)
        self.instance: rds.DatabaseInstance | None = None
        self.cluster: rds.DatabaseCluster | None = None
        if options.kind == "aurora":
            engine: rds.IEngine = rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.of(options.engine_version, major))
            self.parameter_group = rds.ParameterGroup(
                self, "ParameterGroup", engine=engine, parameters=PARAMETERS,
                description="TLS only; slow statements, lock waits and DDL logged")

            def member(name: str) -> rds.IClusterInstance:
                return rds.ClusterInstance.provisioned(
                    name, instance_type=instance_type, publicly_accessible=False,
                    enable_performance_insights=insights, auto_minor_version_upgrade=True)

            log_groups = self._log_groups("cluster", ["postgresql"])
            self.cluster = rds.DatabaseCluster(
                self, "Cluster",
                cluster_identifier=identifier,
                engine=engine,  # type: ignore[arg-type]
                credentials=credentials,
                default_database_name=DATABASE_NAME,
                writer=member("Writer"),
                readers=[member("Reader")] if options.multi_az else None,
                vpc=vpc, vpc_subnets=subnets, security_groups=[self.security_group],
                port=PORT,
                storage_encrypted=True,
                iam_authentication=True,
                deletion_protection=options.deletion_protection,
                removal_policy=options.removal_policy,
                backup=rds.BackupProps(retention=options.backup_retention),
                parameter_group=self.parameter_group,
                cloudwatch_logs_exports=["postgresql"],
                copy_tags_to_snapshot=True,
            )
            for log_group in log_groups:
                self.cluster.node.add_dependency(log_group)
            self.connections = self.cluster.connections
            secret = self.cluster.secret
            self.endpoint_address = self.cluster.cluster_endpoint.hostname
        else:
            instance_engine = rds.DatabaseInstanceEngine.postgres(
                version=rds.PostgresEngineVersion.of(options.engine_version, major))
            self.parameter_group = rds.ParameterGroup(
                self, "ParameterGroup", engine=instance_engine, parameters=PARAMETERS,
                description="TLS only; slow statements, lock waits and DDL logged")
            log_groups = self._log_groups("instance", ["postgresql", "upgrade"])
            self.instance = rds.DatabaseInstance(
                self, "Instance",
                instance_identifier=identifier,
                engine=instance_engine,
                credentials=credentials,
                database_name=DATABASE_NAME,
                instance_type=instance_type,
                allocated_storage=options.allocated_storage_gb,
                storage_type=rds.StorageType.GP3,
                storage_encrypted=True,
                multi_az=options.multi_az,
                vpc=vpc, vpc_subnets=subnets, security_groups=[self.security_group],
                port=PORT,
                publicly_accessible=False,
                iam_authentication=True,
                deletion_protection=options.deletion_protection,
                removal_policy=options.removal_policy,
                delete_automated_backups=options.removal_policy is RemovalPolicy.DESTROY,
                backup_retention=options.backup_retention,
                parameter_group=self.parameter_group,
                enable_performance_insights=insights,
                cloudwatch_logs_exports=["postgresql", "upgrade"],
                auto_minor_version_upgrade=True,
                copy_tags_to_snapshot=True,
            )
            for log_group in log_groups:
                self.instance.node.add_dependency(log_group)
            self.connections = self.instance.connections
            secret = self.instance.secret
            self.endpoint_address = self.instance.db_instance_endpoint_address
        assert secret is not None  # generated credentials always make one
        # The attached secret: its ARN resolves only once RDS has written the host into it.
        self.secret: secretsmanager.ISecret = secret
        for client in clients:
            self.connections.allow_from(client, ec2.Port.tcp(PORT), "PostgreSQL from a Lambda")
        self._acknowledge()

    def _log_groups(self, kind: str, names: Sequence[str]) -> list[logs.LogGroup]:
        """The groups RDS exports to, created first so their retention is ours."""
        return [logs.LogGroup(self, f"{name.capitalize()}Logs",
                              log_group_name=f"/aws/rds/{kind}/{self.identifier}/{name}",
                              retention=self.options.log_retention,
                              removal_policy=self.options.removal_policy
                              if self.options.removal_policy is RemovalPolicy.DESTROY
                              else RemovalPolicy.RETAIN)
                for name in names]

    # -- the database as the application stack sees it ---------------------------------------
    def reference(
        self, scope: Construct, id_: str,
    ) -> rds.IDatabaseInstance | rds.IDatabaseCluster:
        """The database imported into `scope` (another stack) by its fixed identifier.

        What the migrations construct builds from it (IAM scoping, the custom resource's
        identifier, metrics) is then the literal identifier, not an export of the database's
        Ref: the application stack depends on the database stack only through the secret.
        """
        if self.cluster is not None:
            return rds.DatabaseCluster.from_database_cluster_attributes(
                scope, id_, cluster_identifier=self.identifier,
                cluster_endpoint_address=self.endpoint_address, port=PORT)
        return rds.DatabaseInstance.from_database_instance_attributes(
            scope, id_, instance_identifier=self.identifier,
            instance_endpoint_address=self.endpoint_address, port=PORT, security_groups=[])

    def free_storage_threshold_bytes(self) -> int:
        """Alarm below 10% of the allocated storage (2 GiB of an Aurora instance's local
        storage)."""
        if self.cluster is not None:
            return 2 * 1024**3
        return self.options.allocated_storage_gb * 1024**3 // 10

    # -- cdk-nag ------------------------------------------------------------------------------
    def _acknowledge(self) -> None:
        database = self.cluster or self.instance
        assert database is not None
        checks = Checks(database)
        checks.acknowledge(
            id="AwsSolutions-RDS11",
            reason="PostgreSQL keeps its standard port 5432: the security group admits only "
                   "the two Lambdas' security group, so a non-default port adds no protection.")
        Checks(self).acknowledge(
            id="AwsSolutions-SMG4",
            reason="The generated master secret is not rotated automatically: the Lambdas "
                   "cache it per container (migration_resource/connection.py), so a rotation "
                   "would break warm containers until they restart. Rotate it deliberately.")
        if not self.options.multi_az:
            checks.acknowledge(
                id="AwsSolutions-RDS3",
                reason="A development stage runs a single-AZ database to save cost; the "
                       "production stage sets multiAz in cdk.json.")
        if not self.options.deletion_protection:
            checks.acknowledge(
                id="AwsSolutions-RDS10",
                reason="A development stage can be deleted with its stack; production sets "
                       "deletionProtection (the configuration refuses production without it).")

