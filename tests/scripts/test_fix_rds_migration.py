"""fix_rds_migration.py: the guide's emergency fix for tables that have no migration history."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import alembic.command
import pytest
import sqlalchemy as sa

from migration_resource.revisions import alembic_config
from tests.alembic.support import HEAD, INDEX_TASKS, REPO_ROOT
from tests.migration_resource.support import execute, relations, version_rows
from tests.scripts.test_remote_admin_lambda import FUNCTION, migration_function, run_cli

CLI = REPO_ROOT / "scripts" / "fix_rds_migration.py"


@pytest.fixture
def tables_without_history(db: sa.Engine) -> list[str]:
    """The schema of INDEX_TASKS, built by Alembic, then its history dropped."""
    config = alembic_config(REPO_ROOT / "alembic")
    with db.begin() as connection:
        config.attributes["connection"] = connection
        alembic.command.upgrade(config, INDEX_TASKS)
    execute(db, "DROP TABLE alembic_version")
    return relations(db)


def fix(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True,
                          env=environment, cwd="/", timeout=180, check=False)


def test_without_confirm_shows_what_it_would_stamp_and_changes_nothing(
    database_url: str, db: sa.Engine, tables_without_history: list[str]
) -> None:
    result = fix(database_url=database_url)
    assert result.returncode == 2
    assert "Migration state: tables_without_migration_history" in result.stdout
    assert f"would stamp {INDEX_TASKS}" in result.stdout
    assert "fix_rds_migration.py: nothing was changed: add --confirm" in result.stderr
    assert relations(db) == tables_without_history
    assert version_rows(db) == []

    as_json = fix("--json", database_url=database_url)
    assert as_json.returncode == 2
    answers = json.loads(as_json.stdout)
    assert answers["status"]["state"] == "tables_without_migration_history"
    assert answers["fix_history"]["operation"] == "dry_run"
    assert answers["fix_history"]["ok"] is True
    assert version_rows(db) == []


def test_with_confirm_stamps_the_verified_revision_and_migrates(
    database_url: str, db: sa.Engine, tables_without_history: list[str]
) -> None:
    result = fix("--confirm", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "Migration state: tables_without_migration_history" in result.stdout
    assert "Verified baseline: " in result.stderr
    assert f"Revision: {INDEX_TASKS} → {HEAD}" in result.stdout
    assert version_rows(db) == [HEAD]

    # nothing left to fix: a plain run says so and succeeds
    again = fix(database_url=database_url)
    assert again.returncode == 0, again.stderr
    assert "Migration state: up_to_date" in again.stdout


def test_refused_when_the_tables_match_no_revision(
    database_url: str, db: sa.Engine, tables_without_history: list[str]
) -> None:
    execute(db, "ALTER TABLE users ADD COLUMN nickname text")
    result = fix("--confirm", database_url=database_url)
    assert result.returncode == 1
    assert "fix_rds_migration.py: inconsistent:" in result.stderr
    assert version_rows(db) == []


def test_through_the_lambda(
    database_url: str, db: sa.Engine, tables_without_history: list[str]
) -> None:
    with migration_function(database_url) as endpoint:
        result = run_cli("fix_rds_migration.py", "--function-name", FUNCTION, "--confirm",
                         lambda_endpoint=endpoint)
    assert result.returncode == 0, result.stderr
    assert f"Invoking {FUNCTION} (status)..." in result.stderr
    assert f"Invoking {FUNCTION} (run_migrations)..." in result.stderr
    assert version_rows(db) == [HEAD]
