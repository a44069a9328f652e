"""Code rollbacks and edited revisions, on real PostgreSQL.

A rolled-back release's scripts lack the revisions a newer release applied: the audit trail's
record of what each applied revision stands on tells `ahead` (serve, change nothing) from a
revision nobody can account for (`inconsistent`). Formatting an applied revision changes
nothing; changing what it does is refused, and repairable from the release carrying the edit.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource import auto_migrate
from migration_resource.checksums import file_checksum, history_digest
from migration_resource.engine import MigrationEngine, MigrationFailed, MigrationRefused
from tests.migration_resource.support import execute, linear_history, relations, version_rows

EngineFactory = Callable[..., MigrationEngine]
Synthetic = Callable[..., tuple[Path, list[str]]]


@pytest.fixture(autouse=True)
def container() -> Iterator[None]:
    """Each test is a new application container."""
    auto_migrate.reset()
    yield
    auto_migrate.reset()


def release_without(folder: Path, ids: list[str], count: int, into: Path) -> Path:
    """The previous release's scripts: the same history without its last `count` revisions."""
    shutil.copytree(folder, into)
    for revision in ids[len(ids) - count:]:
        for path in (into / "versions").glob(f"*_{revision}.py"):
            path.unlink()
    return into


def serve(engine_factory: Callable[[], MigrationEngine]) -> auto_migrate.AutoMigrateResult:
    return auto_migrate.ensure_schema(engine_factory, env={"AUTO_MIGRATE": "true"})


@pytest.mark.parametrize("rolled_back", [1, 3])
def test_a_code_rollback_sees_ahead_changes_nothing_and_serves(  # noqa: PLR0917 - fixtures
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, rolled_back: int,
) -> None:
    # GIVEN release N+1 migrated the database to its head
    folder, ids = synthetic(5)
    make_engine(script_location=folder).migrate()
    # WHEN release N (without the last revisions) runs again, as a CloudFormation rollback or a
    # redeploy of the previous release does
    previous = release_without(folder, ids, rolled_back, tmp_path / "previous")
    engine = make_engine(script_location=previous)
    status = engine.status().classification
    # THEN the database is ahead by exactly the newer revisions, in the order they ran
    assert status.state == "ahead"
    assert status.newer == tuple(ids[-rolled_back:])
    assert f"{rolled_back} of them defined by no script here" in status.detail
    # AND a deploy changes nothing and succeeds
    outcome = engine.migrate(target_heads=(ids[-rolled_back - 1],))
    assert outcome.ok and outcome.applied == ()
    assert version_rows(db) == [ids[-1]]
    # AND the old application serves, naming the newer revisions
    caplog.set_level(logging.WARNING, logger="migration_resource.auto_migrate")
    result = serve(lambda: make_engine(script_location=previous))
    assert result.serve and result.state == "ahead"
    assert f"newer revisions: {', '.join(ids[-rolled_back:])}" in result.message
    assert version_rows(db) == [ids[-1]]


