"""Faults made for real against PostgreSQL: sessions terminated by the server, a migrating
process killed, the server restarted, a parameter group's idle_session_timeout, a deferred
constraint failing at COMMIT.

For each: what the engine reports, the state after, every revision applied at most once
(each synthetic revision logs itself in `applied_log` inside its own transaction), and rows
intact. The product's sessions are found by their application names
(`db-migrations/<actor>/<role>`), as an operator finds them in pg_stat_activity.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from localdev.postgres import LocalPostgres, free_port
from migration_resource.audit import RunContext
from migration_resource.dsn import normalize_url
from migration_resource.engine import MigrationEngine, MigrationFailed
from migration_resource.settings import EngineSettings
from tests.migration_resource.support import execute, linear_history, version_rows

EngineFactory = Callable[..., MigrationEngine]
Synthetic = Callable[..., tuple[Path, list[str]]]
REPO_ROOT = Path(__file__).resolve().parents[2]
# What each fault test measured, printed at the end of the module (docs/RUNBOOK.md's fault
# table quotes it): `pytest tests/migration_resource/test_faults.py -s`.
MEASURED: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def fault_report() -> Iterator[None]:
    yield
    if MEASURED:
        print("\nMeasured under faults:")
        for fault, figure in MEASURED:
            print(f"  {fault}: {figure}")


def applied_log(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT revision FROM applied_log ORDER BY applied_at").scalars())


def wait_for_session(db: sa.Engine, name_pattern: str, *, running: str = "pg_sleep",
                     timeout: float = 10) -> int:
    """The pid of the product's session named so, once it runs `running`."""
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE :name "
                "AND strpos(query, :running) > 0 AND state = 'active'"
            ), {"name": name_pattern, "running": running}).scalar()
            conn.rollback()
            if pid:
                return int(pid)
            time.sleep(0.05)
    raise AssertionError(f"no session {name_pattern} running {running}")


def terminate(db: sa.Engine, pid: int) -> None:
    with db.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()


def test_terminating_the_working_session_stops_the_run_and_frees_the_lock(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic,
) -> None:
    # GIVEN three revisions, the second slow
    folder, ids = synthetic(3, sleep_seconds=3, sleep_at=2)
    results: list[BaseException | object] = []

    def run() -> None:
        try:
            results.append(make_engine(script_location=folder).migrate())
        except BaseException as error:
            results.append(error)

    first = threading.Thread(target=run)
    first.start()
    # WHEN the session running revision 2 (the one holding the lock) is terminated
    pid = wait_for_session(db, "db-migrations/%/work")
    terminate(db, pid)
    first.join(timeout=30)
    # AND a second migrator starts right away
    second = make_engine(script_location=folder).migrate()
    # THEN the first run reports revision 2's own failure and the state, not a lost lock
    (failure,) = results
    assert isinstance(failure, MigrationFailed), failure
    message = str(failure)
    assert message.startswith(f"empty: revision {ids[1]} (00002_{ids[1]}.py) failed after 1 of 3")
    # psycopg2 reports the closed connection, psycopg 3 the server's reason for closing it
    assert ("server closed the connection unexpectedly" in message
            or "terminating connection due to administrator command" in message)
    assert f"The database is at revision {ids[0]}" in message
    # AND the second applied the rest; every revision ran exactly once
    assert [a.revision for a in second.applied] == ids[1:]
    MEASURED.append(("working session terminated", f"second migrator done in "
                     f"{second.seconds:.2f} s, each revision applied once"))
    assert applied_log(db) == ids
    assert version_rows(db) == [ids[-1]]


def test_terminating_the_audit_session_mid_revision_does_not_fail_the_migration(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic,
) -> None:
    folder, ids = synthetic(3, sleep_seconds=2, sleep_at=2)
    results: list[object] = []
    runner = threading.Thread(
        target=lambda: results.append(make_engine(script_location=folder).migrate()))
    runner.start()
    wait_for_session(db, "db-migrations/%/work")
    with db.connect() as conn:
        audit = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'db-migrations/%%/audit'"
        ).scalar()
    assert audit is not None
    terminate(db, int(audit))
    runner.join(timeout=30)
    (outcome,) = results
    assert [a.revision for a in outcome.applied] == ids  # type: ignore[attr-defined]
    with db.connect() as conn:
        outcomes = conn.exec_driver_sql(
            "SELECT revision, outcome FROM migration_audit WHERE action = 'upgrade' ORDER BY id"
        ).all()
    assert [tuple(row) for row in outcomes] == [(r, "succeeded") for r in ids]


