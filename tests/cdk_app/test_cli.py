"""The pinned CDK CLI synthesizes offline: `npm ci`, then `npx cdk synth` (no credentials)."""

from __future__ import annotations

import json
import subprocess

from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"


def test_package_json_pins_the_cli_to_an_exact_2x_version() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    version = package["devDependencies"]["aws-cdk"]
    assert version.startswith("2.") and version.replace(".", "").isdigit()
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == version


def test_npx_cdk_synth_works_offline(aws_free_env: dict[str, str]) -> None:
    assert CDK.exists(), "run `npm ci` first (make test does)"
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--no-notices", "--quiet",
         "-c", "stage=prod", "-o", str(SHARED_OUTDIR)],
        cwd=REPO_ROOT, env=aws_free_env, capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((SHARED_OUTDIR / "manifest.json").read_text())
    assert {"DbMigrations-prod-Database", "DbMigrations-prod-Application"} <= set(
        manifest["artifacts"])