def test_a_destructive_newer_revision_makes_the_warning_louder(
    make_engine: EngineFactory, db: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a release whose last revision dropped a column, applied where that is allowed
    folder = linear_history(tmp_path / "h", {
        "a1": 'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),\n'
              '                    sa.Column("legacy", sa.Text))',
        "a2": 'op.drop_column("items", "legacy")',
    })
    # (in two deploys: a drop of a table the same deploy created is not destructive)
    make_engine(script_location=folder).migrate("a1")
    make_engine(script_location=folder).migrate()
    (folder / "versions" / "a2.py").unlink()
    # WHEN the previous release's application starts
    caplog.set_level(logging.WARNING, logger="migration_resource.auto_migrate")
    result = serve(lambda: make_engine(script_location=folder))
    # THEN it serves, and says loudly that the newer revision was destructive
    assert result.serve
    assert "The newer revisions a2 were destructive" in result.message
    assert any(r.levelno == logging.ERROR and "a2 were destructive" in r.getMessage()
               for r in caplog.records)


def test_a_revision_nobody_recorded_stays_inconsistent(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic,
) -> None:
    folder, _ = synthetic(3)
    engine = make_engine(script_location=folder)
    engine.migrate()
    execute(db, "UPDATE alembic_version SET version_num = 'f00dfeed'")
    status = engine.status().classification
    assert status.state == "inconsistent" and status.cause == "unknown_revision"
    assert "no script defines it, no audit row traces its ancestry" in status.detail
    with pytest.raises(MigrationRefused, match=r"^inconsistent: alembic_version holds 'f00dfeed'"):
        engine.migrate()
    result = serve(lambda: make_engine(script_location=folder))
    assert not result.serve


def test_an_audit_trail_written_before_ancestry_was_recorded_is_filled_in(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, tmp_path: Path,
) -> None:
    # GIVEN a database migrated by an earlier engine: no ancestry columns, file checksums
    folder, ids = synthetic(4)
    make_engine(script_location=folder).migrate()
    execute(db, "ALTER TABLE migration_audit DROP COLUMN parents, DROP COLUMN destructive")
    for revision in ids:
        path = next((folder / "versions").glob(f"*_{revision}.py"))
        execute(db, f"UPDATE migration_audit SET checksum = '{file_checksum(path)}' "
                    f"WHERE revision = '{revision}'")
    previous = release_without(folder, ids, 1, tmp_path / "previous")
    # THEN a rollback before anything was recorded cannot be told from a stray revision
    assert make_engine(script_location=previous).status().classification.cause == (
        "unknown_revision")
    # WHEN the release that defines every revision deploys (up to date: bookkeeping only)
    current = make_engine(script_location=folder)
    assert current.status().classification.needs_bookkeeping
    outcome = current.migrate()
    assert outcome.applied == () and version_rows(db) == [ids[-1]]
    assert not make_engine(script_location=folder).status().classification.needs_bookkeeping
    # THEN the rollback afterwards is ahead, and nothing was guessed: the ancestry is the scripts'
    assert make_engine(script_location=previous).status().classification.state == "ahead"
    with db.connect() as conn:
        recorded = dict(conn.exec_driver_sql(
            "SELECT DISTINCT ON (revision) revision, parents FROM migration_audit "
            "WHERE revision IS NOT NULL AND parents IS NOT NULL ORDER BY revision, id DESC"
        ).all())
    assert recorded == {ids[0]: "", **{ids[i]: ids[i - 1] for i in range(1, 4)}}


FORMATTINGS: dict[str, Callable[[Path], None]] = {
    "comment": lambda p: p.write_text(p.read_text().replace(
        "def upgrade()", "# reviewed in PR 1234\ndef upgrade()")),
    "blank lines": lambda p: p.write_text(p.read_text().replace("\n\n", "\n\n\n\n")),
    "crlf": lambda p: p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n")),
    "ruff format": lambda p: subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--line-length", "60", str(p)],
        check=True),
}


@pytest.mark.parametrize("how", list(FORMATTINGS))
def test_formatting_an_applied_revision_keeps_the_database_up_to_date(
    make_engine: EngineFactory, synthetic: Synthetic, how: str,
) -> None:
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    path = next((folder / "versions").glob(f"*_{ids[1]}.py"))
    before = path.read_bytes()
    FORMATTINGS[how](path)
    assert path.read_bytes() != before
    assert make_engine(script_location=folder).status().classification.state == "up_to_date"


def test_an_edited_statement_is_refused_and_repaired_from_the_release_that_carries_it(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, tmp_path: Path,
) -> None:
    # GIVEN release N applied, then release N+1 changes a statement of an applied revision
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    edited = tmp_path / "next"
    shutil.copytree(folder, edited)
    path = next((edited / "versions").glob(f"*_{ids[0]}.py"))
    path.write_text(path.read_text().replace("(revision) VALUES (", "(revision) SELECT ("))
    engine = make_engine(script_location=edited)
    # THEN its deploy is refused, nothing changes ...
    status = engine.status().classification
    assert status.state == "inconsistent" and status.cause == "checksum_mismatch"
    with pytest.raises(MigrationRefused, match="checksum mismatch"):
        engine.migrate()
    # ... but its application serves: the schema is the one its code expects
    result = serve(lambda: make_engine(script_location=edited))
    assert result.serve and result.state == "inconsistent"
    assert "serving, as the schema is at this code's revision" in result.message
    # AND the repair runs from release N+1 (the bundle that carries the edit)
    engine.repair(confirm=True, realign_checksums=True)
    assert make_engine(script_location=edited).status().classification.state == "up_to_date"
    assert version_rows(db) == [ids[-1]]


