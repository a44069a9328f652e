"""Dry run: the plan and its SQL, and a database left exactly as it was."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from migration_resource.engine import MigrationEngine
from migration_resource.online import PROGRESS_TABLE
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    BACKFILL_DISPLAY_NAME,
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    INDEX_TASKS,
    ORDER,
)
from tests.migration_resource.support import execute, relations, version_rows


def database_fingerprint(db: sa.Engine) -> tuple[object, ...]:
    """Relations, version rows and the database's committed-write counters."""
    with db.connect() as conn:
        stats = conn.exec_driver_sql(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        ).scalar()
    return (tuple(relations(db)), tuple(version_rows(db)), stats)


def test_dry_run_on_an_empty_database_creates_nothing(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    outcome = engine.dry_run()
    assert outcome.ok
    assert outcome.classification.state == "empty"
    assert outcome.sql is not None
    assert list(outcome.sql) == list(ORDER)
    assert "CREATE TABLE users" in outcome.sql[CREATE_TABLES]
    assert "CREATE TABLE alembic_version" in outcome.sql[CREATE_TABLES]
    assert "UPDATE users SET display_name" in outcome.sql[BACKFILL_DISPLAY_NAME]
    assert "CREATE INDEX ix_tasks_project_id_status" in outcome.sql[INDEX_TASKS]
    assert "ck_tasks_status_valid" in outcome.sql[CHECK_TASK_STATUS]
    assert outcome.message.endswith("nothing was changed")
    # the guarantee: no version table, no relation at all
    assert relations(db) == []


def test_dry_run_with_pending_revisions_shows_only_theirs_and_changes_nothing(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'A')")
    before = database_fingerprint(db)
    outcome = engine.dry_run()
    assert outcome.sql is not None
    assert list(outcome.sql) == list(ORDER[ORDER.index(BACKFILL_DISPLAY_NAME):])
    assert f"UPDATE alembic_version SET version_num='{BACKFILL_DISPLAY_NAME}'" in (
        outcome.sql[BACKFILL_DISPLAY_NAME]
    )
    # no table is created but the batched backfill's progress table (dropped when it is done)
    created = {line for sql in outcome.sql.values() for line in sql.splitlines()
               if "CREATE TABLE" in line}
    assert created == {f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} ("}
    # each revision's SQL is its own transaction, as it will run
    assert all(sql.startswith("BEGIN;") and sql.endswith("COMMIT;") for sql in outcome.sql.values())
    assert database_fingerprint(db) == before
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT display_name FROM users").scalar() is None


def test_dry_run_of_a_refused_state_reports_the_refusal(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    engine.migrate()
    execute(db, "UPDATE alembic_version SET version_num = 'f00d'")
    outcome = engine.dry_run()
    assert not outcome.ok
    assert "would be refused" in outcome.message
    assert "inconsistent: alembic_version holds 'f00d'" in outcome.message
    assert version_rows(db) == ["f00d"]


def test_dry_run_up_to_date_has_nothing_to_apply(engine: MigrationEngine) -> None:
    engine.migrate()
    outcome = engine.dry_run()
    assert outcome.ok and outcome.sql == {}
    assert outcome.message.startswith("Dry run: nothing to apply")


def test_read_only_paths_cannot_write(engine: MigrationEngine) -> None:
    """Status and dry run read in a READ ONLY transaction: the server refuses any write."""
    with (
        pytest.raises(sa.exc.InternalError, match="read-only transaction"),
        engine.reading() as connection,
    ):
        connection.exec_driver_sql("CREATE TABLE sneaky (id int)")
