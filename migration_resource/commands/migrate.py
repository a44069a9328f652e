"""Upgrade: classify, establish a missing history if asked, plan, gate, apply, under the lock."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from migration_resource.audit import RunContext
from migration_resource.checksums import history_digest
from migration_resource.classification import Classification, describe_revisions
from migration_resource.core import ENGINE_LOGGER, EngineCore
from migration_resource.outcomes import Outcome, RunInterrupted
from migration_resource.states import DatabaseState

if TYPE_CHECKING:
    # The plan, the baseline and the apply (and the trial, offline rendering and replay they
    # bring) load when a migration is to be planned: the deploy's no-change path reaches
    # this module only for refuse_if_inconsistent.
    from sqlalchemy import Connection

    from migration_resource.audit import AuditTrail
    from migration_resource.phases import Release
    from migration_resource.plan import Judgement, MigrationPlan

logger = logging.getLogger(ENGINE_LOGGER)


def migrate(
    core: EngineCore,
    target: str = "head",
    *,
    target_heads: tuple[str, ...] | None = None,
    history_digest: str | None = None,
    fix_history: bool = False,
    baseline: str | None = None,
    allow_destructive: bool = False,
    context: RunContext | None = None,
    check_locked: Callable[[Classification], None] | None = None,
    release: Release | None = None,
) -> Outcome:
    """Bring the database up to `target`. Never downgrades; refuses unsafe states.

    `fix_history` establishes a missing history by the verified baseline first;
    `baseline` stamps a revision the operator vouches for (confirmed in production);
    `check_locked` may refuse the state found under the lock (a deploy's plan does);
    `release` (a deploy, an application container) says what is live: contract revisions it
    does not contain wait for a later release, and the run stops before them.
    """
    from migration_resource.history_fix import (  # noqa: PLC0415 - see TYPE_CHECKING
        check_baseline_allowed,
    )
    from migration_resource.plan import judge, log_findings, refuse_if_gated  # noqa: PLC0415

    started = time.perf_counter()
    context = context or RunContext()
    before = core.classify(target, target_heads, history_digest)
    if baseline is not None:
        check_baseline_allowed(before, core.resolve(baseline))
    else:
        core.raise_if_refused(before, fix_history=fix_history)
    if not before.needs_changes and baseline is None and not (
        fix_history and core.needs_history_fix(before)
    ):
        if before.needs_bookkeeping:
            return _bookkeeping(core, before, context, started)
        return core.nothing_to_do("migrate", before, started)
    (resolved,) = before.target

    with (
        core.locked_session(before, context) as connection,
        core.audit_trail(context) as trail,
    ):
        now, keep_books = core.prepare_locked(connection, trail, resolved)
        if check_locked is not None:
            check_locked(now)
        stamp, baseline_found, planned = _baseline_to_stamp(
            core, trail, now, resolved, baseline=baseline, fix_history=fix_history)
        if planned.state is not before.state or planned.current != before.current:
            logger.info("Migration state now: %s (revision %s)", planned.state.value,
                        describe_revisions(planned.current))
        core.raise_if_refused(planned, fix_history=False)
        judgement = None
        if planned.needs_changes:
            # Judged before anything is written: a refused run leaves no stamp and no
            # bookkeeping behind.
            plan = _plan_under_lock(core, planned, stamp)
            judgement = judge(core, plan, allow_destructive, release)
            log_findings(judgement.decision)
            refuse_if_gated(judgement.decision, planned, trail)
        keep_books()
        if stamp is not None:
            now = _stamp(core, connection, trail, now, stamp=stamp, resolved=resolved,
                         verified=baseline is None, baseline_found=baseline_found)
        if judgement is None:
            outcome = core.nothing_to_do("migrate", now, started)
            return dataclasses.replace(outcome, baseline=baseline_found)
        outcome = _apply(core, connection, trail, now, judgement, started=started,
                         baseline=baseline_found)
    return outcome


def _baseline_to_stamp(
    core: EngineCore, trail: AuditTrail, now: Classification, resolved: str, *,
    baseline: str | None, fix_history: bool,
) -> tuple[str | None, dict[str, Any] | None, Classification]:
    """The revision a baseline would stamp (the operator's, or the verified one), its report,
    and the state as if it were stamped; nothing is written yet."""
    from migration_resource.history_fix import (  # noqa: PLC0415 - see TYPE_CHECKING
        as_if_stamped,
        check_baseline_allowed,
        find_verified_baseline,
    )

    if baseline is not None:
        stamp = core.resolve(baseline)
        check_baseline_allowed(now, stamp)
        return stamp, None, as_if_stamped(core, now, stamp, resolved)
    if fix_history and core.needs_history_fix(now):
        stamp, report = find_verified_baseline(core, trail, now)
        return stamp, report, as_if_stamped(core, now, stamp, resolved)
    return None, None, now


def _stamp(
    core: EngineCore, connection: Connection, trail: AuditTrail, now: Classification, *,
    stamp: str, resolved: str, verified: bool, baseline_found: dict[str, Any] | None,
) -> Classification:
    from migration_resource.history_fix import (  # noqa: PLC0415 - see TYPE_CHECKING
        stamp_explicit,
        stamp_verified,
    )

    if verified:
        assert baseline_found is not None
        return stamp_verified(core, connection, trail, stamp, resolved,
                              summary=str(baseline_found["summary"]))
    return stamp_explicit(core, connection, trail, now, stamped=stamp, resolved=resolved)


def _apply(
    core: EngineCore, connection: Connection, trail: AuditTrail, now: Classification,
    judgement: Judgement, *, started: float, baseline: dict[str, Any] | None,
) -> Outcome:
    """Run what the judgement lets run now, under the lock the caller holds."""
    from migration_resource.apply import apply_upgrade  # noqa: PLC0415 - see TYPE_CHECKING
    from migration_resource.gate import StatementJudge  # noqa: PLC0415
    from migration_resource.statement_guard import StatementGuard  # noqa: PLC0415

    decision, split = judgement.decision, judgement.split
    phases = judgement.phases_dict()
    if split.defers:
        record_deferral(trail, judgement)
    if split.target is None:
        message = f"Nothing to apply now: {deferral_text(split.deferred)}"
        logger.info(message)
        return Outcome(operation="migrate", classification=now, message=message,
                       final=now.current, seconds=time.perf_counter() - started,
                       baseline=baseline, phases=phases, deferred=split.deferred)
    findings = tuple(f.as_dict() for f in decision.findings)
    guard = StatementGuard(stage=core.settings.stage,
                           allow_destructive=judgement.allow_destructive,
                           approvals=judgement.approvals,
                           judge=StatementJudge(live=judgement.live))
    try:
        applied = apply_upgrade(
            core, connection, trail, now, order=split.run, target=split.target,
            destructive=frozenset(f.revision for f in decision.findings
                                  if f.kind == "destructive"),
            guard=guard,
        )
    except RunInterrupted as stopped:
        return Outcome(
            operation="migrate", classification=now, message=str(stopped),
            final=core.current_revisions(), applied=stopped.applied, complete=False,
            seconds=time.perf_counter() - started, findings=findings, phases=phases,
            deferred=split.deferred,
        )
    message = (
        "Database migrations completed successfully. Revision: "
        f"{describe_revisions(now.current)} → {split.target}"
    )
    if split.defers:
        message += f"; {deferral_text(split.deferred)}"
    logger.info(message)
    return Outcome(
        operation="migrate", classification=now, message=message, final=(split.target,),
        applied=applied, seconds=time.perf_counter() - started, baseline=baseline,
        findings=findings, phases=phases, deferred=split.deferred,
    )


def deferral_text(deferred: tuple[str, ...]) -> str:
    return (f"deferred to the next release: {', '.join(deferred)} (contract: the code being "
            "replaced may still use what it removes)")


def record_deferral(trail: AuditTrail, judgement: Judgement) -> None:
    """One `defer` row per waiting revision: the application's schema check reads them, so
    code deployed with them pending serves (it was written not to need them)."""
    why = {one.revision: one.why for one in judgement.phases}
    for revision in judgement.split.deferred:
        trail.record("defer", revision, "deferred",
                     detail=f"waits for the next release ({why.get(revision, '')})")
    logger.warning("Change phases: %s", deferral_text(judgement.split.deferred))


def check_gate(
    core: EngineCore,
    classification: Classification,
    *,
    allow_destructive: bool = False,
    context: RunContext | None = None,
    release: Release | None = None,
) -> Judgement | None:
    """Refuse now what `migrate` would refuse at the change gate, before anything costly.

    A deploy calls this before it starts a snapshot: a refused deploy must take none.
    The refusal is `migrate`'s own (message, log lines, audit row). An allowed plan says
    nothing here: `migrate` decides again under the lock, since the database may move
    in between, and logs the findings then, once. Returns the judgement (phases, what a
    `release` defers), or None when the pending revisions are known only after a baseline.
    """
    if classification.state is not DatabaseState.PENDING_MIGRATIONS:
        # Without a history the pending revisions are known only after the baseline.
        return None
    from migration_resource.plan import (  # noqa: PLC0415 - see TYPE_CHECKING
        build_plan,
        judge,
        log_findings,
        refuse_if_gated,
    )

    plan = build_plan(core, classification)
    core.last_plan = plan
    judgement = judge(core, plan, allow_destructive, release)
    decision = judgement.decision
    if decision.refusal() is None:
        return judgement
    with core.locked(classification), core.audit_trail(context or RunContext()) as trail:
        log_findings(decision)
        refuse_if_gated(decision, classification, trail)  # raises: the decision refuses
    return judgement


def refuse_if_inconsistent(core: EngineCore, classification: Classification) -> None:
    """Raise the refusal of an `inconsistent` database, worded with its cause's next step.

    For callers that classified already (the deploy): the same MigrationRefused, log
    line and wording as `migrate`, without classifying again.
    """
    if classification.state is DatabaseState.INCONSISTENT:
        core.raise_if_refused(classification, fix_history=False)


def _bookkeeping(
    core: EngineCore, before: Classification, context: RunContext, started: float
) -> Outcome:
    """Up to date, but the trail lacks what this engine records: fill it in, change nothing else.

    A trail written by an earlier version has no ancestry and file-byte checksums; recording
    them now (from the scripts that define the revisions) is what lets a later code rollback
    be told `ahead`. The history digest is recorded too, so the next deploy takes the fast
    path again.
    """
    (resolved,) = before.target
    with (
        core.locked_session(before, context) as connection,
        core.audit_trail(context) as trail,
    ):
        now, keep_books = core.prepare_locked(connection, trail, resolved)
        keep_books()
        if now.state is DatabaseState.UP_TO_DATE:
            trail.record("adopt", None, "succeeded",
                         history_digest=history_digest(core.catalogue.versions_dir),
                         detail="bookkeeping: ancestry, code checksums and history digest "
                                "recorded; the schema was not changed")
    logger.info("Recorded the ancestry and code checksums of the applied revisions (the "
                "schema was not changed)")
    return core.nothing_to_do("migrate", now, started)


def _plan_under_lock(
    core: EngineCore, now: Classification, stamp: str | None = None
) -> MigrationPlan:
    """The plan `check_gate` made for this very state, or a new one (the lock is held).

    A plan whose SQL came from a trial run is only reused for the same revisions: it ran the
    same code on the same schema moments ago. A database without tables gets no preview: the
    apply judges each statement as it is sent, and a preview would run the history twice.
    """
    (target,) = now.target
    cached = core.last_plan
    if cached is not None and cached.stamp == stamp and cached.start == now.current and (
        cached.target == target
    ):
        return cached
    from migration_resource.plan import build_plan  # noqa: PLC0415 - see TYPE_CHECKING

    return build_plan(core, now, stamp=stamp, preview=now.state is not DatabaseState.EMPTY)