def test_an_idle_session_timeout_shorter_than_a_revision_closes_none_of_ours(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, database_url: str,
) -> None:
    # GIVEN a parameter group's idle_session_timeout of 1 s and a revision of 2.5 s
    name = sa.make_url(database_url).database
    execute(db, f'ALTER DATABASE "{name}" SET idle_session_timeout = \'1s\'')
    folder, ids = synthetic(2, sleep_seconds=2.5, sleep_at=2)
    # WHEN it is applied (the audit and lock connections sit idle meanwhile)
    outcome = make_engine(script_location=folder).migrate()
    # THEN it completes
    assert [a.revision for a in outcome.applied] == ids


DEFERRED = {
    "d1": 'op.execute("CREATE TABLE parents (id int PRIMARY KEY)")\n'
          '    op.execute("CREATE TABLE children (id int PRIMARY KEY, parent_id int '
          'REFERENCES parents DEFERRABLE INITIALLY DEFERRED)")',
    # The insert is accepted; the foreign key is checked at COMMIT, and fails there.
    "d2": 'op.execute("INSERT INTO children VALUES (1, 42)")',
    "d3": 'op.execute("CREATE TABLE after_the_failure (id int)")',
}


def test_a_deferred_constraint_failing_at_commit_is_blamed_on_its_revision(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path,
) -> None:
    folder = linear_history(tmp_path / "h", DEFERRED)
    engine = make_engine(script_location=folder)
    with pytest.raises(MigrationFailed) as failure:
        engine.migrate()
    message = str(failure.value)
    assert message.startswith("empty: revision d2 (d2.py) failed after 1 of 3")
    assert "ForeignKeyViolation" in message or "foreign key" in message
    assert "The database is at revision d1" in message
    with db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT revision, outcome FROM migration_audit WHERE action = 'upgrade' ORDER BY id"
        ).all()
    # d1 succeeded (after its COMMIT), d2 failed, d3 never started
    assert [tuple(row) for row in rows] == [("d1", "succeeded"), ("d2", "failed")]
    status = engine.status().classification
    assert status.state == "pending_migrations" and status.pending == ("d2", "d3")


KILLED_RUN = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from migration_resource.dsn import normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
MigrationEngine(EngineSettings(database_url=normalize_url({url!r}),
                               script_location=Path({folder!r}))).migrate()
