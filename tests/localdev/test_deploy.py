"""`make deploy-local` end to end: the CLI as a process, the function from the synthesized asset.

One local environment (its own folder, PostgreSQL port and state file, never the developer's
`.local`) serves the module's scenarios in order, as successive deploys of one stack would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from localdev import deploy as local_deploy
from localdev.postgres import free_port
from tests.alembic.support import ADD_DISPLAY_NAME, HEAD, REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR, synthesize
from tests.migration_resource.support import execute, relations, version_rows

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE", "1")


@dataclass(frozen=True)
class LocalDeploy:
    local_dir: Path
    port: int

    def run(self, command: str = "deploy") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "localdev.deploy", command, "--stage", "dev",
             "--cdk-out", str(SHARED_OUTDIR), "--local-dir", str(self.local_dir),
             "--postgres-port", str(self.port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )

    @property
    def state(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.local_dir / "deploy-state.json").read_text())
        return loaded

    def engine(self) -> sa.Engine:
        return sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/app", poolclass=sa.NullPool)


@pytest.fixture(scope="module")
def local() -> Iterator[LocalDeploy]:
    # The bundle holds CPython 3.12 wheels: without a 3.12 the local deploy cannot run the
    # function, and that must fail loudly rather than pass unnoticed.
    assert os.environ.get("LAMBDA_PYTHON") or local_deploy.KNOWN_PYTHON_312.exists(), (
        "no Python 3.12 to run the Lambda bundle: set LAMBDA_PYTHON to a python3.12"
    )
    synthesize("dev", outdir=SHARED_OUTDIR)  # once for the module; the bundle is reused
    # pytest's tmp folders are private to us; the postgres user must reach the data folder
    folder = Path(tempfile.mkdtemp(prefix="deploy-local-"))
    folder.chmod(0o755)
    environment = LocalDeploy(local_dir=folder, port=free_port())
    try:
        yield environment
    finally:
        environment.run("destroy")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def first(local: LocalDeploy) -> subprocess.CompletedProcess[str]:
    return local.run()


def test_fresh_database_is_created(local: LocalDeploy,
                                   first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert any("CREATE_IN_PROGRESS" in line and "DatabaseMigration" in line for line in lines)
    assert any("CREATE_COMPLETE" in line and "Custom::DatabaseMigration" in line
               for line in lines)
    assert "State: empty" in lines
    assert f"Revision: base → {HEAD} (6 applied)" in lines
    engine = local.engine()
    try:
        assert version_rows(engine) == [HEAD]
    finally:
        engine.dispose()
    # the function ran from the synthesized asset, not from the repository
    log = (local.local_dir / "deploy-local.log").read_text()
    assert "START RequestId" in log and "MigrationsApplied" in log


def test_deploying_again_changes_nothing(local: LocalDeploy,
                                         first: subprocess.CompletedProcess[str]) -> None:
    again = local.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip() == "DbMigrations-dev-Application (local): no changes"


def test_unknown_revision_fails_cleanly_and_rolls_back(
        local: LocalDeploy, first: subprocess.CompletedProcess[str]) -> None:
    # GIVEN a database at a revision no script defines, and a last deploy with other migrations
    engine = local.engine()
    try:
        execute(engine, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
        before = relations(engine)
        state = local.state
        properties = state["properties"]
        assert isinstance(properties, dict)
        properties["MigrationsHash"] = "from-an-older-checkout"
        (local.local_dir / "deploy-state.json").write_text(json.dumps(state))
        # WHEN deploying
        result = local.run()
        # THEN the Update fails with the short reason, and the rollback completes
        assert result.returncode == 1, result.stdout + result.stderr
        statuses = [line.split(" | ")[2].strip() for line in result.stdout.splitlines()
                    if line.count(" | ") >= 4]
        assert statuses == ["UPDATE_IN_PROGRESS", "UPDATE_FAILED", "UPDATE_ROLLBACK_IN_PROGRESS",
                            "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]
        failed = next(line for line in result.stdout.splitlines() if "UPDATE_FAILED" in line)
        assert ("DatabaseMigration inconsistent: alembic_version holds 'f00dfeedbeef' which no "
                "migration script defines; nothing was changed.") in failed
        # the database is untouched, and the state still holds the last good properties
        assert relations(engine) == before
        assert version_rows(engine) == ["f00dfeedbeef"]
        assert local.state["properties"] == properties
        log = (local.local_dir / "deploy-local.log").read_text()
        assert "Stack rollback in progress: the database is left as it is" in log
    finally:
        engine.dispose()


def test_destroy_then_deploy_starts_from_an_empty_database(
        local: LocalDeploy, first: subprocess.CompletedProcess[str]) -> None:
    destroyed = local.run("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not (local.local_dir / "postgres").exists()
    assert not (local.local_dir / "deploy-state.json").exists()
    again = local.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "State: empty" in again.stdout.splitlines()
    assert "CREATE_COMPLETE" in again.stdout


def test_prod_refuses_a_destructive_revision_and_rolls_the_create_back(
        local: LocalDeploy) -> None:
    # GIVEN a prod database two revisions behind, the next ones dropping a column
    synthesize("prod", outdir=SHARED_OUTDIR)
    folder = Path(tempfile.mkdtemp(prefix="deploy-local-prod-"))
    folder.chmod(0o755)
    prod = LocalDeploy(local_dir=folder, port=free_port())
    try:
        local_deploy.start_database(local_deploy.LocalEnvironment(local_dir=folder,
                                                                  postgres_port=prod.port))
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", ADD_DISPLAY_NAME],
                       cwd=REPO_ROOT, check=True, capture_output=True, timeout=120,
                       env={**os.environ, "DATABASE_URL": prod.engine().url.render_as_string(
                           hide_password=False)})
        # WHEN deploying the prod stage
        result = subprocess.run(
            [sys.executable, "-m", "localdev.deploy", "deploy", "--stage", "prod",
             "--cdk-out", str(SHARED_OUTDIR), "--local-dir", str(folder),
             "--postgres-port", str(prod.port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
        # THEN the Create is refused with the gate's reason and rolled back; nothing changed
        assert result.returncode == 1, result.stdout + result.stderr
        failed = next(line for line in result.stdout.splitlines() if "CREATE_FAILED" in line)
        assert "drop_column blocked in production" in failed
        assert "ROLLBACK_COMPLETE" in result.stdout
        engine = prod.engine()
        try:
            assert version_rows(engine) == [ADD_DISPLAY_NAME]
        finally:
            engine.dispose()
    finally:
        prod.run("destroy")
        shutil.rmtree(folder, ignore_errors=True)
