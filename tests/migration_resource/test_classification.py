"""Each of the six states produced for real on PostgreSQL, and classified."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from migration_resource.engine import MigrationEngine
from migration_resource.revisions import ScriptsError
from migration_resource.states import DIVERGED, OVERLAPPING_REVISIONS, UNKNOWN_REVISION
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    AFTER_CHECK_TASK_STATUS,
    BACKFILL_DISPLAY_NAME,
    CHECK_TASK_STATUS,
    HEAD,
    INDEX_TASKS,
    ORDER,
)
from tests.migration_resource.support import SAMPLE_SCRIPTS, execute

ALL = ORDER


def test_empty_database_has_every_revision_pending(engine: MigrationEngine) -> None:
    outcome = engine.status()
    assert outcome.classification.state == "empty"
    assert outcome.classification.current == ()
    assert outcome.classification.target == (HEAD,)
    assert outcome.classification.pending == ALL


def test_version_table_without_rows_and_no_tables_is_empty(engine, db) -> None:
    execute(db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    assert engine.status().classification.state == "empty"


def test_tables_without_alembic_version(engine, db) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    execute(db, "DROP TABLE alembic_version")
    classification = engine.status().classification
    assert classification.state == "tables_without_migration_history"
    assert classification.application_tables == ("projects", "tasks", "users")
    assert "alembic_version is missing" in classification.detail


def test_tables_with_an_empty_alembic_version(engine, db) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    execute(db, "DELETE FROM alembic_version")
    classification = engine.status().classification
    assert classification.state == "tables_without_migration_history"
    assert "alembic_version is empty" in classification.detail


def test_ignored_tables_do_not_count_as_application_tables(make_engine, db) -> None:
    execute(db, "CREATE TABLE legacy_report (id int)")
    assert make_engine().status().classification.state == "tables_without_migration_history"
    ignoring = make_engine(ignored_tables=("legacy_report",))
    assert ignoring.status().classification.state == "empty"


def test_pending_migrations_in_the_order_they_would_run(engine) -> None:
    engine.migrate(ADD_DISPLAY_NAME)
    classification = engine.status().classification
    assert classification.state == "pending_migrations"
    assert classification.current == (ADD_DISPLAY_NAME,)
    assert classification.pending == (
        BACKFILL_DISPLAY_NAME, INDEX_TASKS, CHECK_TASK_STATUS, *AFTER_CHECK_TASK_STATUS,
    )


def test_up_to_date(engine) -> None:
    engine.migrate()
    classification = engine.status().classification
    assert classification.state == "up_to_date"
    assert classification.pending == ()


def test_ahead_of_an_older_target(engine) -> None:
    engine.migrate()
    classification = engine.status(BACKFILL_DISPLAY_NAME).classification
    assert classification.state == "ahead"
    assert classification.target == (BACKFILL_DISPLAY_NAME,)
    assert "never downgraded automatically" in classification.detail


def test_unknown_revision_is_inconsistent_and_named(engine, db) -> None:
    engine.migrate()
    execute(db, "UPDATE alembic_version SET version_num = 'f00dfeed'")
    classification = engine.status().classification
    assert classification.state == "inconsistent"
    assert classification.cause == UNKNOWN_REVISION
    assert "'f00dfeed': no script defines it, no audit row traces" in classification.detail


def test_revision_next_to_its_own_descendant_is_inconsistent(engine, db) -> None:
    engine.migrate(INDEX_TASKS)
    execute(db, f"INSERT INTO alembic_version VALUES ('{ADD_DISPLAY_NAME}')")
    classification = engine.status().classification
    assert classification.state == "inconsistent"
    assert classification.cause == OVERLAPPING_REVISIONS
    assert ADD_DISPLAY_NAME in classification.detail


def test_database_on_another_branch_than_the_target_is_inconsistent(
    make_engine, tmp_path: Path
) -> None:
    scripts = _branched_history(tmp_path)
    engine = make_engine(script_location=scripts)
    engine.migrate("b1")
    classification = engine.status("b2").classification
    assert classification.state == "inconsistent"
    assert classification.cause == DIVERGED


def test_several_heads_in_the_scripts_are_an_error_in_the_scripts(
    make_engine, tmp_path: Path
) -> None:
    scripts = _branched_history(tmp_path, merged=False)
    with pytest.raises(ScriptsError, match=r"2 heads \(b1, b2\).*alembic merge heads"):
        make_engine(script_location=scripts).status()


def test_up_to_date_is_decided_without_reading_the_scripts(
    make_engine, tmp_path: Path, synthetic: Callable[..., tuple[Path, list[str]]]
) -> None:
    # GIVEN a database at the head of a history
    folder, ids = synthetic(3)
    make_engine(script_location=folder).migrate()
    # AND a script folder that can no longer be imported at all
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for script in (broken / "versions").glob("*.py"):
        script.write_text("raise RuntimeError('the scripts were imported')\n")
    engine = make_engine(script_location=broken)
    # WHEN the deploy asks with the head it resolved at synth time
    outcome = engine.migrate(target_heads=(ids[-1],))
    status = engine.status(target_heads=(ids[-1],))
    # THEN it is up to date and no script was loaded
    assert outcome.classification.state == "up_to_date"
    assert outcome.message == "Auto-migration: Database is up to date"
    assert status.classification.state == "up_to_date"
    assert not engine.scripts_loaded
    # while the full path does need the scripts
    with pytest.raises(RuntimeError, match="the scripts were imported"):
        engine.status()


def test_target_heads_that_disagree_with_the_scripts_are_refused(engine) -> None:
    with pytest.raises(ScriptsError, match="different builds"):
        engine.migrate(target_heads=("0123456789ab",))


def _branched_history(tmp_path: Path, *, merged: bool = True) -> Path:
    """base → a → (b1 | b2) [→ m merging both]."""
    folder = tmp_path / "branched"
    shutil.copytree(SAMPLE_SCRIPTS, folder, ignore=shutil.ignore_patterns("versions"))
    (folder / "versions").mkdir()
    revisions = {"a": None, "b1": "a", "b2": "a"}
    if merged:
        revisions["m"] = ("b1", "b2")  # type: ignore[assignment]
    for revision, down in revisions.items():
        (folder / "versions" / f"{revision}.py").write_text(
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n"
            "def upgrade() -> None:\n    pass\n\n"
            "def downgrade() -> None:\n    pass\n"
        )
    return folder
