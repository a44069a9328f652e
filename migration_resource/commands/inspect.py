"""Read-only commands: the state, and the audit trail."""

from __future__ import annotations

import time

from migration_resource.classification import Classification
from migration_resource.core import STATUS_HISTORY_ROWS, EngineCore
from migration_resource.online import InvalidIndex, invalid_indexes, unfinished_backfills
from migration_resource.outcomes import Outcome
from migration_resource.states import DatabaseState


def status(
    core: EngineCore,
    target: str = "head",
    *,
    target_heads: tuple[str, ...] | None = None,
    history_digest: str | None = None,
    with_history: bool = True,
    with_phases: bool = False,
) -> Outcome:
    """The state; with the last audit actions for people (the deploy skips them), and with
    `with_phases` each pending revision's phase (it previews their SQL: an operator's
    status, not an application's check)."""
    started = time.perf_counter()
    classification = core.classify(target, target_heads, history_digest)
    message = f"Migration state: {classification.state.value}"
    phases: tuple[dict[str, object], ...] | None = None
    if classification.pending:
        pending = classification.pending
        message += f" ({len(pending)} pending: {', '.join(pending)})"
        if with_phases and classification.state is DatabaseState.PENDING_MIGRATIONS:
            phases = _phases(core, classification)
            message += "; " + _phases_text(phases)
    elif classification.detail and classification.state is not DatabaseState.UP_TO_DATE:
        message += f" ({classification.detail})"
    invalid: tuple[InvalidIndex, ...] = ()
    notes: tuple[str, ...] = ()
    if with_history:  # for people: what an interrupted online step left (the deploy skips it)
        with core.reading() as connection:
            invalid = tuple(invalid_indexes(connection, core.settings.schema))
            notes = tuple(b.describe() for b in unfinished_backfills(connection))
        if invalid:
            message += f"; invalid indexes: {'; '.join(i.describe() for i in invalid)}"
    return Outcome(
        operation="status",
        classification=classification,
        message=message,
        invalid_indexes=tuple(i.as_dict() for i in invalid), notes=notes,
        final=classification.current,
        history=tuple(core.recent_actions(STATUS_HISTORY_ROWS)) if with_history else None,
        seconds=time.perf_counter() - started, phases=phases,
    )


def _phases(core: EngineCore, classification: Classification) -> tuple[dict[str, object], ...]:
    from migration_resource.plan import build_plan, judge  # noqa: PLC0415 - operators only

    plan = build_plan(core, classification)
    deferred = core.deferred_revisions()
    return tuple({**one, "deferred": one["revision"] in deferred}
                 for one in judge(core, plan, allow_destructive=True).phases_dict())


def _phases_text(phases: tuple[dict[str, object], ...]) -> str:
    def listed(phase: str) -> str:
        names = [f"{p['revision']}{' (deferred by a deploy)' if p['deferred'] else ''}"
                 for p in phases if p["phase"] == phase]
        return ", ".join(names) or "none"

    return f"expand: {listed('expand')}; contract: {listed('contract')}"


def history(core: EngineCore, limit: int = 20) -> Outcome:
    """The audit trail, newest first."""
    started = time.perf_counter()
    classification = core.classify("head", None, None)
    rows = core.recent_actions(limit)
    message = (
        f"{len(rows)} most recent migration actions" if rows
        else "No migration action recorded yet (the audit trail starts with the first change)"
    )
    return Outcome(
        operation="history", classification=classification, message=message,
        final=classification.current, history=tuple(rows),
        seconds=time.perf_counter() - started,
    )
