"""The engine over histories written the way real teams write them (tests/histories).

Each history is first proven right with plain Alembic (upgrade, downgrade to base, upgrade
again); then the engine must do what plain Alembic does, preview every pending revision
without changing anything, baseline an unversioned copy, refuse a drifted one naming the
difference, report a failing revision precisely, and reach targets through branches.

What plain Alembic makes of each history at head is computed once per session (a reference
database, snapshotted and dropped) and shared by the tests that compare with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from migration_resource.engine import MigrationEngine, MigrationFailed, MigrationRefused, Outcome
from tests.histories.support import (
    ALEMBIC_VERSION,
    FAILING_ERROR,
    FAILING_FILE,
    FAILING_REVISION,
    HISTORIES,
    HISTORY_NAMES,
    PRODUCT_TABLES,
    History,
    Snapshot,
    add_failing_revision,
    alembic_downgrade,
    alembic_upgrade,
    count_rows,
    drop_version_table,
    scratch_database,
    script_directory,
    scripts,
    snapshot,
)
from tests.migration_resource.support import execute, version_rows

EngineFactory = Callable[..., MigrationEngine]  # the make_engine fixture
Reference = Callable[[str], Snapshot]
BRANCHY = HISTORIES["branchy"]


@dataclass(frozen=True)
class Case:
    """One history on one fresh database: its throwaway scripts, the database, engines."""

    history: History
    scripts: Path
    url: str
    db: sa.Engine
    make_engine: EngineFactory

    def engine(self) -> MigrationEngine:
        return self.make_engine(script_location=self.scripts)

    def upgrade(self, target: str) -> None:
        """Plain Alembic, as the team ran it before the engine."""
        alembic_upgrade(self.db, self.scripts, target)

    def snapshot(self, *, exclude: tuple[str, ...] = PRODUCT_TABLES) -> Snapshot:
        return snapshot(self.url, exclude=exclude)

    def upgrade_rows(self) -> Counter[tuple[str, str]]:
        """(revision, outcome) of the engine's audit rows for upgrades, counted."""
        with self.db.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT revision, outcome FROM migration_audit WHERE action = 'upgrade'"
            )).all()
        return Counter((row.revision, row.outcome) for row in rows)


def succeeded_once(revisions: tuple[str, ...]) -> Counter[tuple[str, str]]:
    """One succeeded upgrade row per revision, and no other upgrade row."""
    return Counter((revision, "succeeded") for revision in revisions)


@pytest.fixture(params=HISTORY_NAMES)
def case(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, db: sa.Engine,
    make_engine: EngineFactory,
) -> Case:
    name = str(request.param)
    return Case(history=HISTORIES[name], scripts=scripts(name, tmp_path), url=database_url,
                db=db, make_engine=make_engine)


@pytest.fixture
def branchy(tmp_path: Path, database_url: str, db: sa.Engine, make_engine: EngineFactory) -> Case:
    return Case(history=BRANCHY, scripts=scripts(BRANCHY.name, tmp_path), url=database_url,
                db=db, make_engine=make_engine)


@pytest.fixture(scope="session")
def reference_head(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """What plain Alembic makes of a history from empty to head (computed once per history)."""
    cache: dict[str, Snapshot] = {}

    def get(name: str) -> Snapshot:
        if name not in cache:
            folder = scripts(name, tmp_path_factory.mktemp("reference"))
            with scratch_database(server_url) as url:
                db = sa.create_engine(url, poolclass=sa.NullPool)
                try:
                    alembic_upgrade(db, folder, "heads")
                finally:
                    db.dispose()
                cache[name] = snapshot(url)
        return cache[name]

    yield get


def leftovers(db: sa.Engine) -> list[str]:
    """What a downgrade to base must not leave: relations (but Alembic's own version table
    and its key), enum types, extensions."""
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT 'relation ' || c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                    f"AND c.relname NOT IN ('{ALEMBIC_VERSION}', '{ALEMBIC_VERSION}_pkc') "
                    "UNION ALL SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n "
                    "ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e' "
                    "UNION ALL SELECT 'extension ' || extname FROM pg_extension "
                    "WHERE extname <> 'plpgsql' ORDER BY 1"
                )
            ).scalars()
        )


def refusal_message(run: Callable[[], Outcome]) -> str:
    """A dry run may refuse by raising MigrationRefused or by answering ok=False."""
    try:
        outcome = run()
    except MigrationRefused as refused:
        return str(refused)
    assert not outcome.ok, f"expected a refusal, got: {outcome.message}"
    return outcome.message