"""


def test_a_killed_migrating_process_leaves_no_statement_running(
    db: sa.Engine, synthetic: Synthetic, database_url: str,
) -> None:
    # GIVEN a migrating process inside a 20 s statement
    folder, ids = synthetic(2, sleep_seconds=20, sleep_at=2)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN.format(root=str(REPO_ROOT), url=database_url,
                                                 folder=str(folder))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        pid = wait_for_session(db, "db-migrations/%/work", timeout=20)
        # WHEN it is killed (as a Lambda that times out is)
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        # THEN the server ends its statement within about a second, and its lock with it
        with db.connect() as conn:
            while conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                               {"p": pid}).scalar():
                conn.rollback()
                assert time.monotonic() - killed < 3, "the orphaned statement is still running"
                time.sleep(0.05)
        MEASURED.append(("kill -9 of a migrating process",
                         f"orphaned statement gone after {time.monotonic() - killed:.2f} s"))
    finally:
        process.kill()
        process.wait()
    assert version_rows(db) == [ids[0]]
    assert applied_log(db) == ids[:1]


@pytest.fixture
def own_server() -> Iterator[LocalPostgres]:
    """A server of this test's own: it is restarted mid-revision."""
    base = Path(tempfile.mkdtemp(prefix="pgrestart-"))
    base.chmod(0o755)
    server = LocalPostgres(data_dir=base / "data", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_server_restart_mid_revision_reports_the_revision_and_the_state(
    own_server: LocalPostgres, synthetic: Synthetic,
) -> None:
    folder, ids = synthetic(3, sleep_seconds=3, sleep_at=2)
    url = own_server.url
    engine = MigrationEngine(EngineSettings(database_url=normalize_url(url),
                                            script_location=folder, connect_attempts=4))
    results: list[BaseException | object] = []

    def run() -> None:
        try:
            results.append(engine.migrate())
        except BaseException as error:
            results.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    observer = sa.create_engine(url, poolclass=sa.NullPool)
    wait_for_session(observer, "db-migrations/%/work")
    observer.dispose()
    own_server.stop()
    own_server.start()
    runner.join(timeout=60)
    (failure,) = results
    assert isinstance(failure, MigrationFailed), failure
    message = str(failure)
    assert message.startswith(f"empty: revision {ids[1]} ")
    assert failure.classification is not None and failure.classification.state == "empty"
    assert f"The database is at revision {ids[0]}" in message
    # AND the next run finishes the job, each revision once
    after = MigrationEngine(EngineSettings(database_url=normalize_url(url),
                                           script_location=folder)).migrate()
    assert [a.revision for a in after.applied] == ids[1:]
    check = sa.create_engine(url, poolclass=sa.NullPool)
    assert applied_log(check) == ids
    check.dispose()


LOCKED_TABLE = {
    "t1": 'op.execute("CREATE TABLE items (id int PRIMARY KEY)")\n'
          '    op.execute("INSERT INTO items VALUES (1), (2)")',
    "t2": 'op.execute("ALTER TABLE items ADD COLUMN note text")',
}


@pytest.fixture
def lockable(tmp_path: Path, make_engine: EngineFactory) -> Path:
    folder = linear_history(tmp_path / "locked", LOCKED_TABLE)
    make_engine(script_location=folder).migrate("t1")
    return folder


@pytest.fixture
def app_transaction(database_url: str) -> Iterator[sa.Connection]:
    """An application session inside a transaction that read the table (ACCESS SHARE)."""
    app = sa.create_engine(database_url, poolclass=sa.NullPool,
                           connect_args={"application_name": "orders-api"})
    connection = app.connect()
    connection.exec_driver_sql("SELECT count(*) FROM items").scalar()
    yield connection
    connection.close()
    app.dispose()


def test_a_held_table_lock_is_waited_for_briefly_retried_and_named(
    make_engine: EngineFactory, db: sa.Engine, lockable: Path, app_transaction: sa.Connection,
) -> None:
    # GIVEN an application transaction holding a lock on items, and a revision altering it
    engine = make_engine(script_location=lockable, lock_timeout_seconds=1, lock_retries=1)
    with db.connect() as conn:
        app_pid = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'orders-api'").scalar()
    # WHEN the migration runs
    started = time.monotonic()
    with pytest.raises(MigrationFailed) as failure:
        engine.migrate()
    took = time.monotonic() - started
    MEASURED.append(("table lock never released", f"refused after {took:.2f} s "
                     "(2 tries of 1 s, 1 s backoff), naming the holder"))
    # THEN it waited 1 s twice (one retry after 1 s), let go, and named the blocking session
    assert 3 <= took < 8
    message = str(failure.value)
    assert message.startswith("pending_migrations: revision t2 (t2.py) failed after 0 of 1")
    assert "lock timeout" in message
    assert f"waited for a table lock 2 times, 1 s each; it is held by pid {app_pid}" in message
    assert "application 'orders-api', idle in transaction since 20" in message
    assert "running 'SELECT count(*) FROM items'" in message
    assert "Retry when that session has finished, or end it" in message
    assert version_rows(db) == ["t1"]


def test_a_table_lock_released_meanwhile_lets_the_retry_succeed_and_apps_wait_briefly(
    make_engine: EngineFactory, db: sa.Engine, lockable: Path, app_transaction: sa.Connection,
    database_url: str,
) -> None:
    engine = make_engine(script_location=lockable, lock_timeout_seconds=1, lock_retries=3)
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.append(engine.migrate()))
    runner.start()
    # WHILE the ALTER waits for its lock, another application query on the table queues
    wait_for_session(db, "db-migrations/%/work", running="ALTER TABLE")
    reader = sa.create_engine(database_url, poolclass=sa.NullPool)
    started = time.monotonic()
    with reader.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM items").scalar()
    blocked = time.monotonic() - started
    reader.dispose()
    # THEN it waited at most about the lock timeout (1 s), not the migration timeout
    assert blocked < 2
    MEASURED.append(("table lock held by the application",
                     f"an application query behind the waiting ALTER blocked {blocked:.2f} s "
                     "(lock timeout 1 s)"))
    # WHEN the application transaction ends
    app_transaction.rollback()
    runner.join(timeout=30)
    # THEN a retry applied the revision, once, and the audit trail says what happened
    (outcome,) = results
    assert [a.revision for a in outcome.applied] == ["t2"]  # type: ignore[attr-defined]
    with db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT outcome, detail FROM migration_audit WHERE revision = 't2' ORDER BY id"
        ).all()
    assert rows[-1][0] == "succeeded"
    assert len(rows) >= 2, rows
    # (the holder may have let go by the time the engine looks: it says so)
    assert all(o == "failed" and "lock timeout, held by " in d for o, d in rows[:-1]), rows


