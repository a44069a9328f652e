"""`DatabaseMigrations`: deploy-time Alembic migrations of one PostgreSQL database, as one
construct a team drops into its own CDK app.

Install it from a clone (`pip install -e /path/to/clone`, or a path dependency) and import:

    from cdk_app.constructs.database_migrations import DatabaseMigrations, MigrationSettings

    migrations = DatabaseMigrations(
        self, "Migrations",
        database=rds.DatabaseInstance.from_database_instance_attributes(
            self, "Orders", instance_identifier="orders-db", port=5432,
            instance_endpoint_address="orders-db.abcdefghijkl.eu-west-1.rds.amazonaws.com",
            security_groups=[]),           # or a cluster, or a database created here
        secret=secretsmanager.Secret.from_secret_complete_arn(self, "OrdersSecret", arn),
        vpc=vpc, subnets=ec2.SubnetSelection(subnet_group_name="Application"),
        security_group=database_clients,   # reaches the database's port and AWS's APIs
        migrations=Path(__file__).parent / "migrations",  # Alembic/Flask-Migrate folder
        settings=MigrationSettings(stage_kind="production", snapshot_before_migrate=True),
    )
    api = lambda_.Function(self, "Api", ..., vpc=migrations.network.vpc,
                           vpc_subnets=migrations.network.subnets,
                           security_groups=[migrations.network.security_group])
    migrations.connect_application(api)    # environment, secret read, schema before code
    CfnOutput(self, "SchemaRevision", value=migrations.to_revision)

What it creates, and nothing else (the database, its secret, network and security group
are the team's, and are never modified):
- the migration Lambda (`MigrationFunction`): the engine bundled from this package's
  installation with the team's migrations, one run at a time, in the given subnets and
  security group; its role reads the secret, snapshots only this database
  (`premigrate-*`), reads its own stack and runs crhelper's polling rule;
- `Custom::DatabaseMigration` (`MigrationCustomResource`, logical id `DatabaseMigration`:
  one per stack), whose Create/Update snapshots and migrates during the deploy;
- alarms to the given SNS topic, or to an encrypted topic of its own (`MigrationAlarms`),
  and a dashboard (`MigrationDashboard`).

What a team uses next:
- `resource`: the custom resource; anything that needs the schema depends on it
  (`connect_application` does so for a function);
- `connect_application(function, auto_migrate=...)`: a function's schema check or
  auto-migrate: the engine's variables, read access to the secret, the dependency, a
  dashboard row; the function must run in `network` (a Lambda's VPC is fixed at creation);
- `state`, `from_revision`, `to_revision` (and `get_att` for `Applied`, `SnapshotId`): the
  custom resource's answer, e.g. for outputs;
- `function`, `alarms`, `topic`, `dashboard`, `network`, `schema_environment()`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Annotations, CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk_app.bundling import (
    MIGRATION_BUNDLE,
    bundle_code,
    migrations_hash,
    scripts_history_digest,
    target_revision,
)
from cdk_app.config import (
    FUNCTION_OVERHEAD_SECONDS,
    LAMBDA_MAX_TIMEOUT_SECONDS,
    SERVICE_TIMEOUT_MAX_SECONDS,
    STAGE_KINDS,
)
from cdk_app.constructs.alarms import MigrationAlarms
from cdk_app.constructs.dashboard import MigrationDashboard
from cdk_app.constructs.migration_custom_resource import (
    MigrationCustomResource,
    MigrationProperties,
)
from cdk_app.constructs.migration_function import MigrationFunction
from cdk_app.database_access import grant_pre_migration_snapshot, grant_secret_read
from cdk_app.lambda_function import FunctionNetwork
from cdk_app.metrics import MigrationMetrics
from migration_resource.snapshots import CLUSTER_PROPERTY, INSTANCE_PROPERTY

# Where migration_resource/ (the engine the Lambda runs) and its requirements live: this
# package's installation, not the team's repository.
ENGINE_ROOT = Path(__file__).resolve().parents[2]
# An alarm on free storage below this, unless the caller knows the database's size.
DEFAULT_FREE_STORAGE_THRESHOLD_BYTES = 2 * 1024**3
# Seconds beyond MIGRATION_TIMEOUT an auto-migrating request may need (connection,
# classification, lock wait).
AUTO_MIGRATE_MARGIN_SECONDS = 60
_METADATA_IMPORT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class MigrationSettings:
    """How deploys migrate: the settings a stage's cdk.json entry holds, with safe defaults."""

    stage_kind: str = "production"  # "development" or "production": the safety rules' key
    snapshot_before_migrate: bool = True  # a `premigrate-*` snapshot before applying
    allow_destructive: bool = False  # contract revisions need this (and a later deploy)
    migrate_on_deploy: bool = True  # false: deploys only report the state
    migration_timeout_seconds: int = 300  # MIGRATION_TIMEOUT: one run's migrations
    lock_timeout_seconds: int = 5  # a DDL statement's wait for a table lock
    lock_retries: int = 5  # runs of a revision that timed out on a table lock
    function_timeout_seconds: int = 600  # the migration Lambda's
    function_memory_mb: int = 1024
    service_timeout_seconds: int = 3600  # the custom resource's ServiceTimeout
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    log_removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    alarm_email: str | None = None  # mailed by the construct's own topic (no alarm_topic)

    def __post_init__(self) -> None:
        problems = []
        if self.stage_kind not in STAGE_KINDS:
            problems.append(f"stage_kind must be one of {', '.join(STAGE_KINDS)}")
        if not 1 <= self.migration_timeout_seconds <= LAMBDA_MAX_TIMEOUT_SECONDS:
            problems.append(f"migration_timeout_seconds must be 1..{LAMBDA_MAX_TIMEOUT_SECONDS}")
        if not 1 <= self.lock_timeout_seconds <= self.migration_timeout_seconds:
            problems.append("lock_timeout_seconds must be 1..migration_timeout_seconds")
        if not 0 <= self.lock_retries <= 20:
            problems.append("lock_retries must be 0..20")
        needed = self.migration_timeout_seconds + FUNCTION_OVERHEAD_SECONDS
        if not needed <= self.function_timeout_seconds <= LAMBDA_MAX_TIMEOUT_SECONDS:
            problems.append(f"function_timeout_seconds must be {needed} (migration_timeout_"
                            f"seconds + {FUNCTION_OVERHEAD_SECONDS})..{LAMBDA_MAX_TIMEOUT_SECONDS}")
        if not self.function_timeout_seconds <= self.service_timeout_seconds \
                <= SERVICE_TIMEOUT_MAX_SECONDS:
            problems.append("service_timeout_seconds must be function_timeout_seconds.."
                            f"{SERVICE_TIMEOUT_MAX_SECONDS}")
        if not 128 <= self.function_memory_mb <= 10240:
            problems.append("function_memory_mb must be 128..10240")
        if problems:
            raise ValueError(f"MigrationSettings: {'; '.join(problems)}, got {self!r}")


