"""Stage settings: read once from cdk.json context into a frozen dataclass.

Configuration flows one way: cdk.json → app.py → stacks → constructs. Constructs never read
the environment. A missing or malformed setting fails synth with a message naming it
(`stages.prod.instanceClass must look like db.t4g.micro, got 't4g.micro'`).

A stage either creates its network and database (the database keys: `databaseKind`,
`engineVersion`, ...: `NewDatabase`) or names one that exists (`existingDatabase`:
`ExistingDatabase`); then only the application stack is deployed and the database keys are
refused, so nobody believes they change a database this app does not own:

    "existingDatabase": {"kind": "instance" | "cluster", "identifier": "orders-db",
                         "endpoint": "orders-db.abc.eu-west-1.rds.amazonaws.com",
                         "port": 5432, "secretArn": "arn:aws:secretsmanager:...-AbCdEf",
                         "vpcId": "vpc-...", "subnetIds": ["subnet-...", ...],
                         "securityGroupId": "sg-..."}

The VPC is looked up by id at synth; the lookup is committed in cdk.context.json, so synth
stays offline (`cdk synth -c stage=NAME` once with credentials writes it there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, TypeVar

from migration_resource.custom_resource import TIME_MARGIN_SECONDS

STAGE_KINDS = ("development", "production")
DATABASE_KINDS = ("instance", "aurora")
EXISTING_DATABASE_KINDS = ("instance", "cluster")
EGRESS_MODES = ("vpc-endpoints", "nat-gateway")
REMOVAL_POLICIES = ("snapshot", "destroy")
# PostgreSQL majors RDS and Aurora both offer with standard support; older ones are refused
# so nobody starts a new database on a version about to leave support.
SUPPORTED_POSTGRES_MAJORS = (15, 16, 17)
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)
LAMBDA_MAX_TIMEOUT_SECONDS = 900
# A custom resource's ServiceTimeout: CloudFormation allows 1..3600 seconds.
SERVICE_TIMEOUT_MAX_SECONDS = 3600
# Seconds a migration Lambda run needs besides the migration itself: container start,
# secret, classification and crhelper's answer, plus the custom resource's own margin.
FUNCTION_OVERHEAD_SECONDS = TIME_MARGIN_SECONDS + 10

_ENGINE_VERSION = re.compile(r"^(\d{2})\.(\d{1,2})$")
_INSTANCE_CLASS = re.compile(r"^db\.([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# RDS identifiers: a letter, then letters, digits and single hyphens, at most 63, no hyphen last.
_DB_IDENTIFIER = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{0,62}(?<!-)$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
# The complete ARN: Secrets Manager appends "-" and six characters to the secret's name.
_SECRET_ARN = re.compile(
    r"^arn:aws(?:-[a-z]+)*:secretsmanager:[a-z0-9-]+:\d{12}:secret:"
    r"[\w/+=.@-]+-[A-Za-z0-9]{6}$")
_VPC_ID = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET_ID = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SECURITY_GROUP_ID = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# RDS for PostgreSQL and Aurora accept ports 1150..65535.
DATABASE_PORTS = (1150, 65535)
DEFAULT_DATABASE_PORT = 5432
# The migrations a stage deploys, relative to the folder of cdk.json: the repository's own.
DEFAULT_MIGRATIONS_PATH = "alembic"
# The keys that describe a database this app creates; refused next to existingDatabase.
NEW_DATABASE_KEYS = ("databaseKind", "engineVersion", "instanceClass", "allocatedStorageGb",
                     "multiAz", "deletionProtection", "removalPolicy", "backupRetentionDays",
                     "egress")
EXISTING_DATABASE_KEYS = ("kind", "identifier", "endpoint", "port", "secretArn", "vpcId",
                          "subnetIds", "securityGroupId")
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting in cdk.json is missing or malformed; the message names it."""


@dataclass(frozen=True)
class NewDatabase:
    """The network and database the stage's database stack creates."""

    kind: str  # "instance" (RDS) or "aurora" (Aurora cluster)
    engine_version: str  # full PostgreSQL version, e.g. "17.6"
    instance_class: str  # RDS spelling, with "db."
    allocated_storage_gb: int  # RDS instance only; Aurora storage grows by itself
    multi_az: bool  # instance: Multi-AZ standby; aurora: one reader in another AZ
    deletion_protection: bool
    removal_policy: str  # what a stack delete does: "snapshot" or "destroy"
    backup_retention_days: int
    # The network: Lambdas reach AWS APIs through VPC endpoints or a NAT gateway.
    egress: str

    @property
    def engine_major(self) -> int:
        return int(self.engine_version.split(".")[0])

    @property
    def instance_type(self) -> str:
        """The instance class as EC2 spells it (`t4g.micro`), for `ec2.InstanceType`."""
        return self.instance_class.removeprefix("db.")