def test_twenty_migrators_at_once_apply_each_revision_exactly_once(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, database_url: str,
) -> None:
    # GIVEN eight operators' CLI runs and twelve auto-migrating containers, started together
    folder, ids = synthetic(6, sleep_seconds=0.2)
    env = {**os.environ, "DATABASE_URL": database_url, "ALEMBIC_SCRIPT_LOCATION": str(folder),
           "MIGRATION_LOCK_WAIT": "60"}
    cli = [subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "remote_admin.py"), "--confirm",
         "run-migrations"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True) for _ in range(8)]
    outcomes: list[object] = []
    containers = [threading.Thread(target=lambda: outcomes.append(
        make_engine(script_location=folder, lock_wait_seconds=60).migrate(
            context=RunContext(actor="auto-migrate")))) for _ in range(12)]
    for container in containers:
        container.start()
    for container in containers:
        container.join(timeout=120)
    errors = [process.communicate(timeout=120)[1] for process in cli]
    # THEN all twenty succeeded, each revision ran exactly once, in order
    assert [process.returncode for process in cli] == [0] * 8, errors
    assert len(outcomes) == 12
    assert applied_log(db) == ids
    assert version_rows(db) == [ids[-1]]
    applied = sum(len(o.applied) for o in outcomes)  # type: ignore[attr-defined]
    assert applied in (0, len(ids))  # the containers together applied all or none of them
    MEASURED.append(("20 migrators at once", "each revision applied once"))


def test_a_run_short_of_time_stops_between_revisions_and_the_next_one_goes_on(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic,
) -> None:
    # GIVEN a run with 30 s left before the first revision and 21 s before the second, while a
    # revision may need 2 s (MIGRATION_TIMEOUT) + 20 s
    folder, ids = synthetic(3)
    engine = make_engine(script_location=folder, migration_timeout_seconds=2)
    left = iter([30.0])
    engine.time_left = lambda: next(left, 21.0)
    # WHEN it migrates
    outcome = engine.migrate()
    # THEN it applied the first revision and stopped cleanly before the second
    assert not outcome.complete and outcome.ok
    assert [a.revision for a in outcome.applied] == ids[:1]
    assert f"stopped before {ids[1]} with 21 s left" in outcome.message
    assert version_rows(db) == [ids[0]]
    # AND the next run (a new Lambda run) applies the rest, each revision once
    rest = make_engine(script_location=folder).migrate()
    assert rest.complete and [a.revision for a in rest.applied] == ids[1:]
    assert applied_log(db) == ids
    with db.connect() as conn:
        started = conn.exec_driver_sql(
            "SELECT count(*) FROM migration_audit WHERE action = 'upgrade'").scalar()
    assert started == 3  # the revision it stopped before was never started
