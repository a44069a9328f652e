"""The admin protocol: malformed events get clear answers; changes need confirm."""

from __future__ import annotations

from typing import Any

import pytest

from migration_resource.admin import answer_admin_event
from migration_resource.engine import MigrationEngine
from tests.alembic.support import ADD_DISPLAY_NAME, ALL_REVISIONS, HEAD
from tests.migration_resource.support import relations, version_rows

REQUIRED_KEYS = {"ok", "state", "current", "target", "pending", "message"}


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"admin_operation": "drop_everything"}, "Unknown admin_operation 'drop_everything'"),
        ({"admin_operation": None}, "Unknown admin_operation None"),
        ({}, "Unknown admin_operation"),
        ({"admin_operation": "status", "parameters": []}, "'parameters' must be a JSON object"),
        ({"admin_operation": "run_migrations", "parameters": {"dry_run": "yes"}},
         "'dry_run' of run_migrations must be bool, got str"),
        ({"admin_operation": "run_migrations", "parameters": {"target_revision": 5}},
         "'target_revision' of run_migrations must be str, got int"),
        ({"admin_operation": "run_migrations", "parameters": {"target_revision": "a" * 5000}},
         "5000 characters long"),
        ({"admin_operation": "run_migrations", "parameters": {"fix_everything": True}},
         "does not take 'fix_everything'"),
        ({"admin_operation": "run_migrations", "confirm": "true"},
         "'confirm' must be true or false"),
        ({"admin_operation": "downgrade", "confirm": True}, "downgrade needs target_revision"),
    ],
)
def test_malformed_events_are_answered_clearly(
    engine: MigrationEngine, event: dict[str, Any], fragment: str
) -> None:
    answer = answer_admin_event(engine, event)
    assert answer["ok"] is False
    assert answer["error"] == "bad_request"
    assert fragment in str(answer["message"])
    assert set(answer) >= REQUIRED_KEYS


def test_changes_need_confirm(engine: MigrationEngine, db) -> None:
    answer = answer_admin_event(engine, {"admin_operation": "run_migrations", "parameters": {}})
    assert answer["ok"] is False and answer["error"] == "confirmation_required"
    assert '"confirm": true' in str(answer["message"])
    assert relations(db) == []


def test_status_dry_run_and_run_with_confirm(engine: MigrationEngine, db) -> None:
    status = answer_admin_event(engine, {"admin_operation": "status"})
    assert status["ok"] is True and status["state"] == "empty"
    assert set(status) >= REQUIRED_KEYS
    dry = answer_admin_event(
        engine, {"admin_operation": "run_migrations", "parameters": {"dry_run": True}}
    )
    assert dry["ok"] is True and len(dry["pending"]) == ALL_REVISIONS and "sql" in dry  # type: ignore[arg-type]
    assert relations(db) == []
    run = answer_admin_event(
        engine,
        {"admin_operation": "run_migrations", "parameters": {"target_revision": ADD_DISPLAY_NAME},
         "confirm": True},
    )
    assert run["ok"] is True and run["final"] == [ADD_DISPLAY_NAME]
    assert [a["revision"] for a in run["applied"]][-1] == ADD_DISPLAY_NAME  # type: ignore[attr-defined,index]
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_refusals_carry_the_state(engine: MigrationEngine, db) -> None:
    engine.migrate()
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    answer = answer_admin_event(
        engine, {"admin_operation": "run_migrations", "parameters": {}, "confirm": True}
    )
    assert answer["ok"] is False and answer["error"] == "refused"
    assert answer["state"] == "inconsistent" and answer["current"] == ["f00d"]
    assert answer["target"] == [HEAD]


def test_bad_target_is_its_own_error(engine: MigrationEngine) -> None:
    answer = answer_admin_event(
        engine, {"admin_operation": "status", "parameters": {"target_revision": "1; drop"}}
    )
    assert answer["ok"] is False and answer["error"] == "bad_target_revision"


def test_a_failing_revision_is_answered_with_its_file_error_and_state(
    make_engine: Any, synthetic: Any, db: Any
) -> None:
    # GIVEN three revisions of which the third raises (division by zero)
    folder, ids = synthetic(3, fail_at=3)
    engine = make_engine(script_location=folder)
    # WHEN an admin run applies them
    answer = answer_admin_event(
        engine, {"admin_operation": "run_migrations", "parameters": {}, "confirm": True}
    )
    # THEN the answer names the revision, its file, the error, what was committed, the state
    assert answer["ok"] is False and answer["error"] == "migration_failed"
    message = str(answer["message"])
    assert f"revision {ids[2]} (00003_{ids[2]}.py) failed after 2 of 3 revisions" in message
    assert "DivisionByZero: division by zero" in message
    assert f"Committed before it in this run: {ids[0]}, {ids[1]}" in message
    assert "Traceback" not in message
    assert answer["final"] == [ids[1]] == version_rows(db)
    assert set(answer) >= REQUIRED_KEYS
