"""A revision's own timeouts hold for it alone: the next one starts with the engine's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource.engine import MigrationEngine
from tests.migration_resource.support import linear_history

PROBE = ("op.execute(\"INSERT INTO guard_probe SELECT '{0}', current_setting('lock_timeout'), "
         "current_setting('statement_timeout')\")")
BODIES = {
    "g1": 'op.execute("CREATE TABLE guard_probe (revision text, lock_wait text, stmt text)")',
    # what real histories do before a long backfill, or a migration that must not fail
    "g2": "op.execute(\"SET lock_timeout = 0\")\n    "
          "op.execute(\"SET statement_timeout = '24h'\")\n    " + PROBE.format("g2"),
    "g3": PROBE.format("g3"),
    "g4": "op.execute(\"RESET ALL\")\n    " + PROBE.format("g4"),
    "g5": PROBE.format("g5"),
    # by other spellings: a quoted name behind a comment, the pg_settings view, a function
    # the deploy creates that sets it when called
    "g6": "op.execute('/* relax */ SET \"lock_timeout\" = 0')",
    "g7": PROBE.format("g7") + "\n    "
          "op.execute(\"UPDATE pg_settings SET setting = '0' WHERE name = 'lock_timeout'\")",
    "g8": PROBE.format("g8") + "\n    op.execute(\"-- helper\\nCREATE FUNCTION relax() "
          "RETURNS text LANGUAGE sql AS $$ SELECT set_config('lock_' || 'timeout', '0', false) "
          "$$\")",
    "g9": "op.execute('SELECT relax()')\n    " + PROBE.format("g9"),
    "g10": PROBE.format("g10"),
}


def test_each_revision_starts_with_the_engines_timeouts(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN revisions that switch the guards off for themselves
    engine = make_engine(script_location=linear_history(tmp_path / "h", BODIES),
                         lock_timeout_seconds=3, migration_timeout_seconds=40)
    # WHEN they run in one deploy
    with caplog.at_level(logging.INFO):
        engine.migrate()
    # THEN each kept what it set for itself, and the next one ran with the engine's
    with db.connect() as conn:
        seen = conn.exec_driver_sql(
            "SELECT revision, lock_wait, stmt FROM guard_probe ORDER BY revision").all()
    assert sorted(tuple(row) for row in seen) == [
        ("g10", "3s", "40s"), ("g2", "0", "1d"), ("g3", "3s", "40s"), ("g4", "0", "0"),
        ("g5", "3s", "40s"), ("g7", "3s", "40s"), ("g8", "3s", "40s"), ("g9", "0", "40s")]
    # AND the log says which revision set its own, and that the engine's hold again
    said = [r.getMessage() for r in caplog.records if "set its own session timeouts" in r.message]
    assert len(said) == 5  # g2, g4, g6, g7, g8 (the last two before g8 and g9)
    assert said[0].startswith("Revision g2 set its own session timeouts (SET lock_timeout = 0)")
    assert said[0].endswith("SET statement_timeout = '40s' and SET lock_timeout = '3s' again "
                            "before revision g3")
    assert said[1].endswith("again before revision g5")


def test_the_plan_says_which_revision_sets_its_own(
    make_engine: Callable[..., MigrationEngine], tmp_path: Path,
) -> None:
    engine = make_engine(script_location=linear_history(tmp_path / "h", BODIES))
    outcome = engine.dry_run()
    said = {(f["revision"], f["rule"], f["kind"]) for f in outcome.findings}
    assert {("g2", "lock_timeout_disabled", "locking"), ("g2", "session_timeout", "note"),
            ("g4", "lock_timeout_disabled", "locking")} <= said
