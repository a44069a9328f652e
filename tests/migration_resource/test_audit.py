"""Audit trail and checksums on real PostgreSQL: every action recorded, tampering visible,
failed non-transactional steps blocking until repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from migration_resource.audit import RunContext
from migration_resource.checksums import history_digest
from migration_resource.engine import MigrationEngine, MigrationFailed, MigrationRefused
from migration_resource.outcomes import ConfirmationRequired, UsageError
from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings
from tests.alembic.support import HEAD, REPO_ROOT
from tests.migration_resource.support import linear_history, version_rows

Synthetic = Callable[..., tuple[Path, list[str]]]
EngineFactory = Callable[..., MigrationEngine]


def audit_rows(db: sa.Engine) -> list[dict[str, object]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.exec_driver_sql(
            "SELECT * FROM migration_audit ORDER BY id").mappings()]


def change_a_statement(revision_file: Path) -> None:
    """What the revision does changes (the row it logs), not only how it is written."""
    text = revision_file.read_text()
    assert "INSERT INTO applied_log (revision) VALUES" in text
    revision_file.write_text(text.replace("(revision) VALUES (", "(revision) SELECT ("))


def test_every_applied_revision_is_recorded_with_its_checksum(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic
) -> None:
    folder, ids = synthetic(3)
    engine = make_engine(script_location=folder)
    context = RunContext(actor="deploy", request_id="req-123", snapshot_id="snap-1")
    engine.migrate(context=context)
    rows = audit_rows(db)
    assert [(r["action"], r["revision"], r["outcome"]) for r in rows] == [
        ("upgrade", revision, "succeeded") for revision in ids
    ]
    for row, revision in zip(rows, ids, strict=True):
        assert row["actor"] == "deploy" and row["request_id"] == "req-123"
        assert row["snapshot_id"] == "snap-1" and row["direction"] == "up"
        assert row["checksum"] == engine.catalogue.checksum(revision)
        assert row["finished_at"] >= row["started_at"]  # type: ignore[operator]
        assert row["duration_seconds"] is not None
    # the run that reached head records the history digest the deploy can compare
    assert rows[-1]["history_digest"] == history_digest(folder / "versions")
    status = engine.status()
    assert status.history is not None
    assert [h["revision"] for h in status.history] == list(reversed(ids))


def test_read_only_paths_never_create_the_audit_table(engine: MigrationEngine, db) -> None:
    engine.status()
    engine.dry_run()
    engine.history()
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('migration_audit')").scalar() is None


def test_an_edited_applied_revision_is_a_checksum_mismatch_until_realigned(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN a history applied up to revision 2 of 3
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate(ids[1])
    # WHEN someone changes a statement of revision 1 after it ran
    change_a_statement(next((folder / "versions").glob(f"*_{ids[0]}.py")))
    engine = make_engine(script_location=folder)
    # THEN the state is inconsistent, naming the revision, and nothing runs
    classification = engine.status().classification
    assert classification.state == "inconsistent"
    assert classification.cause == "checksum_mismatch"
    assert f"revision {ids[0]} was edited after it was applied" in classification.detail
    with pytest.raises(MigrationRefused, match=r"^inconsistent: checksum mismatch"):
        engine.migrate()
    assert version_rows(db) == [ids[1]]
    # AND repair needs confirmation, then realigns and records it
    with pytest.raises(ConfirmationRequired):
        engine.repair(confirm=False, realign_checksums=True)
    outcome = engine.repair(confirm=True, realign_checksums=True)
    assert outcome.message == f"Repair: realigned the checksum of {ids[0]}"
    assert audit_rows(db)[-1]["action"] == "repair"
    assert engine.migrate().final == (ids[2],)


def test_the_deploy_fast_path_notices_an_edit_through_the_history_digest(
    make_engine: EngineFactory, synthetic: Synthetic
) -> None:
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    digest = history_digest(folder / "versions")
    fast = make_engine(script_location=folder)
    assert fast.migrate(target_heads=(ids[-1],), history_digest=digest).applied == ()
    assert not fast.scripts_loaded  # decided without the scripts
    change_a_statement(next((folder / "versions").glob(f"*_{ids[1]}.py")))
    engine = make_engine(script_location=folder)
    with pytest.raises(MigrationRefused, match=f"revision {ids[1]} was edited"):
        engine.migrate(target_heads=(ids[-1],), history_digest=history_digest(folder / "versions"))


def test_revisions_applied_before_the_trail_are_adopted(
    make_engine: EngineFactory, db: sa.Engine, database_url: str
) -> None:
    # GIVEN a database migrated by plain alembic to revision 2, before this product
    with db.connect() as conn:
        config = alembic_config(REPO_ROOT / "alembic")
        config.attributes["connection"] = conn
        command.upgrade(config, "e77ec3fef45a")
    # WHEN the engine migrates it to head
    make_engine().migrate()
    # THEN the two earlier revisions got their checksums recorded as adopted
    rows = audit_rows(db)
    assert [(r["action"], r["revision"]) for r in rows[:2]] == [
        ("adopt", "741c2c5d4584"), ("adopt", "e77ec3fef45a"),
    ]
    assert rows[-1]["revision"] == HEAD


def test_a_failed_non_transactional_revision_blocks_until_resolved(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN revision 2 of 3 runs outside a transaction and fails after writing
    folder, ids = synthetic(3, fail_at=2, non_transactional_at=2)
    engine = make_engine(script_location=folder)
    with pytest.raises(MigrationFailed, match="may be partly applied"):
        engine.migrate()
    # its partial write stayed: exactly the danger the block is for
    with db.connect() as conn:
        logged = conn.exec_driver_sql("SELECT revision FROM applied_log ORDER BY 1").scalars()
        assert sorted(logged) == sorted(ids[:2])
    # THEN every further run is refused with the way out
    classification = engine.status().classification
    assert classification.state == "inconsistent" and classification.cause == "failed_run"
    with pytest.raises(MigrationRefused, match="repair --resolve"):
        engine.migrate()
    # WHEN an operator undoes the partial write and resolves the failure as rolled back
    with db.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM applied_log WHERE revision = '{ids[1]}'")
    with pytest.raises(UsageError):
        engine.repair(confirm=True, resolve="rolled-back")
    engine.repair(confirm=True, resolve="rolled-back", revision=ids[1])
    # THEN the next run is allowed again (and fails again, since the script still fails)
    assert engine.status().classification.state == "pending_migrations"
    rows = audit_rows(db)
    assert rows[-1]["action"] == "repair" and "rolled back" in str(rows[-1]["detail"])
    assert any(r["resolved"] for r in rows)


def test_a_run_killed_inside_a_non_transactional_step_blocks_further_runs(
    database_url: str, make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN a run whose second revision sleeps inside an autocommit block
    folder, ids = synthetic(3, sleep_seconds=30, sleep_at=2, non_transactional_at=2)
    cli = REPO_ROOT / "scripts" / "remote_admin.py"
    env = {**os.environ, "DATABASE_URL": database_url, "ALEMBIC_SCRIPT_LOCATION": str(folder)}
    process = subprocess.Popen([sys.executable, str(cli), "--confirm", "run-migrations"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until_running(db, ids[1])
    finally:
        # WHEN the process dies there, as a Lambda that times out would
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    _wait_until_sessions_end(db)
    # THEN the next run settles the evidence and refuses to go on
    engine = make_engine(script_location=folder)
    with pytest.raises(MigrationRefused, match=f"revision {ids[1]} is running, or its run died"):
        engine.migrate()
    # AND resolving it as applied (completed by hand) settles the row, stamps and unblocks
    engine.repair(confirm=True, resolve="applied", revision=ids[1])
    row = next(r for r in audit_rows(db) if r["revision"] == ids[1])
    assert row["outcome"] == "failed" and "non-transactional" in str(row["detail"])
    assert row["resolved"] is True
    assert version_rows(db) == [ids[1]]
    assert engine.migrate().final == (ids[2],)


def _wait_until_running(db: sa.Engine, revision: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while time.monotonic() < deadline:
            exists = conn.exec_driver_sql("SELECT to_regclass('migration_audit')").scalar()
            if exists and conn.exec_driver_sql(
                "SELECT count(*) FROM migration_audit WHERE outcome = 'running' "
                f"AND revision = '{revision}'"
            ).scalar():
                return
            conn.rollback()
            time.sleep(0.05)
    raise AssertionError(f"revision {revision} never started")


def _wait_until_sessions_end(db: sa.Engine, timeout: float = 10) -> None:
    """The server notices the dead client's sessions (and drops its lock) shortly after."""
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while time.monotonic() < deadline:
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'db-migrations/%%' "
                "AND pid <> pg_backend_pid()"
            ).scalar()
            conn.rollback()
            if not left:
                return
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'db-migrations/%%' AND pid <> pg_backend_pid()"
            )
            conn.commit()
            time.sleep(0.1)
    raise AssertionError("the killed run's sessions are still open")


def test_a_run_on_psycopg_3_writes_its_audit_rows(database_url: str, tmp_path: Path) -> None:
    # GIVEN the engine on psycopg 3 (an explicit postgresql+psycopg:// URL)
    url = sa.make_url(database_url).set(drivername="postgresql+psycopg")
    folder = linear_history(tmp_path / "h", {"p1": "op.execute('CREATE TABLE p (id int)')"})
    engine = MigrationEngine(EngineSettings(database_url=url, script_location=folder))
    try:
        # WHEN it migrates, THEN the trail is made and the revision's row written
        assert engine.migrate().final == ("p1",)
    finally:
        engine.close()
    db = sa.create_engine(database_url, poolclass=sa.NullPool)
    with db.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT revision, outcome FROM migration_audit WHERE revision = 'p1'").all() == [
            ("p1", "succeeded")]
    db.dispose()
