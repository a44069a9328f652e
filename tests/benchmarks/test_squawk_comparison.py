"""The gate beside squawk: agreement told apart from disagreement, and no lock rule missed."""

from __future__ import annotations

from pathlib import Path

from benchmarks.squawk_comparison import (
    LOCK_RULES,
    Counts,
    compare,
    compare_corpus,
    corpus,
    squawk_binary,
)
from localdev.team_history import MIN_COUNT


def squawk() -> str:
    found = squawk_binary()
    assert found, "squawk-cli is a development requirement (requirements-dev.txt)"
    return found


def test_the_same_risk_agrees_and_what_differs_says_why(tmp_path: Path) -> None:
    counts = Counts()
    # An index built without CONCURRENTLY on a table from before: both flag it
    assert compare("h", "r1", "CREATE INDEX ix_users_email ON users (email);",
                   squawk=squawk(), work=tmp_path, counts=counts, tables=frozenset({"users"})) == []
    # A unique constraint on a table from before: both flag it (the gate since issue 27)
    assert compare("h", "r2", "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email);",
                   squawk=squawk(), work=tmp_path, counts=counts) == []
    # A data change only the gate judges
    rows = compare("h", "r3", "UPDATE prices SET amount = amount * 100;",
                   squawk=squawk(), work=tmp_path, counts=counts)
    assert [(row.squawk, row.gate, row.missed) for row in rows] == [
        ([], ["update_overwrites"], False)]
    # A default computed once: squawk flags it, the gate knows it rewrites nothing
    rows = compare("h", "r4", "ALTER TABLE users ADD COLUMN handle TEXT DEFAULT lower('x');",
                   squawk=squawk(), work=tmp_path, counts=counts)
    assert [(row.squawk, row.gate, row.missed) for row in rows] == [
        (["adding-field-with-default"], [], False)]
    assert vars(counts) == {"statements": 4, "agree": 2, "both_lock": 2, "squawk_only_lock": 1,
                            "missed": 0, "gate_only": 1, "other": 0}


def test_no_squawk_lock_finding_is_missed_on_any_team_style_history(tmp_path: Path) -> None:
    # GIVEN every history of the tests, the sample's, and a generated team history
    report = compare_corpus(corpus(tmp_path / "h", MIN_COUNT), squawk=squawk(),
                            work=tmp_path)
    # THEN each was compared, and on none does squawk find a lock risk the gate has no
    # answer for
    assert {"ops_console", "flask_app", "sample", f"team_history_{MIN_COUNT}"} <= set(
        report.counts)
    assert {name: counts.missed for name, counts in report.counts.items()} == dict.fromkeys(
        report.counts, 0)
    assert [row for row in report.rows if row.missed] == []
    # AND the corpus exercises squawk's lock rules: what squawk flags under them in
    # ops_console (a unique constraint, a primary key, DROP INDEX, REINDEX, volatile defaults,
    # a stored generated column, the index swapped in) the gate flags too
    ops = report.counts["ops_console"]
    assert ops.both_lock >= 7 and ops.squawk_only_lock == 0
    assert [row for row in report.rows
            if row.history == "ops_console" and set(row.squawk) & LOCK_RULES] == []
