"""Each stage synthesized once per test session; variants (Aurora, NAT) without bundling."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# jsii warns on every start that Node 20 is past its end of life; the suite does not care.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE", "1")

from cdk_app import bundling
from cdk_app.config import file_context
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR, Synth, synthesize

# A bundle this old that the current sources do not use is deleted.
STALE_BUNDLE_SECONDS = 3 * 3600
# Variants of the production stage that the committed cdk.json does not use but a user may
# choose: each must synthesize cdk-nag clean and cfn-lint clean too.
VARIANTS = {
    "prod-aurora": ("prod", {"databaseKind": "aurora", "instanceClass": "db.r7g.large"}),
    "prod-nat": ("prod", {"egress": "nat-gateway", "alarmEmail": "ops@example.com",
                          "migrateOnDeploy": False}),
    "dev-aurora": ("dev", {"databaseKind": "aurora", "instanceClass": "db.t4g.medium"}),
    # the existing-database stage with an Aurora cluster instead of an instance
    "existing-cluster": ("existing", {"existingDatabase": {
        **file_context(REPO_ROOT)["stages"]["existing"]["existingDatabase"],
        "kind": "cluster", "identifier": "orders-cluster",
        "endpoint": "orders-cluster.cluster-cx1a2b3c4d5e.eu-west-1.rds.amazonaws.com"}}),
}


@pytest.fixture(scope="session")
def dev() -> Synth:
    synth = synthesize("dev", outdir=SHARED_OUTDIR)
    # Bundles of earlier sources are never used again: keep the current ones (the migration
    # bundle and both application bundles, with and without auto-migrate), and any built in
    # the last hours (another session on this checkout may be using one).
    specs = (bundling.MIGRATION_BUNDLE, bundling.application_bundle(auto_migrate=True),
             bundling.application_bundle(auto_migrate=False))
    current = {f"asset.{bundling.bundle_fingerprint(REPO_ROOT, spec)}" for spec in specs}
    current |= {synth.bundle_dir(function).name for function in ("Migration", "SampleApp")}
    for stale in SHARED_OUTDIR.glob("asset.*"):
        if (stale.is_dir() and stale.name not in current
                and not stale.name.endswith("-building")
                and time.time() - stale.stat().st_mtime > STALE_BUNDLE_SECONDS):
            shutil.rmtree(stale, ignore_errors=True)
    return synth


@pytest.fixture(scope="session")
def prod() -> Synth:
    return synthesize("prod", outdir=SHARED_OUTDIR)


@pytest.fixture(scope="session")
def existing() -> Synth:
    """The stage that names an existing database (cdk.json `existing`): its VPC lookup comes
    from the committed cdk.context.json, so this synth makes no AWS call."""
    return synthesize("existing", outdir=SHARED_OUTDIR)


@pytest.fixture(scope="session")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    return {
        name: synthesize(stage, changes=changes, bundling=False,
                         outdir=tmp_path_factory.mktemp(name))
        for name, (stage, changes) in VARIANTS.items()
    }


@pytest.fixture(scope="session")
def all_synths(dev: Synth, prod: Synth, existing: Synth,
               variants: dict[str, Synth]) -> dict[str, Synth]:
    return {"dev": dev, "prod": prod, "existing": existing, **variants}


@pytest.fixture
def aws_free_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment for the CDK CLI with no way to reach AWS."""
    yield {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE": "1",
    }
