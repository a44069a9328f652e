"""The admin protocol: one event shape in, one JSON answer out, whoever carries it.

The local CLI calls `answer_admin_event` directly; the Lambda handler calls it with the event
it was invoked with. Anything that changes the database needs ``"confirm": true``.

Event: ``{"admin_operation": "...", "parameters": {...}, "confirm": bool}``.
Answer: at least ``ok``, ``state``, ``current``, ``target``, ``pending``, ``message``; failures
add ``error`` (a code from ERROR_CODES).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from migration_resource.audit import RunContext
from migration_resource.engine import MigrationEngine
from migration_resource.outcomes import (
    ConfirmationRequired,
    EngineError,
    MigrationFailed,
    Outcome,
)
from migration_resource.revisions import ScriptsError, TargetRevisionError
from migration_resource.row_values import hide_row_values
from migration_resource.settings import SettingsError

MAX_STRING_PARAMETER = 64


@dataclass(frozen=True)
class OperationSpec:
    parameters: Mapping[str, type]  # allowed names and their types
    changes_database: Callable[[Mapping[str, Any]], bool]
    required: tuple[str, ...] = ()


OPERATIONS: dict[str, OperationSpec] = {
    "status": OperationSpec(
        parameters={"target_revision": str}, changes_database=lambda _: False
    ),
    "run_migrations": OperationSpec(
        parameters={"dry_run": bool, "target_revision": str, "fix_history": bool,
                    "baseline": str, "allow_destructive": bool},
        changes_database=lambda p: not p.get("dry_run", False),
    ),
    "history": OperationSpec(parameters={"limit": int}, changes_database=lambda _: False),
    "repair": OperationSpec(
        parameters={"realign_checksums": bool, "resolve": str, "revision": str},
        changes_database=lambda _: True,
    ),
    "downgrade": OperationSpec(
        parameters={"target_revision": str},
        changes_database=lambda _: True,
        required=("target_revision",),
    ),
}
MAX_HISTORY_LIMIT = 200

# error code → whether it is the caller's mistake (CLI exit 2) rather than a refusal (exit 1)
ERROR_CODES = {
    "bad_request": True,
    "confirmation_required": True,
    "bad_target_revision": False,
    "scripts_error": False,
    "settings_error": False,
    "refused": False,
    "migration_failed": False,
    "database_unavailable": False,
    "error": False,
}


class AdminRequestError(ValueError):
    """The event itself is malformed."""


# Input errors: the request or the scripts are wrong, not the database.
INPUT_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (AdminRequestError, "bad_request"),
    (TargetRevisionError, "bad_target_revision"),
    (ScriptsError, "scripts_error"),
    (SettingsError, "settings_error"),
)


def answer_admin_event(
    engine: MigrationEngine, event: Mapping[str, Any], context: RunContext | None = None
) -> dict[str, object]:
    operation = event.get("admin_operation") if isinstance(event, Mapping) else None
    try:
        name, parameters, confirm = parse_admin_event(event)
        outcome = run_operation(engine, name, parameters, confirm=confirm,
                                context=context or RunContext(actor="admin"))
        return outcome.as_dict()
    except (AdminRequestError, TargetRevisionError, ScriptsError, SettingsError) as error:
        code = next(code for kind, code in INPUT_ERROR_CODES if isinstance(error, kind))
        return error_answer(operation, code, str(error))
    except EngineError as error:
        answer = error_answer(operation, error.code, str(error), error)
        if isinstance(error, MigrationFailed):
            answer["applied"] = [a.as_dict() for a in error.applied]
            answer["final"] = list(error.final)
        return answer


def parse_admin_event(event: Mapping[str, Any]) -> tuple[str, dict[str, Any], bool]:
    if not isinstance(event, Mapping):
        raise AdminRequestError("The admin event must be a JSON object")
    name = event.get("admin_operation")
    if not isinstance(name, str) or name not in OPERATIONS:
        shown = repr(name)[:60]
        raise AdminRequestError(
            f"Unknown admin_operation {shown}; use one of: {', '.join(OPERATIONS)}"
        )
    spec = OPERATIONS[name]
    parameters = event.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise AdminRequestError("'parameters' must be a JSON object")
    unknown = sorted(set(parameters) - set(spec.parameters))
    if unknown:
        raise AdminRequestError(
            f"{name} does not take {', '.join(repr(u)[:40] for u in unknown)}; it takes: "
            f"{', '.join(spec.parameters) or 'no parameters'}"
        )
    for key, expected in spec.parameters.items():
        if key not in parameters:
            continue
        value = parameters[key]
        # bool is an int subclass and JSON has no other booleans: check exactly.
        if type(value) is not expected:
            raise AdminRequestError(
                f"Parameter {key!r} of {name} must be {expected.__name__}, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, str) and len(value) > MAX_STRING_PARAMETER:
            raise AdminRequestError(
                f"Parameter {key!r} of {name} is {len(value)} characters long; at most "
                f"{MAX_STRING_PARAMETER} are accepted"
            )
    limit = parameters.get("limit")
    if isinstance(limit, int) and not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise AdminRequestError(f"Parameter 'limit' must be 1..{MAX_HISTORY_LIMIT}")
    missing = [key for key in spec.required if key not in parameters]
    if missing:
        raise AdminRequestError(f"{name} needs {', '.join(missing)}")
    confirm = event.get("confirm", False)
    if type(confirm) is not bool:
        raise AdminRequestError("'confirm' must be true or false")
    return name, dict(parameters), confirm


def run_operation(
    engine: MigrationEngine,
    name: str,
    parameters: Mapping[str, Any],
    *,
    confirm: bool,
    context: RunContext,
) -> Outcome:
    spec = OPERATIONS[name]
    target = parameters.get("target_revision", "head")
    if spec.changes_database(parameters) and not confirm:
        raise ConfirmationRequired(
            f"{name} changes the database; send \"confirm\": true (CLI: --confirm), or preview "
            "it first with a dry run"
        )
    if name == "status":
        return engine.status(target, with_phases=True)
    if name == "history":
        return engine.history(parameters.get("limit", 20))
    if name == "repair":
        return engine.repair(
            confirm=confirm, realign_checksums=parameters.get("realign_checksums", False),
            resolve=parameters.get("resolve"), revision=parameters.get("revision"),
            context=context,
        )
    if name == "run_migrations":
        options = {
            "fix_history": parameters.get("fix_history", False),
            "baseline": parameters.get("baseline"),
            "allow_destructive": parameters.get("allow_destructive", False),
        }
        if parameters.get("dry_run", False):
            return engine.dry_run(target, **options)
        return engine.migrate(target, context=context, **options)
    return engine.downgrade(target, confirm=confirm, context=context)


ECHO_LIMIT = 64  # what an answer repeats of a name it was sent


def _bounded(name: str) -> str:
    return name if len(name) <= ECHO_LIMIT else name[: ECHO_LIMIT - 3] + "..."


def error_answer(
    operation: object, code: str, message: str, error: EngineError | None = None
) -> dict[str, object]:
    classification = error.classification if error is not None else None
    return {
        "ok": False,
        "operation": _bounded(operation) if isinstance(operation, str) else None,
        "error": code,
        "state": classification.state.value if classification else None,
        "current": list(classification.current) if classification else [],
        "target": list(classification.target) if classification else [],
        "pending": list(classification.pending) if classification else [],
        "message": hide_row_values(message),
    }