def test_a_deploy_after_an_engine_upgrade_records_the_digest_once(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic,
) -> None:
    # GIVEN a database whose recorded history digest an earlier engine computed differently
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    execute(db, "UPDATE migration_audit SET history_digest = repeat('a', 64) "
                "WHERE history_digest IS NOT NULL")
    digest = history_digest(folder / "versions")
    # WHEN two no-change deploys run
    first = make_engine(script_location=folder)
    assert first.migrate(target_heads=(ids[-1],), history_digest=digest).applied == ()
    second = make_engine(script_location=folder)
    assert second.migrate(target_heads=(ids[-1],), history_digest=digest).applied == ()
    # THEN the first read the scripts and recorded the digest; the second did not need them
    assert first.scripts_loaded and not second.scripts_loaded


def test_a_downgrade_from_a_release_that_lacks_the_revision_is_refused_cleanly(
    make_engine: EngineFactory, db: sa.Engine, synthetic: Synthetic, tmp_path: Path,
) -> None:
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    previous = release_without(folder, ids, 1, tmp_path / "previous")
    with pytest.raises(MigrationRefused, match=r"^ahead: the database is at .*only the release"):
        make_engine(script_location=previous).downgrade(ids[1], confirm=True)
    assert version_rows(db) == [ids[-1]]


def branchy_history(folder: Path, downgrade_body: str = "pass") -> Path:
    """b0 → (a1 | c1) → m1: two branches merged; a1 and c1 each create a table."""
    from localdev.history_env import write_script_directory  # noqa: PLC0415

    write_script_directory(folder)
    revisions = {
        "b0": ("None", 'op.create_table("base_t", sa.Column("id", sa.Integer, primary_key=True))',
               "pass"),
        "a1": ("'b0'", 'op.create_table("left_t", sa.Column("id", sa.Integer, primary_key=True))',
               'op.drop_table("left_t")'),
        "c1": ("'b0'", 'op.create_table("right_t", sa.Column("id", sa.Integer, primary_key=True))',
               downgrade_body),
        "m1": ("('a1', 'c1')", "pass", "pass"),
    }
    for revision, (down, up, back) in revisions.items():
        (folder / "versions" / f"{revision}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down}\n\n\n"
            f"def upgrade() -> None:\n    {up}\n\n\ndef downgrade() -> None:\n    {back}\n")
    return folder


def test_a_downgrade_to_one_parent_of_a_merge_is_refused_before_it_starts(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a database at the merge of two branches, each with its table
    engine = make_engine(script_location=branchy_history(tmp_path / "h"))
    engine.migrate()
    before = relations(db)
    # WHEN a downgrade to one parent is asked: it would revert the other branch too
    with pytest.raises(MigrationRefused) as refused:
        engine.downgrade("a1", confirm=True)
    # THEN it is refused naming that branch, and nothing was reverted
    assert "would also revert c1, on a branch that does not descend from a1" in str(
        refused.value)
    assert relations(db) == before and version_rows(db) == ["m1"]
    # AND the revision both branches descend from is a target
    engine.downgrade("b0", confirm=True)
    assert version_rows(db) == ["b0"]


def test_a_failed_downgrade_speaks_of_reverts(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    scripts = branchy_history(tmp_path / "h", downgrade_body='raise RuntimeError("no way back")')
    engine = make_engine(script_location=scripts)
    engine.migrate()
    with pytest.raises(MigrationFailed) as failed:
        engine.downgrade("b0", confirm=True)
    message = str(failed.value)
    assert "failed to revert after reverting" in message
    assert "Reverted before it in this run: m1" in message
    assert "Fix its downgrade() and run the downgrade again" in message
    assert "committed" not in message.lower()
