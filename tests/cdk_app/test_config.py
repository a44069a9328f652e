"""Stage settings from cdk.json: both stages load, a bad setting is named."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cdk_app.config import ConfigError, load_stage_settings
from tests.alembic.support import REPO_ROOT

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
    ],
)
def test_a_bad_setting_is_named(change: dict[str, Any], message: str) -> None:
    context = json.loads(json.dumps(CONTEXT))
    context["stages"]["prod"].update(change)
    with pytest.raises(ConfigError, match=message):
        load_stage_settings(context, "prod")


def test_missing_setting_and_unknown_stage_are_named() -> None:
    context = json.loads(json.dumps(CONTEXT))
    del context["stages"]["prod"]["autoMigrate"]
    with pytest.raises(ConfigError, match=r"stages\.prod\.autoMigrate is missing"):
        load_stage_settings(context, "prod")
    with pytest.raises(ConfigError, match="stage 'qa' is not defined"):
        load_stage_settings(CONTEXT, "qa")


def test_app_runs_with_a_stage_and_fails_synth_on_an_unknown_one(tmp_path) -> None:
    env = {"JSII_SILENCE_WARNING_DEPRECATED_NODE": "1", "CDK_OUTDIR": str(tmp_path),
           "PATH": "/usr/local/bin:/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    bad_env = {**env, "CDK_CONTEXT_JSON": json.dumps({**CONTEXT, "stage": "qa"})}
    bad = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=bad_env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0
    assert "stage 'qa' is not defined" in bad.stderr