class DatabaseMigrations(Construct):
    """The migration Lambda, its custom resource, alarms and dashboard for one database."""

    def __init__(
        self, scope: Construct, id_: str, *,
        database: rds.IDatabaseInstance | rds.IDatabaseCluster,
        secret: secretsmanager.ISecret,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        migrations: Path,
        settings: MigrationSettings | None = None,
        alarm_topic: sns.ITopic | None = None,
        naming_convention: Mapping[str, str] | None = None,
        metadata_import: str | None = None,
        free_storage_threshold_bytes: int = DEFAULT_FREE_STORAGE_THRESHOLD_BYTES,
        engine_root: Path = ENGINE_ROOT,
        code: lambda_.Code | None = None,
        release_id: str | None = None,
    ) -> None:
        """
        `database`: an existing database (`from_database_instance_attributes`,
        `from_database_cluster_attributes`) or one created in this app; nothing here changes
        it. `secret`: its RDS-style JSON secret (host, port, username, password, dbname).
        `vpc`, `subnets`, `security_group`: where the Lambdas run; the group must already
        reach the database's port and AWS's APIs. `migrations`: the Alembic (or
        Flask-Migrate) script folder, or a folder of revision files. `naming_convention`:
        the constraint names the revisions rely on (MIGRATION_NAMING_CONVENTION);
        `metadata_import`: `module:attribute` of the application's `MetaData`
        (MIGRATION_METADATA). `engine_root`: where `migration_resource/` is bundled from
        (this package's installation; the repository's stacks pass their project root).
        `code`: the migration Lambda's code when the default bundle (the engine and the
        migrations) is not enough, e.g. with the package `metadata_import` names:
        `bundle_code(root, MIGRATION_BUNDLE.including("orders"), migrations=...)`.
        `release_id`: what changes with each release of the application's code (its asset
        hash, a version): a release that brings no revision still reaches the migration
        resource, which is when a contract revision deferred by the release before it runs;
        a deploy that changes nothing changes nothing here either.
        """
        super().__init__(scope, id_)
        settings = settings or MigrationSettings()
        migrations = migrations.absolute()  # a relative folder is the app's (its working one)
        if not migrations.is_dir():
            raise ValueError(f"DatabaseMigrations: the migrations folder {migrations} does not "
                             "exist")
        if metadata_import is not None and not _METADATA_IMPORT.match(metadata_import):
            raise ValueError("DatabaseMigrations: metadata_import must look like "
                             f"'package.models:Base.metadata', got {metadata_import!r}")
        stack = Stack.of(self)
        self.settings = settings
        self.cluster, self.database_identifier = _identify(database)
        self.secret = secret
        self.network = FunctionNetwork(vpc=vpc, subnets=subnets, security_group=security_group)
        self._engine_variables = {
            "MIGRATION_TIMEOUT": str(settings.migration_timeout_seconds),
            "MIGRATION_LOCK_TIMEOUT": str(settings.lock_timeout_seconds),
            "MIGRATION_LOCK_RETRIES": str(settings.lock_retries),
            **({"MIGRATION_NAMING_CONVENTION": json.dumps(dict(naming_convention),
                                                          sort_keys=True)}
               if naming_convention else {}),
            **({"MIGRATION_METADATA": metadata_import} if metadata_import else {}),
        }
        identifier_variable = "DB_CLUSTER_IDENTIFIER" if self.cluster else "DB_INSTANCE_IDENTIFIER"

        # Construct ids as the repository's application stack had them before this construct
        # existed: with the id "Default" there, its resources keep their logical ids.
        self.migration_function = MigrationFunction(
            self, "Migration",
            code=code or bundle_code(engine_root, MIGRATION_BUNDLE, migrations=migrations),
            network=self.network, database_secret_arn=secret.secret_arn,
            stage_kind=settings.stage_kind,
            environment={**self._engine_variables,
                         identifier_variable: self.database_identifier},
            timeout=Duration.seconds(settings.function_timeout_seconds),
            memory_mb=settings.function_memory_mb,
            log_retention=settings.log_retention,
            log_removal_policy=settings.log_removal_policy)
        self.function = self.migration_function.function
        grant_secret_read(self.function, secret)
        grant_pre_migration_snapshot(self.function, stack, cluster=self.cluster,
                                     identifier=self.database_identifier)

        self.custom_resource = MigrationCustomResource(
            self, "Migrations", function=self.function,
            service_timeout=Duration.seconds(settings.service_timeout_seconds),
            properties=MigrationProperties(
                target_revision=target_revision(engine_root, migrations=migrations),
                history_digest=scripts_history_digest(engine_root, migrations=migrations),
                migrations_hash=migrations_hash(engine_root, migrations=migrations),
                snapshot_before_migrate=settings.snapshot_before_migrate,
                allow_destructive=settings.allow_destructive,
                migrate_on_deploy=settings.migrate_on_deploy,
                stage_kind=settings.stage_kind,
                database_property=CLUSTER_PROPERTY if self.cluster else INSTANCE_PROPERTY,
                database_identifier=self.database_identifier,
                release_id=release_id,
            ))
        self.resource: CustomResource = self.custom_resource.resource
        # A database created in this app is available (and its secret attached) before the
        # migration runs; an imported one adds nothing to wait for.
        self.resource.node.add_dependency(database)

        self.metrics = MigrationMetrics.define(
            stage_kind=settings.stage_kind, migration_function=self.function,
            database_cluster=self.cluster, database_identifier=self.database_identifier)
        self.alarms = MigrationAlarms(
            self, "Alarms", metrics=self.metrics,
            free_storage_threshold_bytes=free_storage_threshold_bytes,
            alarm_email=settings.alarm_email, name_prefix=stack.stack_name, topic=alarm_topic)
        self.topic: sns.ITopic = self.alarms.topic
        self.dashboard = MigrationDashboard(
            self, "Dashboard", dashboard_name=f"{stack.stack_name}-migrations",
            metrics=self.metrics, alarms=list(self.alarms.alarms.values()))

    # -- the custom resource's answer -----------------------------------------------------------
    def get_att(self, name: str) -> str:
        """A value of the migration's answer: `State`, `FromRevision`, `ToRevision`,
        `Applied`, `SnapshotId`."""
        return self.custom_resource.get_att(name)

    @property
    def state(self) -> str:
        """The database's state after the deploy (`up_to_date`, `ahead`, ...)."""
        return self.get_att("State")

    @property
    def from_revision(self) -> str:
        return self.get_att("FromRevision")

    @property
    def to_revision(self) -> str:
        return self.get_att("ToRevision")

    # -- the team's functions -------------------------------------------------------------------
    def schema_environment(self, *, auto_migrate: bool = False) -> dict[str, str]:
        """The variables the schema check (`migration_resource.auto_migrate.ensure_schema`)
        and auto-migrate read: the secret, the stage, the engine's settings."""
        return {
            "DATABASE_SECRET_ARN": self.secret.secret_arn,
            "STAGE": self.settings.stage_kind,
            "AUTO_MIGRATE": str(auto_migrate).lower(),
            "ALLOW_DESTRUCTIVE": str(self.settings.allow_destructive).lower(),
            **self._engine_variables,
        }

    def connect_application(
        self, function: lambda_.Function, *, auto_migrate: bool = False,
        label: str = "Application",
    ) -> None:
        """Give `function` what its schema check or auto-migrate needs, after the schema.

        Sets `schema_environment(auto_migrate=...)`, grants reading the secret, makes the
        function depend on the migration (CloudFormation updates it only once the schema is
        migrated) and adds its errors to the dashboard (`label`). The function must run in
        `network` (created with its VPC, subnets and security group): a Lambda's VPC cannot
        be added later. With `auto_migrate` its code must hold the engine and the migrations.
        """
        if not function.is_bound_to_vpc:
            raise ValueError(
                f"{function.node.path} is not in a VPC: create it with vpc=network.vpc, "
                "vpc_subnets=network.subnets, security_groups=[network.security_group] of "
                f"{self.node.path}, so it reaches the database")
        for name, value in self.schema_environment(auto_migrate=auto_migrate).items():
            function.add_environment(name, value)
        grant_secret_read(function, self.secret)
        function.node.add_dependency(self.resource)
        self.dashboard.add_application(function, label=label)
        needed = self.settings.migration_timeout_seconds + AUTO_MIGRATE_MARGIN_SECONDS
        timeout = function.timeout.to_seconds() if function.timeout else 3
        if auto_migrate and timeout < min(needed, LAMBDA_MAX_TIMEOUT_SECONDS):
            Annotations.of(function).add_warning_v2(
                "db-migrations:auto-migrate-timeout",
                f"an auto-migrating first request may run the migrations: give the function "
                f"a timeout of at least {min(needed, LAMBDA_MAX_TIMEOUT_SECONDS)} s "
                f"(migration timeout + {AUTO_MIGRATE_MARGIN_SECONDS}), it has {timeout:g} s")


def _identify(database: rds.IDatabaseInstance | rds.IDatabaseCluster) -> tuple[bool, str]:
    """(is a cluster, identifier): an Aurora cluster has `cluster_identifier`, an instance
    `instance_identifier` (jsii's proxies of imported databases support no isinstance)."""
    cluster_identifier = getattr(database, "cluster_identifier", None)
    if isinstance(cluster_identifier, str):
        return True, cluster_identifier
    instance_identifier = getattr(database, "instance_identifier", None)
    if isinstance(instance_identifier, str):
        return False, instance_identifier
    raise TypeError(f"database must be an rds.IDatabaseInstance or rds.IDatabaseCluster, got "
                    f"{type(database).__name__}")
