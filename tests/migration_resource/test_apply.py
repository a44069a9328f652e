"""Applying migrations on a real PostgreSQL: data kept, failures contained, timeouts set."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from migration_resource.engine import (
    ConfirmationRequired,
    MigrationEngine,
    MigrationFailed,
    MigrationRefused,
)
from migration_resource.lock import lock_key
from migration_resource.revisions import TargetRevisionError, alembic_config
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    ADD_EMAIL_DOMAIN,
    CREATE_TABLES,
    DROP_USERS_NAME,
    HEAD,
    INDEX_TASKS,
    ORDER,
)
from tests.migration_resource.support import (
    execute,
    linear_history,
    relations,
    version_rows,
)

Synthetic = Callable[..., tuple[Path, list[str]]]

# A checksum of the columns that exist from the first revision on: any lost, duplicated or
# altered row changes it.
DATA_FINGERPRINT = """
SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM projects),
       (SELECT count(*) FROM tasks),
       md5(coalesce((SELECT string_agg(concat_ws('|', id, email), ',' ORDER BY id)
                      FROM users), '')
        || coalesce((SELECT string_agg(concat_ws('|', id, owner_id, name), ',' ORDER BY id)
                     FROM projects), '')
        || coalesce((SELECT string_agg(concat_ws('|', id, project_id, assignee_id, title, status),
                                       ',' ORDER BY id)
                     FROM tasks), ''))
