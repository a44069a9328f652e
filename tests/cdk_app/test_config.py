"""Stage settings from cdk.json: both stages load, a bad setting is named."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cdk_app.config import ConfigError, load_stage_settings
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR

CONTEXT: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def test_both_stages_load_from_cdk_json() -> None:
    dev = load_stage_settings(CONTEXT, None)
    prod = load_stage_settings(CONTEXT, "prod")
    assert (dev.name, dev.kind) == ("dev", "development")
    assert (prod.name, prod.kind) == ("prod", "production")
    assert prod.snapshot_before_migrate and not prod.allow_destructive
    assert dev.migration_timeout_seconds == 300  # the guide's MIGRATION_TIMEOUT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"migrationTimeoutSeconds": "300"}, "stages.prod.migrationTimeoutSeconds must be int"),
        ({"migrationTimeoutSeconds": 0}, "stages.prod.migrationTimeoutSeconds must be 1..900"),
        ({"kind": "staging"}, "stages.prod.kind must be one of"),
        ({"allowDestructive": 1}, "stages.prod.allowDestructive must be bool"),
        ({"migrateOnDeploy": "false"}, "stages.prod.migrateOnDeploy must be bool, got str"),
        ({"migrateOnDeploy": None}, "stages.prod.migrateOnDeploy must be bool, got NoneType"),
        ({"databaseKind": "mysql"}, "stages.prod.databaseKind must be one of instance, aurora"),
        ({"engineVersion": "17"}, r"stages.prod.engineVersion must look like 17.6"),
        ({"engineVersion": "12.20"}, r"stages.prod.engineVersion must be a PostgreSQL major"),
        ({"instanceClass": "t4g.micro"}, "stages.prod.instanceClass must look like db.t4g"),
        ({"databaseKind": "aurora", "instanceClass": "db.t4g.micro"},
         "stages.prod.instanceClass 'db.t4g.micro' is too small for Aurora"),
        ({"allocatedStorageGb": 5}, r"stages.prod.allocatedStorageGb must be 20..65536"),
        ({"multiAz": "yes"}, "stages.prod.multiAz must be bool"),
        ({"deletionProtection": False},
         "stages.prod.deletionProtection must be true for a production stage"),
        ({"removalPolicy": "destroy"},
         "stages.prod.removalPolicy must be snapshot for a production stage"),
        ({"removalPolicy": "retain"}, "stages.prod.removalPolicy must be one of"),
        ({"backupRetentionDays": 0}, r"stages.prod.backupRetentionDays must be 1..35"),
        ({"egress": "internet"}, "stages.prod.egress must be one of vpc-endpoints, nat-gateway"),
        ({"alarmEmail": "ops"}, "stages.prod.alarmEmail must look like ops@example.com"),
        ({"logRetentionDays": 10}, "stages.prod.logRetentionDays must be one of"),
        ({"migrationFunctionTimeoutSeconds": 310},
         r"stages.prod.migrationFunctionTimeoutSeconds must be at least "
         r"migrationTimeoutSeconds \+ 30 \(330\)"),
        ({"migrationFunctionMemoryMb": 128}, "stages.prod.migrationFunctionMemoryMb must be"),
        ({"serviceTimeoutSeconds": 7200}, r"stages.prod.serviceTimeoutSeconds must be 60..3600"),
        ({"serviceTimeoutSeconds": 600},
         "stages.prod.serviceTimeoutSeconds must be at least migrationFunctionTimeoutSeconds"),
        ({"migrationLockTimeoutSeconds": 400},
         r"stages.prod.migrationLockTimeoutSeconds must be 1..300 \(at most "
         r"migrationTimeoutSeconds\)"),
        ({"migrationLockRetries": -1}, r"stages.prod.migrationLockRetries must be 0..20"),
        ({"account": "1234"}, "stages.prod.account must look like 123456789012"),
        ({"region": "Europe"}, "stages.prod.region must look like eu-west-1"),
    ],
)
def test_a_bad_setting_is_named(change: dict[str, Any], message: str) -> None:
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["prod"].update(change)
    with pytest.raises(ConfigError, match=message):
        load_stage_settings(context, "prod")


def test_lock_settings_default_when_a_stage_predates_them() -> None:
    context = json.loads(json.dumps(CONTEXT))
    for key in ("migrationLockTimeoutSeconds", "migrationLockRetries"):
        context["stages"]["prod"].pop(key, None)
    prod = load_stage_settings(context, "prod")
    assert (prod.migration_lock_timeout_seconds, prod.migration_lock_retries) == (5, 5)


def test_every_setting_of_both_stages(tmp_path) -> None:
    dev = load_stage_settings(CONTEXT, "dev")
    prod = load_stage_settings(CONTEXT, "prod")
    assert dev.new_database is not None and prod.new_database is not None
    assert dev.existing_database is None
    dev_db, prod_db = dev.new_database, prod.new_database
    assert (dev_db.kind, dev_db.engine_version, dev_db.engine_major) == ("instance", "17.6", 17)
    assert (dev_db.instance_class, dev_db.instance_type) == ("db.t4g.micro", "t4g.micro")
    assert (dev_db.egress, prod_db.egress) == ("vpc-endpoints", "vpc-endpoints")
    assert not dev_db.deletion_protection and dev_db.removal_policy == "destroy"
    assert prod_db.deletion_protection and prod_db.removal_policy == "snapshot"
    assert prod_db.multi_az
    assert prod.production and not dev.production
    assert dev.auto_migrate and not prod.auto_migrate
    assert dev.migrate_on_deploy and prod.migrate_on_deploy
    assert dev.alarm_email is None
    assert prod.migration_function_timeout_seconds >= prod.migration_timeout_seconds + 30
    assert prod.service_timeout_seconds == 3600
    # the repository's own migrations; its models' naming convention (composition.py)
    assert (dev.migrations_path, dev.naming_convention) == ("alembic", None)
    assert dev.migrations(REPO_ROOT) == REPO_ROOT / "alembic"


def test_alarm_email_is_optional_and_account_region_can_come_from_the_cli() -> None:
    context = json.loads(json.dumps(CONTEXT))
    del context["stages"]["dev"]["alarmEmail"]
    assert load_stage_settings(context, "dev").alarm_email is None
    context["stages"]["dev"]["alarmEmail"] = "ops@example.com"
    assert load_stage_settings(context, "dev").alarm_email == "ops@example.com"
    # `-c account=... -c region=...` override the stage's values
    overridden = load_stage_settings({**context, "account": "210987654321",
                                      "region": "us-east-2"}, "dev")
    assert (overridden.account, overridden.region) == ("210987654321", "us-east-2")


def test_missing_setting_and_unknown_stage_are_named() -> None:
    context = json.loads(json.dumps(CONTEXT))
    del context["stages"]["prod"]["autoMigrate"]
    with pytest.raises(ConfigError, match=r"stages\.prod\.autoMigrate is missing"):
        load_stage_settings(context, "prod")
    context = json.loads(json.dumps(CONTEXT))
    del context["stages"]["prod"]["migrateOnDeploy"]
    with pytest.raises(ConfigError, match=r"stages\.prod\.migrateOnDeploy is missing"):
        load_stage_settings(context, "prod")
    with pytest.raises(ConfigError, match="stage 'qa' is not defined"):
        load_stage_settings(CONTEXT, "qa")


def test_app_runs_with_a_stage_and_fails_synth_on_an_unknown_one(tmp_path) -> None:
    # The shared test outdir: its cached bundle spares this synth the pip install.
    env = {"JSII_SILENCE_WARNING_DEPRECATED_NODE": "1", "CDK_OUTDIR": str(SHARED_OUTDIR),
           "PATH": "/usr/local/bin:/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    bad_env = {**env, "CDK_CONTEXT_JSON": json.dumps({**CONTEXT, "stage": "qa"})}
    bad = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=bad_env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0
    assert "stage 'qa' is not defined" in bad.stderr


@pytest.mark.parametrize(("key", "value", "message"), [
    ("instanceClass", "t4g.micro", "stages.prod.instanceClass must look like db.t4g.micro"),
    ("migrateOnDeploy", "no", "stages.prod.migrateOnDeploy must be bool, got str"),
])
def test_a_bad_setting_fails_synth_naming_it(key: str, value: object, message: str) -> None:
    # GIVEN cdk.json's context with one malformed setting WHEN app.py synthesizes
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["prod"][key] = value
    env = {"JSII_SILENCE_WARNING_DEPRECATED_NODE": "1", "PATH": "/usr/local/bin:/usr/bin:/bin",
           "CDK_CONTEXT_JSON": json.dumps({**context, "stage": "prod"})}
    bad = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    # THEN it fails before building anything, and the message names the setting
    assert bad.returncode != 0
    assert f"ConfigError: {message}" in bad.stderr


def existing_context(**changes: Any) -> dict[str, Any]:
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["existing"]["existingDatabase"].update(changes)
    return context


def test_the_existing_database_stage_loads_without_database_settings() -> None:
    settings = load_stage_settings(CONTEXT, "existing")
    assert settings.new_database is None
    existing = settings.existing_database
    assert existing is not None
    assert (existing.kind, existing.identifier, existing.port) == ("instance", "orders-db", 5432)
    assert existing.secret_arn.startswith("arn:aws:secretsmanager:eu-west-1:")
    assert existing.subnet_ids == ("subnet-0a1b2c3d4e5f60011", "subnet-0a1b2c3d4e5f60012")
    assert (existing.vpc_id, existing.security_group_id) == (
        "vpc-0a1b2c3d4e5f67890", "sg-0a1b2c3d4e5f67890")
    assert not existing.cluster
    context = existing_context(kind="cluster")
    del context["stages"]["existing"]["existingDatabase"]["port"]
    cluster = load_stage_settings(context, "existing").existing_database
    assert cluster is not None and cluster.cluster and cluster.port == 5432


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "aurora"}, r"stages.existing.existingDatabase.kind must be one of instance, "
                         r"cluster, got 'aurora'"),
    ({"identifier": "1-db"}, "stages.existing.existingDatabase.identifier must look like"),
    ({"endpoint": "not a host"}, "stages.existing.existingDatabase.endpoint must look like"),
    ({"port": 80}, r"stages.existing.existingDatabase.port must be 1150..65535"),
    ({"secretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders-db"},
     "stages.existing.existingDatabase.secretArn must look like .*the complete ARN"),
    ({"secretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:orders-db-Ab12Cd"},
     "stages.existing.existingDatabase.secretArn must be in the stage's region 'eu-west-1'"),
    ({"vpcId": "vpc-1"}, "stages.existing.existingDatabase.vpcId must look like vpc-"),
    ({"subnetIds": []}, "stages.existing.existingDatabase.subnetIds must name at least one"),
    ({"subnetIds": "subnet-0a1b2c3d4e5f60011"},
     "stages.existing.existingDatabase.subnetIds must be list, got str"),
    ({"subnetIds": ["subnet-1"]}, "stages.existing.existingDatabase.subnetIds must hold"),
    ({"subnetIds": ["subnet-0a1b2c3d4e5f60011"] * 2}, "subnetIds names a subnet twice"),
    ({"securityGroupId": "sg-x"}, "stages.existing.existingDatabase.securityGroupId must"),
    ({"securityGroup": "sg-0a1b2c3d4e5f67890"},
     "stages.existing.existingDatabase has unknown keys securityGroup"),
])
def test_a_bad_existing_database_setting_is_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stage_settings(existing_context(**change), "existing")


def test_an_existing_database_refuses_the_settings_of_a_new_one() -> None:
    # GIVEN an existing-database stage that also says how to create a database
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["existing"]["instanceClass"] = "db.t4g.micro"
    # THEN nobody is led to believe it changes their database
    with pytest.raises(ConfigError, match=r"stages\.existing\.instanceClass describes a "
                                          r"database this app creates"):
        load_stage_settings(context, "existing")
    context["stages"]["existing"]["existingDatabase"] = "orders-db"
    del context["stages"]["existing"]["instanceClass"]
    with pytest.raises(ConfigError, match="existingDatabase must be an object, got str"):
        load_stage_settings(context, "existing")


@pytest.mark.parametrize(("change", "message"), [
    ({"migrationsPath": "/srv/migrations"}, "stages.prod.migrationsPath must be a folder "
                                            "relative to cdk.json's"),
    ({"migrationsPath": ""}, "stages.prod.migrationsPath must be a folder"),
    ({"migrationsPath": 3}, "stages.prod.migrationsPath must be str"),
    ({"namingConvention": ["pk"]}, "stages.prod.namingConvention must be an object"),
    ({"namingConvention": {}}, "stages.prod.namingConvention must be an object"),
    ({"namingConvention": {"pk": 1}}, "stages.prod.namingConvention must map names to"),
])
def test_a_bad_migrations_setting_is_named(change: dict[str, Any], message: str) -> None:
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["prod"].update(change)
    with pytest.raises(ConfigError, match=message):
        load_stage_settings(context, "prod")


def test_migrations_path_and_naming_convention_are_read() -> None:
    context = json.loads(json.dumps(CONTEXT))
    for key in ("migrationsPath", "namingConvention"):
        context["stages"]["prod"].pop(key)
    prod = load_stage_settings(context, "prod")  # a stage written before the settings
    assert (prod.migrations_path, prod.naming_convention) == ("alembic", None)
    context["stages"]["prod"].update(migrationsPath="services/orders/migrations",
                                     namingConvention={"pk": "pk_%(table_name)s"})
    prod = load_stage_settings(context, "prod")
    assert prod.migrations(REPO_ROOT) == REPO_ROOT / "services" / "orders" / "migrations"
    assert dict(prod.naming_convention or {}) == {"pk": "pk_%(table_name)s"}
