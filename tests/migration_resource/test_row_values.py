"""Row values never leave in a message: PostgreSQL's DETAIL and the values it quotes."""

from __future__ import annotations

import pytest

from migration_resource.row_values import hide_row_values

SECRET = "ceo@corp.example"


@pytest.mark.parametrize(("error", "kept"), [
    (f'duplicate key value violates unique constraint "uq_users_email" DETAIL: Key (email)=('
     f'{SECRET}) already exists.', 'Key (email)=(…) already exists'),
    (f"DETAIL: Key (owner)=({SECRET}) is not present in table \"users\".", "Key (owner)=(…)"),
    (f"DETAIL: Failing row contains (7, {SECRET}, null). [SQL: UPDATE x]",
     "Failing row contains (…). [SQL: UPDATE x]"),
    (f'invalid input syntax for type integer: "{SECRET}"', 'type integer: "…"'),
    (f'invalid input value for enum plan: "{SECRET}"', 'enum plan: "…"'),
    (f'value "{SECRET}" is out of range for type integer', 'value "…" is out of range'),
    (f'date/time field value out of range: "{SECRET}"', 'out of range: "…"'),
])
def test_values_are_hidden_and_names_kept(error: str, kept: str) -> None:
    hidden = hide_row_values(error)
    assert SECRET not in hidden and kept in hidden
