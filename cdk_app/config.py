"""Stage settings: read once from cdk.json context into a frozen dataclass.

Configuration flows one way: cdk.json → app.py → stacks → constructs. Constructs never read
the environment. A missing or malformed setting fails synth with a message naming it
(`stages.prod.instanceClass must look like db.t4g.micro, got 't4g.micro'`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from migration_resource.custom_resource import TIME_MARGIN_SECONDS

STAGE_KINDS = ("development", "production")
DATABASE_KINDS = ("instance", "aurora")
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
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting in cdk.json is missing or malformed; the message names it."""


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
    # Where to deploy: the AZ lookups for this pair are committed in cdk.context.json.
    account: str
    region: str
    # The database
    database_kind: str  # "instance" (RDS) or "aurora" (Aurora cluster)
    engine_version: str  # full PostgreSQL version, e.g. "17.6"
    instance_class: str  # RDS spelling, with "db."
    allocated_storage_gb: int  # RDS instance only; Aurora storage grows by itself
    multi_az: bool  # instance: Multi-AZ standby; aurora: one reader in another AZ
    deletion_protection: bool
    removal_policy: str  # what a stack delete does: "snapshot" or "destroy"
    backup_retention_days: int
    # The network: Lambdas reach AWS APIs through VPC endpoints or a NAT gateway.
    egress: str
    # Notifications and logs
    alarm_email: str | None
    log_retention_days: int
    # The migration Lambda and its custom resource
    migration_function_timeout_seconds: int
    migration_function_memory_mb: int
    service_timeout_seconds: int

    @property
    def production(self) -> bool:
        return self.kind == "production"

    @property
    def engine_major(self) -> int:
        return int(self.engine_version.split(".")[0])

    @property
    def instance_type(self) -> str:
        """The instance class as EC2 spells it (`t4g.micro`), for `ec2.InstanceType`."""
        return self.instance_class.removeprefix("db.")


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

        database_kind = self.choice("databaseKind", DATABASE_KINDS)
        engine_version = self.matching("engineVersion", _ENGINE_VERSION, "17.6")
        major = int(engine_version.split(".")[0])
        self.check("engineVersion", lambda: major in SUPPORTED_POSTGRES_MAJORS,
                   f"must be a PostgreSQL major in {SUPPORTED_POSTGRES_MAJORS}, got "
                   f"{engine_version!r}")
        instance_class = self.matching("instanceClass", _INSTANCE_CLASS, "db.t4g.micro")
        if database_kind == "aurora":
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
            account=self.matching("account", _ACCOUNT, "123456789012 (12 digits)"),
            region=self.matching("region", _REGION, "eu-west-1"),
            database_kind=database_kind,
            engine_version=engine_version,
            instance_class=instance_class,
            allocated_storage_gb=storage,
            multi_az=self.get("multiAz", bool),
            deletion_protection=deletion_protection,
            removal_policy=removal_policy,
            backup_retention_days=backup_days,
            egress=self.choice("egress", EGRESS_MODES),
            alarm_email=alarm_email,
            log_retention_days=log_days,
            migration_function_timeout_seconds=function_timeout,
            migration_function_memory_mb=self.within("migrationFunctionMemoryMb", 256, 10240),
            service_timeout_seconds=service_timeout,
        )