# -- the histories themselves ---------------------------------------------------------------
@pytest.mark.parametrize("name", HISTORY_NAMES)
def test_history_facts_match_its_scripts(name: str) -> None:
    history = HISTORIES[name]
    script = script_directory(name)
    # one head, and exactly the revisions listed, in an order Alembic can apply
    assert script.get_heads() == [history.head]
    assert {s.revision for s in script.walk_revisions("base", "heads")} == set(history.revisions)
    for index, revision in enumerate(history.revisions):
        assert history.ancestry(revision) - {revision} <= set(history.revisions[:index])
    # a database at `middle` holds exactly the revisions listed up to it (what a replay in
    # upgrade order reaches there)
    position = history.revisions.index(history.middle)
    assert history.ancestry(history.middle) == set(history.revisions[: position + 1])
    assert history.pending_after(history.middle) == history.revisions[position + 1 :]
    assert history.needs_database | set(history.sql_fragments) <= set(history.revisions)
    assert history.non_transactional <= set(history.sql_fragments)
    if history.label_target is not None:
        (resolved,) = script.get_revisions(history.label_target)
        assert resolved is not None and resolved.revision == history.head


def test_history_upgrades_and_downgrades_with_plain_alembic(
    case: Case, reference_head: Reference
) -> None:
    history = case.history

    # GIVEN the history at head with plain Alembic, with its seed rows
    case.upgrade("heads")
    assert version_rows(case.db) == [history.head]
    for table, count in history.seed_rows.items():
        assert count_rows(case.url, table) == count, table

    # WHEN every revision is downgraded
    alembic_downgrade(case.db, case.scripts, "base")

    # THEN nothing is left but the empty version table
    assert version_rows(case.db) == []
    assert leftovers(case.db) == []

    # AND upgrading again gives what a first upgrade gives
    case.upgrade("heads")
    assert case.snapshot() == reference_head(history.name)


# -- a. empty → head ------------------------------------------------------------------------
def test_engine_migrates_empty_database_to_head(case: Case) -> None:
    history = case.history

    outcome = case.engine().migrate()

    assert outcome.ok, outcome.message
    assert outcome.final == (history.head,)
    assert version_rows(case.db) == [history.head]
    assert case.upgrade_rows() == succeeded_once(history.revisions)
    for table, count in history.seed_rows.items():
        assert count_rows(case.url, table) == count, table


# -- b. the engine's result is plain Alembic's ----------------------------------------------
def test_engine_result_equals_plain_alembic(case: Case, reference_head: Reference) -> None:
    outcome = case.engine().migrate()

    assert outcome.ok, outcome.message
    ours, theirs = case.snapshot(), reference_head(case.history.name)
    assert ours.schema == theirs.schema
    assert ours.rows == theirs.rows


# -- c. dry runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("start", ["empty", "middle"])
def test_dry_run_changes_nothing_and_shows_every_pending_revision(case: Case, start: str) -> None:
    history = case.history
    pending = history.revisions
    if start == "middle":
        case.upgrade(history.middle)
        pending = history.pending_after(history.middle)
    # everything, the engine's own tables included: a dry run creates nothing
    before = case.snapshot(exclude=())

    outcome = case.engine().dry_run()

    assert case.snapshot(exclude=()) == before
    assert outcome.ok, outcome.message
    assert outcome.sql is not None
    assert sorted(outcome.sql) == sorted(pending)
    for revision in pending:
        assert outcome.sql[revision].strip(), f"no SQL for {revision}"
        fragment = history.sql_fragments.get(revision)
        if fragment is not None:
            assert fragment in outcome.sql[revision], (revision, outcome.sql[revision])


def test_dry_run_says_how_each_revisions_sql_was_obtained(case: Case) -> None:
    # ASSUMED CONTRACT (written before the engine reported it; adapt if it settles
    # differently): outcome.as_dict()["plan"] lists one entry per pending revision,
    # {"revision", "file", "source", "sql"}, source "rendered" (Alembic offline mode) or
    # "captured" (a trial run in a rolled-back transaction). A revision that reads the
    # database cannot be rendered; one that commits mid-way (autocommit_block, COMMIT) must
    # still show the statements it really runs (CONCURRENTLY, ADD VALUE), however obtained.
    history = case.history

    outcome = case.engine().dry_run()

    plan: Any = outcome.as_dict().get("plan")
    assert isinstance(plan, list), f"no per-revision plan in the dry run: {outcome.as_dict()}"
    entries = {entry["revision"]: entry for entry in plan}
    assert sorted(entries) == sorted(history.revisions)
    for revision, entry in entries.items():
        assert entry["source"] in {"rendered", "captured"}, entry
        assert Path(entry["file"]).name == history.file_name(revision)
        assert entry["sql"].strip()
    for revision in history.needs_database:
        assert entries[revision]["source"] == "captured", revision
    for revision in history.non_transactional:
        assert history.sql_fragments[revision] in entries[revision]["sql"], entries[revision]


