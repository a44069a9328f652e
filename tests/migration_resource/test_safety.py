"""Verified history repair, explicit baselines and the destructive-change gate, end to end
on real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from migration_resource.engine import MigrationEngine, MigrationRefused
from migration_resource.revisions import alembic_config
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    AFTER_CHECK_TASK_STATUS,
    BACKFILL_DISPLAY_NAME,
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    DROP_USERS_NAME,
    HEAD,
    INDEX_TASKS,
)
from tests.migration_resource.support import (
    SAMPLE_SCRIPTS,
    execute,
    linear_history,
    relations,
    sample_without_approvals,
    version_rows,
)

EngineFactory = Callable[..., MigrationEngine]


def tables_without_history(db: sa.Engine, revision: str) -> None:
    """Build the schema of `revision` for real, then forget the history."""
    with db.connect() as conn:
        config = alembic_config(SAMPLE_SCRIPTS)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    execute(db, "DROP TABLE alembic_version")


def scratch_schemas(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'migration_scratch')"
        ).scalars())


def audit(db: sa.Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT action, revision, outcome FROM migration_audit ORDER BY id")]


def test_tables_at_revision_2_of_6_are_baselined_at_2_then_migrated(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    # GIVEN tables at revision 2, with data, and no history
    tables_without_history(db, ADD_DISPLAY_NAME)
    execute(db, "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'User ' || g "
                "FROM generate_series(1, 100) g",
            "INSERT INTO projects (owner_id, name) SELECT id, 'p' || id FROM users")
    # WHEN run-migrations --fix-history runs
    outcome = engine.migrate(fix_history=True)
    # THEN revision 2 was stamped (the earliest with that schema: the backfill still runs)
    assert outcome.baseline is not None
    assert outcome.baseline["matched"] == ADD_DISPLAY_NAME
    assert outcome.baseline["matches"] == [ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME]
    assert [a.revision for a in outcome.applied] == [
        BACKFILL_DISPLAY_NAME, INDEX_TASKS, CHECK_TASK_STATUS, *AFTER_CHECK_TASK_STATUS,
    ]
    assert version_rows(db) == [HEAD]
    with db.connect() as conn:
        users = conn.exec_driver_sql("SELECT count(*), count(display_name) FROM users").one()
        assert tuple(users) == (100, 100)  # every row kept and backfilled
        assert conn.exec_driver_sql("SELECT count(*) FROM projects").scalar() == 100
    assert ("baseline", ADD_DISPLAY_NAME, "succeeded") in audit(db)
    assert scratch_schemas(db) == []


def test_tables_at_head_are_stamped_and_nothing_is_applied(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    tables_without_history(db, HEAD)
    outcome = engine.migrate(fix_history=True)
    assert outcome.baseline is not None and outcome.baseline["matched"] == HEAD
    assert outcome.applied == ()
    assert version_rows(db) == [HEAD]


def test_without_fix_history_the_refusal_says_how(engine: MigrationEngine, db) -> None:
    tables_without_history(db, HEAD)
    with pytest.raises(MigrationRefused, match="--fix-history"):
        engine.migrate()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE users ADD COLUMN nickname text", "users.nickname"),
        ("DROP INDEX ix_tasks_project_id_status", "project_id, status"),
    ],
)
def test_a_schema_matching_no_revision_becomes_inconsistent_with_a_diff(
    engine: MigrationEngine, db: sa.Engine, change: str, named: str
) -> None:
    tables_without_history(db, HEAD)
    execute(db, change)
    before = relations(db)
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate(fix_history=True)
    assert str(refused.value).startswith("inconsistent: no revision matches the tables")
    assert named in str(refused.value)
    assert refused.value.classification is not None
    assert refused.value.classification.cause == "unverifiable_baseline"
    # nothing changed: no history written, scratch schema gone; the verdict is remembered
    assert version_rows(db) == []
    assert [r for r in relations(db) if not r.startswith("migration_audit")] == [
        r for r in before if not r.startswith("migration_audit")
    ]
    assert scratch_schemas(db) == []
    # a database without a trail gets none for a refusal: the next try searches again
    assert "migration_audit" not in relations(db)
    assert engine.status().classification.state.value == "tables_without_migration_history"


def test_dry_run_fix_history_reports_the_revision_it_would_stamp(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    tables_without_history(db, INDEX_TASKS)
    outcome = engine.dry_run(fix_history=True)
    assert outcome.ok
    assert outcome.baseline is not None and outcome.baseline["matched"] == INDEX_TASKS
    assert outcome.classification.pending == (
        CHECK_TASK_STATUS, *AFTER_CHECK_TASK_STATUS)
    assert f"would stamp {INDEX_TASKS}" in outcome.notes[0]
    assert version_rows(db) == [] and scratch_schemas(db) == []


def test_ignored_tables_are_left_out_and_said(make_engine: EngineFactory, db) -> None:
    tables_without_history(db, HEAD)
    execute(db, "CREATE TABLE legacy_export (id int)")
    engine = make_engine(ignored_tables=("legacy_export",))
    outcome = engine.migrate(fix_history=True)
    assert outcome.baseline is not None
    assert outcome.baseline["ignored_tables"] == ["legacy_export"]
    assert version_rows(db) == [HEAD]


def test_explicit_baseline_is_recorded_and_confirmed_in_production(
    make_engine: EngineFactory, db: sa.Engine
) -> None:
    tables_without_history(db, CHECK_TASK_STATUS)
    engine = make_engine(stage="production", allow_destructive=True)
    outcome = engine.migrate(baseline=CHECK_TASK_STATUS)
    assert [a.revision for a in outcome.applied] == list(AFTER_CHECK_TASK_STATUS)
    rows = audit(db)
    assert ("baseline", CHECK_TASK_STATUS, "succeeded") in rows
    with db.connect() as conn:
        detail = conn.exec_driver_sql(
            "SELECT detail FROM migration_audit WHERE action = 'baseline' LIMIT 1").scalar()
    assert "not verified" in str(detail)


def test_explicit_baseline_is_refused_on_a_healthy_history(engine: MigrationEngine) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    with pytest.raises(MigrationRefused, match="only for a database without"):
        engine.migrate(baseline=HEAD)


def test_destructive_revision_refused_in_production_then_allowed(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN production data at the revision before the column drop, which nothing approves
    scripts = sample_without_approvals(tmp_path / "scripts")
    make_engine(script_location=scripts).migrate(CHECK_TASK_STATUS)
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada')")
    production = make_engine(script_location=scripts, stage="production")
    # WHEN the destructive revision is pending
    dry = production.dry_run()
    assert not dry.ok and "drop_column" in dry.message
    assert [f["rule"] for f in dry.findings] == ["drop_column"]
    assert dry.findings[0]["statement"].startswith("ALTER TABLE users DROP COLUMN name")
    with pytest.raises(MigrationRefused) as refused:
        production.migrate()
    # THEN it is refused, nothing changed, and the refusal is in the audit trail
    assert str(refused.value).startswith(f"pending_migrations: {DROP_USERS_NAME}: drop_column")
    assert "--allow-destructive" in str(refused.value)
    # ... the one thing it wrote, its row in the existing trail, is said
    assert "; nothing was changed but its row in migration_audit. Approve:" in str(
        refused.value)
    assert version_rows(db) == [CHECK_TASK_STATUS]
    assert audit(db)[-1] == ("upgrade", DROP_USERS_NAME, "refused")
    # AND with the setting it runs, and that is recorded too
    outcome = production.migrate(allow_destructive=True)
    assert [a.revision for a in outcome.applied] == list(AFTER_CHECK_TASK_STATUS)
    assert ("upgrade", DROP_USERS_NAME, "succeeded") in audit(db)


def test_destructive_revision_only_warns_in_development(
    engine: MigrationEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.migrate(CHECK_TASK_STATUS)
    outcome = engine.migrate()
    assert [a.revision for a in outcome.applied] == list(AFTER_CHECK_TASK_STATUS)
    assert any("drop_column" in message for message in caplog.messages)


def test_locking_findings_warn_in_the_dry_run(make_engine: EngineFactory) -> None:
    engine = make_engine(stage="production")
    engine.migrate(CREATE_TABLES)
    dry = engine.dry_run(CHECK_TASK_STATUS)
    assert dry.ok
    assert {(f["revision"], f["rule"]) for f in dry.findings} == {
        (INDEX_TASKS, "create_index_not_concurrently"),
        (CHECK_TASK_STATUS, "check_without_not_valid"),
    }


def test_the_gate_can_be_asked_before_migrating(
    make_engine: EngineFactory, db: sa.Engine, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # GIVEN production at the revision before the column drop, classified as a deploy does
    scripts = sample_without_approvals(tmp_path / "scripts")
    make_engine(script_location=scripts).migrate(CHECK_TASK_STATUS)
    production = make_engine(script_location=scripts, stage="production")
    before = production.status().classification
    # WHEN the gate is asked first: it refuses exactly as migrate does, changing nothing
    with pytest.raises(MigrationRefused) as early:
        production.check_gate(before)
    with pytest.raises(MigrationRefused) as late:
        production.migrate()
    assert str(early.value) == str(late.value)
    assert version_rows(db) == [CHECK_TASK_STATUS]
    assert [row for row in audit(db) if row[2] == "refused"] == [
        ("upgrade", DROP_USERS_NAME, "refused")] * 2
    # AND an allowed plan passes silently: migrate logs its findings once, itself
    caplog.clear()
    production.check_gate(before, allow_destructive=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    # AND a database with nothing pending has nothing to gate
    assert production.check_gate(production.status(CHECK_TASK_STATUS).classification) is None


def by_plain_alembic(db: sa.Engine, scripts: Path, revision: str) -> None:
    with db.connect() as conn:
        config = alembic_config(scripts)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@pytest.mark.parametrize("history", ["alembic_version", "none"])
def test_a_refused_deploy_leaves_no_stamp_no_trail_and_no_bookkeeping(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path, history: str
) -> None:
    # GIVEN production tables built by plain Alembic (no audit trail), before the column
    # drop that nothing approves; with their alembic_version, or with the history lost
    scripts = sample_without_approvals(tmp_path / "scripts")
    by_plain_alembic(db, scripts, CHECK_TASK_STATUS)
    if history == "none":
        execute(db, "DROP TABLE alembic_version")
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada')")
    before = relations(db)
    # WHEN a production deploy (the verified baseline first, where the history is lost)
    # reaches the drop
    production = make_engine(script_location=scripts, stage="production")
    with pytest.raises(MigrationRefused) as refused:
        production.migrate(fix_history=history == "none")
    # THEN it is refused having written nothing: no stamp, no audit table, no adopt rows
    message = str(refused.value)
    assert f"{DROP_USERS_NAME}: drop_column blocked in production" in message
    assert "; nothing was changed. Approve:" in message and "migration_audit" not in message
    assert relations(db) == before
    assert "migration_audit" not in relations(db)
    assert version_rows(db) == ([CHECK_TASK_STATUS] if history == "alembic_version" else [])
    # AND once approved for this deploy, the baseline, the bookkeeping and the drop are made
    outcome = production.migrate(fix_history=history == "none", allow_destructive=True)
    assert outcome.complete and version_rows(db) == [HEAD]
    assert ("upgrade", DROP_USERS_NAME, "succeeded") in audit(db)


# (revision body after a table `orders` with rows, expected rule or None): run in production.
FAILS_CLOSED = [
    ('op.execute("DO $$ BEGIN ALTER TABLE orders DROP COLUMN note; END $$")', "do_block"),
    ('op.execute("DELETE FROM orders WHERE id IS NOT NULL")', "delete_rows"),
    ('op.execute("DELETE FROM orders WHERE note IS NULL")', "delete_rows"),
    # reads rows it then uses, and fails in the scratch database: not previewed, then drops
    ('if op.get_bind().execute(sa.text("SELECT count(*) FROM orders")).scalar() < 2:\n'
     '        raise RuntimeError("the scratch database has too few rows")\n'
     '    op.drop_column("orders", "note")', "not_previewed"),
    # a backfill of the column this revision adds: nothing to refuse
    ('op.add_column("orders", sa.Column("state", sa.Text))\n'
     '    op.execute("UPDATE orders SET state = \'open\'")', None),
]


@pytest.mark.parametrize(("body", "rule"), FAILS_CLOSED)
def test_what_the_gate_cannot_see_or_that_destroys_rows_is_refused_in_production(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path, body: str, rule: str | None
) -> None:
    # GIVEN production orders, and a pending revision
    scripts = linear_history(tmp_path / "h", {
        "o1": 'op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True), '
              'sa.Column("note", sa.Text))',
        "o2": body})
    engine = make_engine(script_location=scripts, stage="production")
    engine.migrate("o1")
    execute(db, "INSERT INTO orders VALUES (1, 'keep'), (2, NULL), (3, 'x')")
    before = relations(db)
    # WHEN it deploys
    if rule is None:
        assert engine.migrate().complete and version_rows(db) == ["o2"]
        return
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate()
    # THEN it is refused naming the rule, before anything ran: every row and column is there
    assert f"o2: {rule} blocked in production" in str(refused.value)
    assert relations(db) == before and version_rows(db) == ["o1"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), count(note) FROM orders").one() == (3, 2)