"""


def seed(db: sa.Engine, users: int = 200) -> None:
    """Rows valid at every revision (status values satisfy the later CHECK)."""
    execute(
        db,
        f"INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g "
        f"FROM generate_series(1, {users}) g",
        "INSERT INTO users (email, name) VALUES ('blank@example.com', '  ')",
        "INSERT INTO projects (owner_id, name) SELECT id, 'Project of ' || name FROM users",
        "INSERT INTO tasks (project_id, assignee_id, title, status) "
        "SELECT p.id, p.owner_id, 'Task ' || s || ' of ' || p.id, "
        "(ARRAY['todo', 'in_progress', 'done'])[1 + mod(s, 3)] "
        "FROM projects p, generate_series(1, 3) s",
    )


def fingerprint(db: sa.Engine) -> tuple[object, ...]:
    with db.connect() as conn:
        return tuple(conn.exec_driver_sql(DATA_FINGERPRINT).one())


def test_apply_from_empty_logs_in_the_guides_words(
    engine: MigrationEngine, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="migration_resource")
    outcome = engine.migrate()
    assert outcome.classification.state == "empty"
    assert [a.revision for a in outcome.applied] == list(ORDER)
    assert all(a.seconds >= 0 for a in outcome.applied)
    assert outcome.final == (HEAD,)
    assert version_rows(db) == [HEAD]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("migration_resource")]
    assert "Migration state: empty" in messages
    assert f"Running {len(ORDER)} pending migrations..." in messages
    assert f"Database migrations completed successfully. Revision: base → {HEAD}" in messages


def test_no_change_run_says_up_to_date(
    engine: MigrationEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.migrate()
    caplog.set_level(logging.INFO, logger="migration_resource")
    outcome = engine.migrate()
    assert outcome.applied == ()
    assert "Auto-migration: Database is up to date" in caplog.messages


# Every revision up to the destructive one, and the start of the online ones.
@pytest.mark.parametrize("start", (*ORDER[:ORDER.index(DROP_USERS_NAME)], ADD_EMAIL_DOMAIN))
def test_apply_from_every_intermediate_revision_keeps_all_rows(
    engine: MigrationEngine, db: sa.Engine, start: str
) -> None:
    # GIVEN a database at `start` holding data written at the first revision
    engine.migrate(CREATE_TABLES)
    seed(db)
    engine.migrate(start)
    before = fingerprint(db)
    # WHEN it is brought to head
    outcome = engine.migrate()
    # THEN exactly the revisions after `start` ran and every row is still there, unchanged
    assert [a.revision for a in outcome.applied] == list(ORDER[ORDER.index(start) + 1 :])
    assert fingerprint(db) == before
    assert before[0] == 201
    with db.connect() as conn:
        unnamed = conn.exec_driver_sql("SELECT count(*) FROM users WHERE display_name IS NULL")
        assert unnamed.scalar() == 0  # the backfill ran on the existing rows
        no_domain = conn.exec_driver_sql("SELECT count(*) FROM users WHERE email_domain IS NULL")
        assert no_domain.scalar() == 0  # so did the batched one


def test_a_run_loads_the_scripts_once_whatever_the_number_of_pending_revisions(
    make_engine: Callable[..., MigrationEngine], synthetic: Synthetic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each Alembic run imports every revision file: one run per revision would make a long
    # first deploy quadratic. From an empty database, one online run of the engine's
    # environment (which logs each run at DEBUG): nothing to preview against, the apply judges
    # each statement as it is sent. Later, one offline run (the change gate) and one online.
    caplog.set_level(logging.DEBUG, logger="migration_resource.alembic_env")
    folder, ids = synthetic(12)
    outcome = make_engine(script_location=folder).migrate(ids[1])
    assert len(outcome.applied) == 2
    runs = [r.message for r in caplog.records if r.name == "migration_resource.alembic_env"]
    assert runs == ["The engine's Alembic environment runs online"]
    caplog.clear()
    outcome = make_engine(script_location=folder).migrate()
    assert len(outcome.applied) == 10
    runs = [r.message for r in caplog.records if r.name == "migration_resource.alembic_env"]
    assert sorted(runs) == ["The engine's Alembic environment runs offline",
                            "The engine's Alembic environment runs online"]


def test_failure_half_way_leaves_the_last_good_revision(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN five revisions of which the fourth fails after writing
    folder, ids = synthetic(5, fail_at=4)
    engine = make_engine(script_location=folder)
    engine.migrate(ids[1])
    execute(db, "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 50) g")
    # WHEN the run to head fails
    with pytest.raises(MigrationFailed) as failure:
        engine.migrate()
    # THEN revision 3 stays applied, revision 4 rolled back entirely, and the data is intact
    assert version_rows(db) == [ids[2]]
    assert failure.value.final == (ids[2],)
    assert [a.revision for a in failure.value.applied] == [ids[2]]
    message = str(failure.value)
    assert message.startswith(
        f"pending_migrations: revision {ids[3]} (00004_{ids[3]}.py) failed after 1 of 3 "
        "revisions: DivisionByZero: division by zero. "  # the driver's class, the server's words
    )
    assert "DataError" not in message and "[SQL:" not in message
    assert f"Committed before it in this run: {ids[2]}; its transaction was rolled back" in message
    assert f"The database is at revision {ids[2]}" in message
    assert "Traceback" not in message
    with db.connect() as conn:
        logged = conn.exec_driver_sql("SELECT revision FROM applied_log ORDER BY applied_at")
        assert list(logged.scalars()) == ids[:3]
        assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar() == 50


def test_statement_timeout_bounds_each_migration_statement(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, synthetic: Synthetic
) -> None:
    folder, _ = synthetic(2, sleep_seconds=3)
    engine = make_engine(script_location=folder, migration_timeout_seconds=1)
    with pytest.raises(MigrationFailed, match="statement timeout"):
        engine.migrate()
    assert version_rows(db) == []


def test_lock_timeout_bounds_waiting_for_a_table_lock(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, synthetic: Synthetic
) -> None:
    folder, ids = synthetic(2)
    engine = make_engine(script_location=folder, lock_timeout_seconds=1, lock_retries=0)
    engine.migrate(ids[0])
    with db.connect() as blocker:
        blocker.exec_driver_sql("LOCK TABLE applied_log IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(MigrationFailed, match="lock timeout"):
            engine.migrate()
        assert time.monotonic() - started < 10
        blocker.rollback()
    assert version_rows(db) == [ids[0]]


def test_lock_holder_is_named_and_nothing_changes(
    make_engine: Callable[..., MigrationEngine], database_url: str, db: sa.Engine
) -> None:
    # GIVEN another session holding the migration lock
    holder_engine = sa.create_engine(
        database_url, poolclass=sa.NullPool,
        connect_args={"application_name": "deploy-from-laptop"},
    )
    engine = make_engine(lock_wait_seconds=1)
    key = _lock_key(engine)
    with holder_engine.connect() as holder:
        holder.execute(sa.select(sa.func.pg_advisory_lock(key)))
        pid = holder.execute(sa.select(sa.func.pg_backend_pid())).scalar()
        holder.commit()
        # WHEN a migration wants it
        started = time.monotonic()
        with pytest.raises(MigrationRefused) as refused:
            engine.migrate()
        waited = time.monotonic() - started
    holder_engine.dispose()
    # THEN it waited a bounded time, named the holder, and changed nothing
    message = str(refused.value)
    assert message.startswith("empty: Another migration holds the migration lock")
    assert f"pid {pid}" in message
    assert "application 'deploy-from-laptop'" in message
    assert "since 20" in message  # an ISO timestamp
    assert "nothing was changed" in message
    assert 1 <= waited < 5
    assert relations(db) == []


def test_state_is_checked_again_after_waiting_for_the_lock(
    make_engine: Callable[..., MigrationEngine], database_url: str, db: sa.Engine,
    synthetic: Synthetic,
) -> None:
    folder, _ = synthetic(3)
    engine = make_engine(script_location=folder, lock_wait_seconds=30)
    key = _lock_key(engine)
    holder_engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    results: list[object] = []
    with holder_engine.connect() as holder:
        holder.execute(sa.select(sa.func.pg_advisory_lock(key)))
        holder.commit()
        # GIVEN a run that classified the database as empty and now waits for the lock
        waiting = threading.Thread(target=lambda: results.append(engine.migrate()))
        waiting.start()
        _wait_for_lock_waiter(db, key)
        # WHEN the lock holder migrates the database meanwhile
        with holder_engine.connect() as other:
            config = alembic_config(folder)
            config.attributes["connection"] = other
            command.upgrade(config, "head")
        holder.execute(sa.select(sa.func.pg_advisory_unlock(key)))
        waiting.join(timeout=30)
    holder_engine.dispose()
    # THEN the waiting run finds nothing left to do and applies nothing twice
    (outcome,) = results
    assert outcome.applied == ()  # type: ignore[attr-defined]
    assert outcome.classification.state == "up_to_date"  # type: ignore[attr-defined]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM applied_log").scalar() == 3


def test_inconsistent_database_is_refused_untouched(engine: MigrationEngine, db: sa.Engine) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    execute(db, "UPDATE alembic_version SET version_num = 'f00d'")
    before = relations(db)
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate()
    message = str(refused.value)
    assert message.startswith("inconsistent: alembic_version holds 'f00d'")
    assert "nothing was changed" in message and "docs/RUNBOOK.md#inconsistent" in message
    assert relations(db) == before
    assert version_rows(db) == ["f00d"]


def test_tables_without_history_are_refused_untouched(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    execute(db, "DROP TABLE alembic_version")
    before = relations(db)
    with pytest.raises(MigrationRefused, match=r"^tables_without_migration_history: .*baseline"):
        engine.migrate()
    assert relations(db) == before


def test_ahead_is_never_downgraded(engine: MigrationEngine, db: sa.Engine) -> None:
    engine.migrate()
    outcome = engine.migrate(ADD_DISPLAY_NAME)
    assert outcome.classification.state == "ahead"
    assert outcome.applied == ()
    assert version_rows(db) == [HEAD]


def test_downgrade_needs_confirmation_and_an_explicit_target(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    engine.migrate()
    with pytest.raises(ConfirmationRequired):
        engine.downgrade(ADD_DISPLAY_NAME, confirm=False)
    with pytest.raises(TargetRevisionError, match="explicit target"):
        engine.downgrade("head", confirm=True)
    assert version_rows(db) == [HEAD]
    outcome = engine.downgrade(ADD_DISPLAY_NAME, confirm=True)
    assert [a.revision for a in outcome.applied] == list(reversed(ORDER[2:]))
    assert all(a.direction == "downgrade" for a in outcome.applied)
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_downgrade_to_base_with_confirmation(engine: MigrationEngine, db: sa.Engine) -> None:
    engine.migrate()
    outcome = engine.downgrade("base", confirm=True)
    assert len(outcome.applied) == len(ORDER) and outcome.final == ()
    # only the product's own bookkeeping is left
    assert all(r.startswith(("alembic_version", "migration_audit")) for r in relations(db))
    assert engine.status().classification.state == "empty"


def test_downgrade_refuses_a_target_ahead_of_the_database(
    engine: MigrationEngine, db: sa.Engine
) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    with pytest.raises(MigrationRefused, match="must be an ancestor"):
        engine.downgrade(INDEX_TASKS, confirm=True)
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def _lock_key(engine: MigrationEngine) -> int:
    return lock_key(engine.settings.schema)


def _wait_for_lock_waiter(db: sa.Engine, key: int, timeout: float = 10) -> None:
    """Until the engine has failed at least one pg_try_advisory_lock (it then sleeps)."""
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'db-migrations/%%/work' "
                "AND (strpos(query, 'pg_try_advisory_lock') > 0 OR strpos(query, 'pg_locks') > 0)"
            ).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the migration never tried to take the lock")


ITEMS = ('op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), '
         'sa.Column("name", sa.Text))')
FIRST_ROW = 'op.execute("INSERT INTO items VALUES (1, \'first\')")\n    '
DUPLICATE = '\n    op.execute("INSERT INTO items VALUES (1, \'again\')")'
# Ways revision code ends its own transaction that its text does not give away.
COMMITS = {
    "triple-quoted COMMIT": 'op.execute("""COMMIT""")',
    "the connection's commit()": "op.get_bind().commit()",
    "exec_driver_sql": 'op.get_bind().exec_driver_sql("COMMIT")',
    "text() imported bare": 'from sqlalchemy import text\n    op.execute(text("COMMIT"))',
    # past SQLAlchemy, on the driver itself
    "the driver's commit()": "op.get_bind().connection.dbapi_connection.commit()",
    "the driver's cursor": 'op.get_bind().connection.cursor().execute("COM" + "MIT")',
    "with the driver's connection": "with op.get_bind().connection.dbapi_connection:\n"
                                    "        pass",
}


@pytest.mark.parametrize("commit", COMMITS.values(), ids=COMMITS.keys())
def test_a_revision_that_commits_midway_then_fails_blocks_until_resolved(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path, commit: str
) -> None:
    # GIVEN a revision that inserts a row, commits it, then fails on a duplicate
    scripts = linear_history(tmp_path / "h", {
        "c1": ITEMS, "c2": FIRST_ROW + commit + DUPLICATE})
    engine = make_engine(script_location=scripts)
    engine.migrate("c1")
    # WHEN it runs
    with pytest.raises(MigrationFailed) as failed:
        engine.migrate()
    # THEN the answer says what it committed, and that runs are blocked until resolved
    message = str(failed.value)
    assert "committing what it had sent: INSERT INTO items VALUES (1, 'first')" in message
    assert "--confirm repair --resolve rolled-back|applied --revision c2" in message
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM items").scalars().all() == ["first"]
    # AND the next run refuses rather than run it again over the committed row
    assert engine.status().classification.cause == "failed_run"
    with pytest.raises(MigrationRefused,
                       match=r"inconsistent: .*--resolve rolled-back\|applied --revision c2`"):
        engine.migrate()
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar() == 1
    assert version_rows(db) == ["c1"]


def test_a_revision_that_committed_is_never_retried_after_a_lock_timeout(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a revision that commits a row, then alters a table another session holds
    scripts = linear_history(tmp_path / "h", {
        "l1": ITEMS, "l2": FIRST_ROW + "op.get_bind().commit()\n    "
                            'op.add_column("items", sa.Column("note", sa.Text))'})
    engine = make_engine(script_location=scripts, lock_timeout_seconds=1, lock_retries=3)
    engine.migrate("l1")
    holder = db.connect()
    holder.exec_driver_sql("LOCK TABLE items IN ACCESS SHARE MODE")
    try:
        # WHEN it runs and its ALTER waits past MIGRATION_LOCK_TIMEOUT
        with pytest.raises(MigrationFailed) as failed:
            engine.migrate()
    finally:
        holder.rollback()
        holder.close()
    # THEN it was not tried again: one attempt, the committed row once
    assert "tried again" not in str(failed.value) and "committing what it had sent" in str(
        failed.value)
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar() == 1
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM migration_audit WHERE revision = 'l2'").scalar() == 1


def test_a_revision_is_blamed_for_its_own_connection_and_reads_commit_nothing(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN r2, whose first act is a write on a connection of its own, then a failure; and a
    # revision before it that only reads through one
    scripts = linear_history(tmp_path / "h", {
        "q1": ITEMS,
        "q2": "with op.get_bind().engine.begin() as c:\n"
              '        c.execute(sa.text("SELECT 1"))\n'
              '    op.execute("CREATE TABLE q2_side (id int)")',
        "q3": "with op.get_bind().engine.begin() as c:\n"
              '        c.execute(sa.text("INSERT INTO items VALUES (7, \'own\')"))\n'
              '    op.execute("INSERT INTO items VALUES (7, \'again\')")',
    })
    engine = make_engine(script_location=scripts)
    engine.migrate("q1")
    with pytest.raises(MigrationFailed) as failed:
        engine.migrate()
    # THEN q3 is the one that committed midway, with what it committed; q2 (reads) is not
    message = str(failed.value)
    assert "revision q3" in message and "committed on a connection of its own" in message
    assert "INSERT INTO items VALUES (7, 'own')" in message
    with db.connect() as conn:
        rows = dict(conn.exec_driver_sql(
            "SELECT revision, transactional FROM migration_audit WHERE action = 'upgrade'").all())
    assert rows == {"q1": True, "q2": True, "q3": False}


def test_a_select_that_calls_a_function_then_commits_counts_as_committing(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a revision that writes through a function it calls in a SELECT, commits, then fails
    scripts = linear_history(tmp_path / "h", {
        "f1": ITEMS + "\n    op.execute(\"CREATE FUNCTION add_item() RETURNS int LANGUAGE sql "
              "AS 'INSERT INTO items VALUES (5, ''via function'') RETURNING 1'\")",
        "f2": 'op.execute("SELECT add_item()")\n    op.get_bind().commit()\n    '
              'op.execute("INSERT INTO items VALUES (5, \'again\')")'})
    engine = make_engine(script_location=scripts)
    engine.migrate("f1")
    with pytest.raises(MigrationFailed) as failed:
        engine.migrate()
    # THEN the committed write is named and runs are blocked: it is not retried over it
    assert "committing what it had sent: SELECT add_item()" in str(failed.value)
    assert engine.status().classification.cause == "failed_run"


LONG_IDS = {"20240101_create_users_table_with_email": "op.execute('CREATE TABLE u (id int)')",
            "20240102_add_the_name_column_to_users_table": "op.execute('ALTER TABLE u ADD n text')"}


def test_revision_ids_alembic_version_cannot_hold_are_refused_before_anything_runs(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN ids longer than the 32 characters Alembic gives alembic_version.version_num
    engine = make_engine(script_location=linear_history(tmp_path / "h", LONG_IDS))
    # WHEN a deploy runs, THEN it is refused with the statement that makes room, untouched
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate()
    message = str(refused.value)
    assert "revision 20240102_add_the_name_column_to_users_table has a 43-character id" in message
    assert "version_num TYPE varchar(64)" in message and "nothing was changed" in message
    assert relations(db) == []
    # AND once the team made room as it says, the history runs and the trail records the ids
    execute(db, "CREATE TABLE alembic_version (version_num varchar(64) NOT NULL "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY)")
    assert engine.migrate().final == ("20240102_add_the_name_column_to_users_table",)
    with db.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT revision FROM migration_audit WHERE outcome = 'succeeded' ORDER BY id"
        ).scalars().all() == list(LONG_IDS)


def test_a_trail_from_before_long_ids_takes_them(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN a trail made with a 32-character revision column, and a widened alembic_version
    make_engine(script_location=linear_history(tmp_path / "a", {"a1": "pass"})).migrate()
    execute(db, "ALTER TABLE migration_audit ALTER COLUMN revision TYPE varchar(32)",
            "DROP TABLE alembic_version",
            "CREATE TABLE alembic_version (version_num varchar(64) NOT NULL "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY)")
    # WHEN a history with long ids runs, THEN the trail widens its column and records them
    engine = make_engine(script_location=linear_history(tmp_path / "h", LONG_IDS))
    assert engine.migrate().final == ("20240102_add_the_name_column_to_users_table",)
    with db.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT data_type FROM information_schema.columns WHERE table_name = "
            "'migration_audit' AND column_name = 'revision'").scalar() == "text"
