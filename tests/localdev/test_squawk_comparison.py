"""The gate-beside-squawk report: agreement and disagreement are told apart correctly."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from localdev.squawk_comparison import compare


def squawk() -> str:
    found = shutil.which("squawk", path=str(Path(sys.executable).parent))
    assert found, "squawk-cli is a development requirement (requirements-dev.txt)"
    return found


def test_the_same_risk_agrees_and_a_new_tables_index_is_the_gates_call(tmp_path: Path) -> None:
    counts = {"statements": 0, "agree": 0}
    # An index built without CONCURRENTLY on a table from before: both flag it
    assert compare("h", "r1", "CREATE INDEX ix_users_email ON users (email);",
                   squawk=squawk(), work=tmp_path, counts=counts) == []
    # The same on a table the revision itself creates: squawk flags it, the gate does not
    rows = compare("h", "r2", "CREATE TABLE notes (id bigint);\n"
                   "CREATE INDEX ix_notes_id ON notes (id);",
                   squawk=squawk(), work=tmp_path, counts=counts)
    assert [(row.squawk, row.gate) for row in rows] == [
        (["require-concurrent-index-creation"], [])]
    assert "created by the same revision" in rows[0].why
    # A data change only the gate judges
    rows = compare("h", "r3", "UPDATE prices SET amount = amount * 100;",
                   squawk=squawk(), work=tmp_path, counts=counts)
    assert [(row.squawk, row.gate) for row in rows] == [([], ["update_overwrites"])]
    assert counts == {"statements": 4, "agree": 2}