# -- d. tables without history → verified baseline ------------------------------------------
def test_tables_without_history_get_a_verified_baseline_then_migrate(
    case: Case, reference_head: Reference
) -> None:
    history = case.history
    # GIVEN the tables (and seed rows) of the middle revision, and no alembic_version
    case.upgrade(history.middle)
    drop_version_table(case.db)

    # WHEN the engine establishes the history and migrates
    outcome = case.engine().migrate(fix_history=True)

    # THEN it stamped the middle revision: only the revisions after it ran, once each
    assert outcome.ok, outcome.message
    assert version_rows(case.db) == [history.head]
    assert case.upgrade_rows() == succeeded_once(history.pending_after(history.middle))
    # AND the result is what plain Alembic makes from empty: rows intact, nothing run twice
    assert case.snapshot() == reference_head(history.name)


# -- e. drift → refusal -----------------------------------------------------------------------
def test_drift_is_refused_naming_the_nearest_revision_and_the_difference(case: Case) -> None:
    history = case.history
    table, column = history.drift
    # GIVEN the middle revision's tables plus a column someone added by hand, no history
    case.upgrade(history.middle)
    drop_version_table(case.db)
    execute(case.db, f"ALTER TABLE {table} ADD COLUMN {column} text")
    before = case.snapshot()
    engine = case.engine()

    # WHEN a dry run and a migration try to establish the history
    previewed = refusal_message(lambda: engine.dry_run(fix_history=True))
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate(fix_history=True)

    # THEN both refuse, naming the nearest revision and the extra column
    for message in (previewed, str(refused.value)):
        assert history.middle in message, message
        assert f"{table}.{column}" in message, message
    # AND nothing changed
    assert version_rows(case.db) == []
    assert case.snapshot() == before


# -- f. a revision that raises ----------------------------------------------------------------
def test_failing_revision_is_reported_with_its_file_and_error(case: Case) -> None:
    history = case.history
    # GIVEN the database at the history's head, and a new revision after it that creates a
    # table and then raises from Python code
    case.upgrade(history.head)
    add_failing_revision(case.scripts, history.head)
    before = case.snapshot()

    with pytest.raises(MigrationFailed) as failed:
        case.engine().migrate()

    message = str(failed.value)
    # THEN the message names the revision, its file, the error, and where the database is
    assert FAILING_REVISION in message, message
    assert FAILING_FILE in message, message
    assert "ValueError" in message, message
    assert FAILING_ERROR in message, message
    assert history.head in message, message
    assert "Traceback" not in message and 'File "' not in message, message
    # AND the database is at the previous head with its rows; the new table was rolled back
    assert version_rows(case.db) == [history.head]
    assert case.snapshot() == before


# -- g. targets through branches --------------------------------------------------------------
def test_branch_label_target_resolves_and_migrates(branchy: Case) -> None:
    assert BRANCHY.label_target is not None

    outcome = branchy.engine().migrate(BRANCHY.label_target)

    assert outcome.ok, outcome.message
    assert outcome.final == (BRANCHY.head,)
    assert version_rows(branchy.db) == [BRANCHY.head]


def test_database_at_two_branch_heads_migrates_through_the_merge(
    branchy: Case, reference_head: Reference
) -> None:
    # GIVEN a database at both branch heads (as before the merge revision existed)
    for head in BRANCHY.merge_parents:
        branchy.upgrade(head)
    assert version_rows(branchy.db) == sorted(BRANCHY.merge_parents)

    outcome = branchy.engine().migrate()

    assert outcome.ok, outcome.message
    assert version_rows(branchy.db) == [BRANCHY.head]
    assert branchy.upgrade_rows() == succeeded_once(BRANCHY.pending_after(*BRANCHY.merge_parents))
    assert branchy.snapshot() == reference_head(BRANCHY.name)
