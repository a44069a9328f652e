"""Sample application Lambda: after the migration, with the auto-migrate settings."""

from __future__ import annotations

from typing import Any

from cdk_app.constructs.migration_custom_resource import LOGICAL_ID
from tests.cdk_app.iam import by_action, statements_of_role
from tests.cdk_app.support import Synth


def function(synth: Synth) -> dict[str, Any]:
    return next(value for key, value in
                synth.resources("application", "AWS::Lambda::Function").items()
                if key.startswith("SampleAppFunction"))


def test_is_deployed_after_the_migration(dev: Synth) -> None:
    assert LOGICAL_ID in function(dev)["DependsOn"]


def test_auto_migrate_settings_per_stage(dev: Synth, prod: Synth) -> None:
    dev_env = function(dev)["Properties"]["Environment"]["Variables"]
    prod_env = function(prod)["Properties"]["Environment"]["Variables"]
    assert (dev_env["AUTO_MIGRATE"], prod_env["AUTO_MIGRATE"]) == ("true", "false")
    assert (dev_env["STAGE"], prod_env["STAGE"]) == ("development", "production")
    assert prod_env["ALLOW_DESTRUCTIVE"] == "false"
    # an auto-migrating container waits for table locks as the deploy does
    assert (dev_env["MIGRATION_LOCK_TIMEOUT"], dev_env["MIGRATION_LOCK_RETRIES"]) == ("5", "5")
    assert "SecretAttachment" in dev_env["DATABASE_SECRET_ARN"]["Fn::ImportValue"]
    # An auto-migrating first request may run a migration: room for MIGRATION_TIMEOUT.
    assert function(dev)["Properties"]["Timeout"] > 300
    assert function(prod)["Properties"]["Timeout"] == 30


def test_has_its_own_bundle(dev: Synth, prod: Synth) -> None:
    properties = function(dev)["Properties"]
    assert properties["Handler"] == "sample_app.handler.handler"
    assert properties["Runtime"] == "python3.12"
    # not the migration function's (what it holds: tests/cdk_app/test_bundle_contents.py)
    for synth in (dev, prod):
        keys = {value["Properties"]["Code"]["S3Key"] for value in
                synth.resources("application", "AWS::Lambda::Function").values()}
        assert len(keys) == 2
    # an auto-migrating application needs the gate, a check-only one does not
    assert function(dev)["Properties"]["Code"] != function(prod)["Properties"]["Code"]


def test_reads_only_the_secret(dev: Synth) -> None:
    granted = by_action(statements_of_role(dev, "SampleAppRole"))
    assert not any(action.startswith(("rds:", "events:", "lambda:", "cloudformation:"))
                   for action in granted)
    assert len(granted["secretsmanager:GetSecretValue"]) == 1
