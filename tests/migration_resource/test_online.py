"""The online building blocks (`migration_resource.online`) against a real PostgreSQL.

Faults are made for real: the migration session is terminated by the server while a backfill
or a concurrent index build runs (`pg_terminate_backend`), a unique build fails on duplicate
values. A trigger counts the updates of every row, so "exactly once" is what the database
saw, not what the helper believes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource import core
from migration_resource.checksums import is_resumable, is_transactional
from migration_resource.engine import MigrationEngine, MigrationFailed
from migration_resource.online import ENGINE_LOGGER, PROGRESS_TABLE
from migration_resource.states import DatabaseState
from tests.alembic.support import (
    BACKFILL_EMAIL_DOMAIN,
    CHECK_TASK_STATUS,
    INDEX_EMAIL_DOMAIN,
    ONLINE_REVISIONS,
    REPO_ROOT,
    VALIDATE_EMAIL_DOMAIN,
)
from tests.migration_resource.support import execute, linear_history, version_rows

EngineFactory = Callable[..., MigrationEngine]
ROWS = 3000
# Every update of an `items` row is counted (in the updating transaction, so a batch rolled
# back by a terminated session takes its counts with it); a row costs ~0.2 ms, so a batch of
# 100 rows runs long enough to be caught in flight.
TABLE = (
    "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, v int, w int)'); "
    f"op.execute('INSERT INTO items (id) SELECT g FROM generate_series(1, {ROWS}) g')"
)
ITEMS = TABLE + (
    "; op.execute('CREATE TABLE update_counts (id bigint PRIMARY KEY, n int NOT NULL)'); "
    "op.execute('CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM pg_sleep(0.0002); INSERT INTO update_counts VALUES (NEW.id, 1) ON CONFLICT (id) "
    "DO UPDATE SET n = update_counts.n + 1; RETURN NEW; END $$'); "
    "op.execute('CREATE TRIGGER count_update AFTER UPDATE ON items FOR EACH ROW "
    "EXECUTE FUNCTION count_update()')"
)
# An index expression as slow as the database setting `test.slow_ms` says (0 when unset):
# set for the database, a build lasts long enough to be terminated mid-way.
SLOW_KEY = (
    "op.execute(\"CREATE FUNCTION slow_key(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_sleep(coalesce(nullif(current_setting('test.slow_ms', true), ''), "
    "'0')::int / 1000.0); RETURN x; END $$\")"
)
BACKFILL = ("from migration_resource.online import backfill\n    "
            "backfill(op, table='items', set_={'v': 'id * 2'}, where='v IS NULL', "
            "batch_rows=100, pause_seconds=0.005, log_every=5)")


def one(db: sa.Engine, sql: str) -> object:
    with db.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def progress_table_exists(db: sa.Engine) -> bool:
    return one(db, f"SELECT to_regclass('{PROGRESS_TABLE}')") is not None


def work_session(db: sa.Engine, running: str, timeout: float = 15) -> int:
    """The pid of the migration session once it runs a statement containing `running`."""
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE "
                "'db-migrations/%/work' AND state = 'active' AND strpos(query, :q) > 0"
            ), {"q": running}).scalar()
            conn.rollback()
            if pid:
                return int(pid)
            time.sleep(0.02)
    raise AssertionError(f"no migration session running {running!r}")


def terminate(db: sa.Engine, pid: int) -> None:
    with db.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        conn.commit()


def in_background(run: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as error:  # the test looks at what came out
            results.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results


def test_the_helpers_log_on_the_engine_channel() -> None:
    assert ENGINE_LOGGER == core.ENGINE_LOGGER


# -- the batched backfill ---------------------------------------------------------------------
def test_a_backfill_terminated_mid_run_resumes_and_updates_every_row_exactly_once(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a table of 3,000 rows whose updates a trigger counts, and a backfill revision
    folder = linear_history(tmp_path / "h", {"r1": ITEMS, "r2": BACKFILL})
    caplog.set_level(logging.INFO, logger=ENGINE_LOGGER)
    runner, results = in_background(make_engine(script_location=folder).migrate)
    # WHEN the migration session is terminated by the server while a batch runs
    work_session(db, "WITH picked AS")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and int(one(db, "SELECT count(*) FROM update_counts")
                                              or 0) < 600:  # type: ignore[call-overload]
        time.sleep(0.02)
    terminate(db, work_session(db, "WITH picked AS"))
    runner.join(timeout=30)

    # THEN that run failed, and says the next one continues it (nothing to resolve)
    (failure,) = results
    assert isinstance(failure, MigrationFailed), failure
    assert ("terminating connection due to administrator command" in str(failure)
            or "server closed the connection unexpectedly" in str(failure))
    assert "resume where they stopped: the next run continues it" in str(failure)
    # AND the committed batches are exactly what the progress row says: no batch half-done
    with db.connect() as conn:
        done = conn.exec_driver_sql(
            "SELECT count(*), max(id) FROM items WHERE v IS NOT NULL").one()
        progress = conn.exec_driver_sql(
            f"SELECT last_key, rows_done FROM {PROGRESS_TABLE}").one()
    assert 600 <= done[0] < ROWS
    assert (int(progress.last_key), progress.rows_done) == (done[1], done[0])
    assert one(db, "SELECT max(n) FROM update_counts") == 1
    # AND status tells the operator, and the database is not blocked
    engine = make_engine(script_location=folder)
    status = engine.status()
    assert status.classification.state is DatabaseState.PENDING_MIGRATIONS
    (note,) = status.notes
    assert note.startswith(f"backfill of items (v = id * 2) by revision r2 stopped after "
                           f"{done[0]} rows (last key {done[1]}")

    # WHEN the next run comes
    caplog.clear()
    outcome = engine.migrate()

    # THEN it resumed after the last committed key: every row updated, each exactly once
    assert [a.revision for a in outcome.applied] == ["r2"]
    with db.connect() as conn:
        counts = conn.exec_driver_sql(
            "SELECT count(*), min(n), max(n), sum(n) FROM update_counts").one()
        wrong = conn.exec_driver_sql("SELECT count(*) FROM items WHERE v IS DISTINCT FROM id * 2")
        assert wrong.scalar() == 0
    assert tuple(counts) == (ROWS, 1, 1, ROWS)
    assert f"resuming after id {done[1]} ({done[0]} rows done by an earlier run)" in caplog.text
    assert f"complete: {ROWS - done[0]} rows in" in caplog.text
    assert "rows/s" in caplog.text
    # AND the helper left nothing behind
    assert not progress_table_exists(db)
    assert version_rows(db) == ["r2"]


def test_a_trial_run_backfills_in_its_scratch_database_and_commits_nothing_live(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN the table migrated, then a revision reading rows (so the dry run runs a trial)
    # followed by the backfill
    folder = linear_history(tmp_path / "h", {
        "r1": ITEMS,
        "r2": "op.get_bind().execute(sa.text('SELECT count(*) FROM items')).scalar()",
        "r3": BACKFILL,
    })
    make_engine(script_location=folder).migrate(target="r1")
    caplog.set_level(logging.INFO, logger=ENGINE_LOGGER)

    # WHEN the dry run previews them
    dry = make_engine(script_location=folder).dry_run()

    # THEN the backfill ran whole in the scratch database, and nothing of it reached the live
    # database
    assert dry.ok and [p["source"] for p in dry.plan or ()] == ["captured", "rendered"]
    assert "complete: 3000 rows in 30 batches" in caplog.text
    assert one(db, "SELECT count(*) FROM items WHERE v IS NOT NULL") == 0
    assert one(db, "SELECT count(*) FROM update_counts") == 0
    assert not progress_table_exists(db)
    # AND the offline rendering shows its batch statement once, and how it repeats
    sql = (dry.plan or ())[1]["sql"]
    assert "UPDATE items SET v = id * 2 WHERE id IN (SELECT k FROM picked) AND (v IS NULL)" in sql
    assert "-- ... repeated with AND id > (the last key of the previous batch)" in sql
    assert dry.findings == ()


def test_a_backfill_refuses_a_key_without_a_unique_index(
    make_engine: EngineFactory, tmp_path: Path,
) -> None:
    folder = linear_history(tmp_path / "h", {
        "r1": ITEMS,
        "r2": "from migration_resource.online import backfill\n    "
              "backfill(op, table='items', set_='v = 1', key='w')",
    })
    with pytest.raises(MigrationFailed, match="has no unique index of its own"):
        make_engine(script_location=folder).migrate()


# -- concurrent indexes ----------------------------------------------------------------------
def test_an_interrupted_concurrent_index_is_found_by_status_and_rebuilt_by_the_next_run(
    make_engine: EngineFactory, db: sa.Engine, database_url: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a revision building an index concurrently, slow for this database's sessions
    folder = linear_history(tmp_path / "h", {
        "r1": f"{TABLE}; {SLOW_KEY}",
        "r2": "from migration_resource.online import create_index_concurrently\n    "
              "create_index_concurrently(op, 'ix_items_slow', 'items', [sa.text('slow_key(v)')])",
    })
    make_engine(script_location=folder).migrate(target="r1")
    name = sa.make_url(database_url).database
    execute(db, f'ALTER DATABASE "{name}" SET test.slow_ms = 1')
    runner, results = in_background(make_engine(script_location=folder).migrate)
    # WHEN its session is terminated while the index builds
    pid = work_session(db, "CREATE INDEX CONCURRENTLY")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not one(
            db, "SELECT count(*) FROM pg_stat_progress_create_index "
                "WHERE phase LIKE 'building index%'"):
        time.sleep(0.02)
    terminate(db, pid)
    runner.join(timeout=30)
    execute(db, f'ALTER DATABASE "{name}" RESET test.slow_ms')

    # THEN the run failed, leaving an INVALID index, which status finds
    (failure,) = results
    assert isinstance(failure, MigrationFailed), failure
    engine = make_engine(script_location=folder)
    status = engine.status()
    assert status.classification.state is DatabaseState.PENDING_MIGRATIONS
    assert [i["name"] for i in status.invalid_indexes] == ["ix_items_slow"]
    assert status.invalid_indexes[0]["table"] == "items"
    assert ("invalid indexes: ix_items_slow on items (left by an interrupted CREATE INDEX "
            "CONCURRENTLY; the next run of create_index_concurrently rebuilds it") in status.message
    assert status.as_dict()["invalid_indexes"] == list(status.invalid_indexes)

    # WHEN the next run comes
    caplog.set_level(logging.INFO, logger=ENGINE_LOGGER)
    outcome = engine.migrate()

    # THEN it dropped the INVALID index and built it again: valid, and status is clean
    assert [a.revision for a in outcome.applied] == ["r2"]
    assert ("Index ix_items_slow is INVALID (an interrupted CREATE INDEX CONCURRENTLY)"
            in caplog.text)
    assert one(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_items_slow'::regclass")
    after = engine.status()
    assert after.invalid_indexes == () and "invalid indexes" not in after.message


def test_a_failed_unique_build_drops_the_invalid_index_it_left_and_a_rerun_builds_it(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN duplicate values under a unique index built concurrently
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, v int)'); "
              "op.execute('INSERT INTO items VALUES (1, 7), (2, 7), (3, 8)')",
        "r2": "from migration_resource.online import create_index_concurrently\n    "
              "create_index_concurrently(op, 'ux_items_v', 'items', ['v'], unique=True)",
    })
    # WHEN it runs, THEN it fails on the duplicates and leaves no INVALID index behind
    with pytest.raises(MigrationFailed, match="could not create unique index"):
        make_engine(script_location=folder).migrate()
    assert one(db, "SELECT to_regclass('ux_items_v')") is None
    # AND once the data is fixed, the next run builds it (no repair needed in between)
    execute(db, "UPDATE items SET v = 9 WHERE id = 2")
    assert make_engine(script_location=folder).migrate().final == ("r2",)
    assert one(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ux_items_v'::regclass")


def test_the_apply_fails_a_revision_whose_concurrent_build_left_an_invalid_index(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN an INVALID index left by a failed build, and a hand-written revision building it
    # with IF NOT EXISTS (which finds the INVALID one and succeeds)
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, v int)'); "
              "op.execute('INSERT INTO items VALUES (1, 7), (2, 7)')",
        "r2": "with op.get_context().autocommit_block():\n        op.execute("
              "'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ux_items_v ON items (v)')",
    })
    make_engine(script_location=folder).migrate(target="r1")
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, pytest.raises(
            sa.exc.IntegrityError):
        conn.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY ux_items_v ON items (v)")
    # WHEN the revision runs, THEN it fails, naming the INVALID index, and does not count
    with pytest.raises(MigrationFailed, match="left the INVALID index ux_items_v on items"):
        make_engine(script_location=folder).migrate()
    assert version_rows(db) == ["r1"]


# -- constraints NOT VALID, then VALIDATE ----------------------------------------------------
def test_a_check_added_not_valid_checks_new_rows_and_validate_checks_the_old_ones(
    make_engine: EngineFactory, db: sa.Engine, database_url: str, tmp_path: Path,
) -> None:
    # GIVEN rows, one of which breaks the rule about to be added
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, v int)'); "
              "op.execute('INSERT INTO items SELECT g, g FROM generate_series(1, 2000) g'); "
              "op.execute('UPDATE items SET v = -1 WHERE id = 1'); " + SLOW_KEY,
        "r2": "from migration_resource.online import add_constraint_not_valid\n    "
              "add_constraint_not_valid(op, 'ck_items_v', 'items', check='slow_key(v) >= 0')",
        "r3": "from migration_resource.online import validate_constraint\n    "
              "validate_constraint(op, 'ck_items_v', 'items')",
    })
    # WHEN the constraint is added NOT VALID
    make_engine(script_location=folder).migrate(target="r2")
    # THEN the old row stays, a new bad row is refused
    assert one(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_items_v'") is False
    with pytest.raises(sa.exc.IntegrityError, match="ck_items_v"):
        execute(db, "INSERT INTO items VALUES (5000, -5)")
    # AND validating fails on the old row, leaving the constraint NOT VALID
    with pytest.raises(MigrationFailed, match="is violated by some row"):
        make_engine(script_location=folder).migrate()
    assert version_rows(db) == ["r2"]

    # WHEN the row is fixed and VALIDATE runs slowly (1 ms a row)
    execute(db, "UPDATE items SET v = 1 WHERE id = 1")
    name = sa.make_url(database_url).database
    execute(db, f'ALTER DATABASE "{name}" SET test.slow_ms = 1')
    runner, results = in_background(make_engine(script_location=folder).migrate)
    pid = work_session(db, "VALIDATE CONSTRAINT")
    # THEN it holds only SHARE UPDATE EXCLUSIVE on the table: writes go on meanwhile
    with db.connect() as conn:
        modes = set(conn.execute(sa.text(
            "SELECT mode FROM pg_locks WHERE pid = :pid AND relation = 'items'::regclass"
        ), {"pid": pid}).scalars())
    started = time.perf_counter()
    execute(db, "INSERT INTO items VALUES (6000, 6)", "UPDATE items SET v = 3 WHERE id = 3")
    wrote_in = time.perf_counter() - started
    runner.join(timeout=30)
    execute(db, f'ALTER DATABASE "{name}" RESET test.slow_ms')
    assert modes == {"ShareUpdateExclusiveLock"}
    assert wrote_in < 1.0 and results and not isinstance(results[0], BaseException)
    assert one(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_items_v'") is True


def test_a_foreign_key_added_not_valid_is_validated_later_and_each_step_can_run_again(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE owners (id bigint PRIMARY KEY)'); "
              "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, owner_id bigint)'); "
              "op.execute('INSERT INTO owners VALUES (1)'); "
              "op.execute('INSERT INTO items VALUES (1, 1), (2, NULL)')",
        "r2": "from migration_resource.online import add_constraint_not_valid\n    "
              "add_constraint_not_valid(op, 'fk_items_owner', 'items', columns=['owner_id'], "
              "references='owners', ondelete='SET NULL')\n    "
              "add_constraint_not_valid(op, 'fk_items_owner', 'items', columns=['owner_id'], "
              "references='owners', ondelete='SET NULL')",
        "r3": "from migration_resource.online import validate_constraint\n    "
              "validate_constraint(op, 'fk_items_owner', 'items')\n    "
              "validate_constraint(op, 'fk_items_owner', 'items')",
    })
    make_engine(script_location=folder).migrate()
    with db.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'fk_items_owner'").one()
    assert tuple(row) == (True, "FOREIGN KEY (owner_id) REFERENCES owners(id) ON DELETE SET NULL")


# -- unique constraints and rebuilds without the table's lock ------------------------------------
def test_a_unique_constraint_and_a_primary_key_take_an_index_built_concurrently(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN a table with rows and no key, and a revision using the helpers (each step twice:
    # a run that stopped midway runs them again)
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE accounts (id bigint NOT NULL, email text)'); "
              "op.execute(\"INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, "
              "500) g\")",
        "r2": "from migration_resource.online import add_unique_constraint, "
              "reindex_concurrently\n    "
              "add_unique_constraint(op, 'uq_accounts_email', 'accounts', ['email'])\n    "
              "add_unique_constraint(op, 'uq_accounts_email', 'accounts', ['email'])\n    "
              "add_unique_constraint(op, 'accounts_pkey', 'accounts', ['id'], primary_key=True)\n"
              "    add_unique_constraint(op, 'accounts_pkey', 'accounts', ['id'], "
              "primary_key=True)\n    reindex_concurrently(op, 'uq_accounts_email')",
    })
    make_engine(script_location=folder).migrate(target="r1")
    production = make_engine(script_location=folder, stage="production")
    # WHEN the production gate judges it, THEN it finds nothing: no lock rule is broken
    dry = production.dry_run()
    assert dry.ok and dry.findings == ()
    # AND it applies: both constraints stand on their indexes, and the revision resumes
    assert production.migrate().final == ("r2",)
    with db.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT conname, contype, (SELECT indisvalid FROM pg_index WHERE indexrelid = "
            "conindid) FROM pg_constraint WHERE conrelid = 'accounts'::regclass "
            "ORDER BY conname").all()
    assert [tuple(row) for row in found] == [("accounts_pkey", "p", True),
                                             ("uq_accounts_email", "u", True)]
    assert is_resumable(folder / "versions" / "r2.py")


def _interrupted_reindex(db: sa.Engine, index: str) -> None:
    """A REINDEX CONCURRENTLY cancelled while it waits for an older snapshot to end: what a
    run that dies midway leaves (an INVALID copy of the index)."""
    with db.connect() as reader:
        reader.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.exec_driver_sql("SELECT count(*) FROM items").scalar()

        def rebuild() -> None:
            with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"SET application_name = 'reindex-{index}'")
                conn.exec_driver_sql(f"REINDEX INDEX CONCURRENTLY {index}")

        thread, results = in_background(rebuild)
        deadline = time.monotonic() + 15
        while not one(db, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE "
                          f"application_name = 'reindex-{index}' AND wait_event_type = 'Lock'"):
            assert time.monotonic() < deadline, "the REINDEX never waited"
            time.sleep(0.02)
        thread.join(15)
        reader.rollback()
    assert isinstance(results[0], sa.exc.OperationalError)  # canceled


def test_reindex_concurrently_drops_what_interrupted_rebuilds_left_then_rebuilds(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    # GIVEN an index whose REINDEX CONCURRENTLY was interrupted twice
    folder = linear_history(tmp_path / "h", {
        "r1": "op.execute('CREATE TABLE items (id bigint PRIMARY KEY, v int)'); "
              "op.execute('INSERT INTO items SELECT g, g FROM generate_series(1, 100) g'); "
              "op.execute('CREATE INDEX ix_items_v ON items (v)')",
        "r2": "from migration_resource.online import reindex_concurrently\n    "
              "reindex_concurrently(op, 'ix_items_v')",
    })
    make_engine(script_location=folder).migrate(target="r1")
    _interrupted_reindex(db, "ix_items_v")
    _interrupted_reindex(db, "ix_items_v")
    invalid = "SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index " \
              "WHERE NOT indisvalid"
    assert one(db, invalid) == "ix_items_v_ccnew,ix_items_v_ccnew1"
    # WHEN the revision runs, THEN the leftovers are gone and the index is rebuilt, valid
    assert make_engine(script_location=folder).migrate().final == ("r2",)
    assert one(db, invalid) is None
    assert one(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_items_v'::regclass")


# -- the sample history's examples -----------------------------------------------------------
def test_the_sample_online_revisions_pass_the_production_gate_and_are_previewed(
    make_engine: EngineFactory, db: sa.Engine,
) -> None:
    # GIVEN the sample database before the online revisions, with users
    make_engine().migrate(target=CHECK_TASK_STATUS)
    execute(db, "INSERT INTO users (email, name) SELECT 'u' || g || '@Example.COM', 'u' "
                "FROM generate_series(1, 2500) g")
    production = make_engine(stage="production")

    # WHEN the dry run previews them under production's rules
    dry = production.dry_run(INDEX_EMAIL_DOMAIN)

    # THEN all render offline and the gate finds nothing, so no allow-destructive is needed
    assert dry.ok and dry.findings == ()
    assert [(p["revision"], p["source"]) for p in dry.plan or ()] == [
        (revision, "rendered") for revision in ONLINE_REVISIONS]
    # AND they apply: every user backfilled, the index valid, the constraint validated
    outcome = production.migrate(INDEX_EMAIL_DOMAIN)
    assert outcome.final == (INDEX_EMAIL_DOMAIN,)
    assert one(db, "SELECT count(*) FROM users WHERE email_domain = 'example.com'") == 2500
    assert one(db, "SELECT indisvalid FROM pg_index "
                   "WHERE indexrelid = 'ix_users_email_domain'::regclass") is True
    assert one(db, "SELECT convalidated FROM pg_constraint "
                   "WHERE conname = 'ck_users_email_domain_lowercase'") is True
    assert not progress_table_exists(db)


@pytest.mark.parametrize(("revision", "resumable"), [
    (BACKFILL_EMAIL_DOMAIN, True), (INDEX_EMAIL_DOMAIN, True), (VALIDATE_EMAIL_DOMAIN, False),
])
def test_a_revision_of_online_steps_alone_resumes_rather_than_blocks(
    revision: str, resumable: bool,
) -> None:
    (path,) = (REPO_ROOT / "alembic" / "versions").glob(f"*_{revision}_*.py")
    assert is_transactional(path)
    assert is_resumable(path) is resumable


def test_a_revision_mixing_online_steps_with_others_is_non_transactional(
    tmp_path: Path,
) -> None:
    folder = linear_history(tmp_path / "h", {
        "mixed": "op.add_column('items', sa.Column('x', sa.Integer()))\n    "
                 "from migration_resource.online import backfill\n    "
                 "backfill(op, table='items', set_='x = 1')",
        "plain": "from migration_resource.online import add_constraint_not_valid\n    "
                 "op.add_column('items', sa.Column('x', sa.Integer()))\n    "
                 "add_constraint_not_valid(op, 'ck', 'items', check='x > 0')",
    })
    mixed, plain = (folder / "versions" / f"{name}.py" for name in ("mixed", "plain"))
    assert not is_transactional(mixed) and not is_resumable(mixed)
    assert is_transactional(plain) and not is_resumable(plain)