@dataclass(frozen=True)
class ExistingDatabase:
    """A database the stage migrates but does not own: nothing here creates or changes it.

    The Lambdas run in `subnet_ids` of `vpc_id` with `security_group_id`, which must already
    reach the database's port and AWS's APIs (NAT gateway or VPC endpoints: Secrets Manager,
    RDS, CloudFormation, EventBridge, Lambda, S3).
    """

    kind: str  # "instance" (RDS DB instance) or "cluster" (Aurora cluster)
    identifier: str  # DBInstanceIdentifier or DBClusterIdentifier
    endpoint: str  # the writer endpoint's host name
    port: int
    secret_arn: str  # complete ARN of the RDS-style JSON secret (host, username, password...)
    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"


@dataclass(frozen=True)
class StageSettings:
    name: str  # the key under "stages", chosen with `-c stage=NAME`
    kind: str  # "development" or "production": what the safety rules key on
    migration_timeout_seconds: int
    # A DDL statement's wait for a table lock, and how often a revision that timed out on one
    # runs again (MIGRATION_LOCK_TIMEOUT, MIGRATION_LOCK_RETRIES; docs/RUNBOOK.md).
    migration_lock_timeout_seconds: int
    migration_lock_retries: int
    snapshot_before_migrate: bool
    allow_destructive: bool
    auto_migrate: bool
    # false: deploys leave the schema alone (the escape hatch when a migration blocks a release)
    migrate_on_deploy: bool
    # Where to deploy: the AZ (and VPC) lookups for this pair are committed in cdk.context.json.
    account: str
    region: str
    # The database: created by the database stack, or an existing one (no database stack).
    database: NewDatabase | ExistingDatabase
    # Notifications and logs
    alarm_email: str | None
    log_retention_days: int
    # The migration Lambda and its custom resource
    migration_function_timeout_seconds: int
    migration_function_memory_mb: int
    service_timeout_seconds: int
    # The migrations to deploy, relative to the folder of cdk.json (`migrationsPath`), and the
    # constraint naming convention their revisions rely on (`namingConvention`, optional).
    migrations_path: str = DEFAULT_MIGRATIONS_PATH
    naming_convention: Mapping[str, str] | None = None

    @property
    def production(self) -> bool:
        return self.kind == "production"

    @property
    def new_database(self) -> NewDatabase | None:
        return self.database if isinstance(self.database, NewDatabase) else None

    @property
    def existing_database(self) -> ExistingDatabase | None:
        return self.database if isinstance(self.database, ExistingDatabase) else None

    def migrations(self, project_root: Path) -> Path:
        """The migrations folder: `migrationsPath` below the folder of cdk.json."""
        return project_root / self.migrations_path


def file_context(project_root: Path) -> dict[str, Any]:
    """cdk.json's context plus the committed cdk.context.json lookups.

    The CDK CLI passes these itself; reading them here lets `python app.py` synthesize the
    same app without the CLI. Context given with `-c` still wins (the CLI's values are
    applied after these).
    """
    context: dict[str, Any] = dict(json.loads((project_root / "cdk.json").read_text())["context"])
    lookups = project_root / "cdk.context.json"
    if lookups.exists():
        context.update(json.loads(lookups.read_text()))
    return context


def load_stage_settings(context: Mapping[str, Any], stage: str | None) -> StageSettings:
    """The chosen stage's settings; `account`/`region` given with -c override the stage's."""
    stages = context.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise ConfigError("cdk.json context 'stages' is missing or empty")
    name = stage or context.get("defaultStage")
    if not isinstance(name, str) or name not in stages:
        raise ConfigError(
            f"stage {name!r} is not defined in cdk.json context 'stages' "
            f"(defined: {', '.join(sorted(stages))}); choose one with -c stage=NAME"
        )
    raw = stages[name]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"stages.{name} must be an object")
    overrides = {key: context[key] for key in ("account", "region") if context.get(key)}
    return _Reader(name, {**raw, **overrides}).settings()


class _Reader:
    """Reads and checks one stage's keys; every message starts with `stages.NAME.KEY`."""

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        self.name, self.raw = name, raw

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"stages.{self.name}.{key} {problem}")

    def get(self, key: str, kind: type[T]) -> T:
        if key not in self.raw:
            raise self.fail(key, "is missing")
        value = self.raw[key]
        if type(value) is not kind:
            raise self.fail(key, f"must be {kind.__name__}, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def within(self, key: str, low: int, high: int, why: str = "") -> int:
        value = self.get(key, int)
        if not low <= value <= high:
            raise self.fail(key, f"must be {low}..{high}{why}, got {value}")
        return value

    def optional_within(
        self, key: str, default: int, low: int, high: int, why: str = ""
    ) -> int:
        """A whole number that may be left out (stages written before the setting existed)."""
        return default if key not in self.raw else self.within(key, low, high, why)

    def matching(self, key: str, pattern: re.Pattern[str], example: str) -> str:
        value = self.get(key, str)
        if not pattern.match(value):
            raise self.fail(key, f"must look like {example}, got {value!r}")
        return value

    def check(self, key: str, ok: Callable[[], bool], problem: str) -> None:
        if not ok():
            raise self.fail(key, problem)

    def settings(self) -> StageSettings:
        kind = self.choice("kind", STAGE_KINDS)
        production = kind == "production"
        migration_timeout = self.within(
            "migrationTimeoutSeconds", 1, LAMBDA_MAX_TIMEOUT_SECONDS,
            " (a Lambda runs at most 900 s)")
        function_timeout = self.within("migrationFunctionTimeoutSeconds", 60,
                                       LAMBDA_MAX_TIMEOUT_SECONDS)
        lock_timeout = self.optional_within("migrationLockTimeoutSeconds", 5, 1,
                                            migration_timeout,
                                            " (at most migrationTimeoutSeconds)")
        self.check(
            "migrationFunctionTimeoutSeconds",
            lambda: function_timeout >= migration_timeout + FUNCTION_OVERHEAD_SECONDS,
            f"must be at least migrationTimeoutSeconds + {FUNCTION_OVERHEAD_SECONDS} "
            f"({migration_timeout + FUNCTION_OVERHEAD_SECONDS}), or the custom resource never "
            f"starts a migration, got {function_timeout}",
        )
        service_timeout = self.within("serviceTimeoutSeconds", 60, SERVICE_TIMEOUT_MAX_SECONDS,
                                      " (CloudFormation's limit for a custom resource)")
        self.check("serviceTimeoutSeconds", lambda: service_timeout >= function_timeout,
                   f"must be at least migrationFunctionTimeoutSeconds ({function_timeout}), "
                   f"got {service_timeout}")

        account = self.matching("account", _ACCOUNT, "123456789012 (12 digits)")
        region = self.matching("region", _REGION, "eu-west-1")
        database: NewDatabase | ExistingDatabase = (
            self.existing_database(region) if "existingDatabase" in self.raw
            else self.new_database(production))

        alarm_email = self.raw.get("alarmEmail")
        if alarm_email is not None:
            alarm_email = self.matching("alarmEmail", _EMAIL, "ops@example.com (or null)")
        log_days = self.get("logRetentionDays", int)
        self.check("logRetentionDays", lambda: log_days in LOG_RETENTION_DAYS,
                   f"must be one of CloudWatch Logs' periods {LOG_RETENTION_DAYS}, got "
                   f"{log_days}")

        return StageSettings(
            name=self.name,
            kind=kind,
            migration_timeout_seconds=migration_timeout,
            migration_lock_timeout_seconds=lock_timeout,
            migration_lock_retries=self.optional_within("migrationLockRetries", 5, 0, 20),
            snapshot_before_migrate=self.get("snapshotBeforeMigrate", bool),
            allow_destructive=self.get("allowDestructive", bool),
            auto_migrate=self.get("autoMigrate", bool),
            migrate_on_deploy=self.get("migrateOnDeploy", bool),
            account=account,
            region=region,
            database=database,
            alarm_email=alarm_email,
            log_retention_days=log_days,
            migration_function_timeout_seconds=function_timeout,
            migration_function_memory_mb=self.within("migrationFunctionMemoryMb", 256, 10240),
            service_timeout_seconds=service_timeout,
            migrations_path=self.migrations_path(),
            naming_convention=self.naming_convention(),
        )

    def new_database(self, production: bool) -> NewDatabase:
        kind = self.choice("databaseKind", DATABASE_KINDS)
        engine_version = self.matching("engineVersion", _ENGINE_VERSION, "17.6")
        major = int(engine_version.split(".")[0])
        self.check("engineVersion", lambda: major in SUPPORTED_POSTGRES_MAJORS,
                   f"must be a PostgreSQL major in {SUPPORTED_POSTGRES_MAJORS}, got "
                   f"{engine_version!r}")
        instance_class = self.matching("instanceClass", _INSTANCE_CLASS, "db.t4g.micro")
        if kind == "aurora":
            size = instance_class.rsplit(".", 1)[1]
            self.check("instanceClass", lambda: size not in ("micro", "small"),
                       f"{instance_class!r} is too small for Aurora PostgreSQL (use "
                       "db.t4g.medium or larger)")
        storage = self.within("allocatedStorageGb", 20, 65536)
        deletion_protection = self.get("deletionProtection", bool)
        removal_policy = self.choice("removalPolicy", REMOVAL_POLICIES)
        backup_days = self.within("backupRetentionDays", 1, 35)
        if production:
            self.check("deletionProtection", lambda: deletion_protection,
                       "must be true for a production stage")
            self.check("removalPolicy", lambda: removal_policy == "snapshot",
                       "must be snapshot for a production stage")
        return NewDatabase(
            kind=kind,
            engine_version=engine_version,
            instance_class=instance_class,
            allocated_storage_gb=storage,
            multi_az=self.get("multiAz", bool),
            deletion_protection=deletion_protection,
            removal_policy=removal_policy,
            backup_retention_days=backup_days,
            egress=self.choice("egress", EGRESS_MODES),
        )

    def existing_database(self, region: str) -> ExistingDatabase:
        for key in NEW_DATABASE_KEYS:
            if key in self.raw:
                raise self.fail(key, "describes a database this app creates; the stage names "
                                     "an existingDatabase, so nothing creates one: remove it")
        raw = self.raw["existingDatabase"]
        if not isinstance(raw, Mapping):
            raise self.fail("existingDatabase", f"must be an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(EXISTING_DATABASE_KEYS))
        if unknown:
            raise self.fail("existingDatabase", f"has unknown keys {', '.join(unknown)} "
                                                f"(known: {', '.join(EXISTING_DATABASE_KEYS)})")
        reader = _Reader(f"{self.name}.existingDatabase", raw)
        secret_arn = reader.matching(
            "secretArn", _SECRET_ARN,
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:NAME-AbCdEf (the complete "
            "ARN, with the six characters Secrets Manager appends)")
        secret_region = secret_arn.split(":")[3]
        reader.check("secretArn", lambda: secret_region == region,
                     f"must be in the stage's region {region!r} (the Lambdas read it there), "
                     f"got {secret_region!r}")
        subnets = reader.get("subnetIds", list)
        reader.check("subnetIds", lambda: bool(subnets), "must name at least one subnet")
        for subnet in subnets:
            if not (isinstance(subnet, str) and _SUBNET_ID.match(subnet)):
                raise reader.fail("subnetIds", "must hold subnet ids like "
                                  f"subnet-0a1b2c3d4e5f67890, got {subnet!r}")
        reader.check("subnetIds", lambda: len(set(subnets)) == len(subnets),
                     "names a subnet twice")
        port = (DEFAULT_DATABASE_PORT if "port" not in raw
                else reader.within("port", *DATABASE_PORTS))
        return ExistingDatabase(
            kind=reader.choice("kind", EXISTING_DATABASE_KINDS),
            identifier=reader.matching("identifier", _DB_IDENTIFIER,
                                       "orders-db (the RDS identifier)"),
            endpoint=reader.matching(
                "endpoint", _HOSTNAME,
                "orders-db.abcdefghijkl.eu-west-1.rds.amazonaws.com (a host name)"),
            port=port,
            secret_arn=secret_arn,
            vpc_id=reader.matching("vpcId", _VPC_ID, "vpc-0a1b2c3d4e5f67890"),
            subnet_ids=tuple(subnets),
            security_group_id=reader.matching("securityGroupId", _SECURITY_GROUP_ID,
                                              "sg-0a1b2c3d4e5f67890"),
        )

    def migrations_path(self) -> str:
        if "migrationsPath" not in self.raw:
            return DEFAULT_MIGRATIONS_PATH
        path = self.get("migrationsPath", str)
        self.check("migrationsPath", lambda: bool(path.strip())
                   and not PurePosixPath(path).is_absolute() and "\\" not in path,
                   f"must be a folder relative to cdk.json's, with / between names, got "
                   f"{path!r}")
        return path

    def naming_convention(self) -> Mapping[str, str] | None:
        raw = self.raw.get("namingConvention")
        if raw is None:
            return None
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail("namingConvention", "must be an object such as "
                            '{"pk": "pk_%(table_name)s"} (or null), got '
                            f"{json.dumps(raw)}")
        for key, value in raw.items():
            if not (key and isinstance(value, str) and value):
                raise self.fail("namingConvention", "must map names to non-empty template "
                                f"strings, got {key!r}: {json.dumps(value)}")
        return MappingProxyType(dict(raw))
