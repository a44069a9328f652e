"""The dry run: the plan the apply would run, its SQL and the gate's findings; no change."""

from __future__ import annotations

import logging
import time
from typing import Any

from migration_resource.classification import describe_revisions
from migration_resource.core import ENGINE_LOGGER, EngineCore
from migration_resource.history_fix import (
    as_if_stamped,
    baseline_report,
    check_baseline_allowed,
    chosen_baseline,
    search_baseline,
)
from migration_resource.outcomes import Outcome
from migration_resource.phases import CONTRACT, EXPAND, RevisionPhase, by_phase
from migration_resource.plan import build_plan, gate_refusal, judge, log_findings

logger = logging.getLogger(ENGINE_LOGGER)


def dry_run(
    core: EngineCore,
    target: str = "head",
    *,
    fix_history: bool = False,
    baseline: str | None = None,
    allow_destructive: bool = False,
) -> Outcome:
    """What `migrate` would do, shown as its plan; nothing changes.

    Each pending revision's SQL is rendered offline, or, when its code reads the database,
    captured in a trial run in a scratch database (never the live one). With `fix_history`
    the verified baseline replays the migrations into a scratch database (dropped afterwards)
    to report the revision it would stamp; the plan then starts from that revision.
    """
    started = time.perf_counter()
    classification = core.classify(target, None, None)
    (resolved,) = classification.target
    report: dict[str, Any] | None = None
    notes: list[str] = []
    stamp: str | None = None
    if baseline is not None:
        stamp = core.resolve(baseline)
        check_baseline_allowed(classification, stamp)
        classification = as_if_stamped(core, classification, stamp, resolved)
        notes.append(f"would stamp {stamp} without verification, then migrate")
    elif fix_history and core.needs_history_fix(classification):
        # The replay runs in a scratch database: the live one is only read.
        result = search_baseline(core)
        report = baseline_report(result)
        stamp, classification = chosen_baseline(core, classification, result)
        if stamp is not None:
            classification = as_if_stamped(core, classification, stamp, resolved)
            notes.append(f"would stamp {stamp} ({result.summary()}), then migrate")
    refusal = core.refusal(classification, fix_history=False)
    if refusal is not None:
        return Outcome(
            operation="dry_run", classification=classification, ok=False,
            message=f"Dry run: the migration would be refused. {refusal}",
            final=classification.current, baseline=report, notes=tuple(notes),
            seconds=time.perf_counter() - started,
        )
    if not classification.pending:
        message = f"Dry run: nothing to apply ({classification.detail}); nothing was changed"
        logger.info(message)
        return Outcome(
            operation="dry_run", classification=classification, message=message, sql={},
            final=classification.current, seconds=time.perf_counter() - started,
            notes=tuple(notes), baseline=report,
        )

    plan = build_plan(core, classification, stamp=stamp)
    judgement = judge(core, plan, allow_destructive)
    decision = judgement.decision
    notes.append(plan.describe_sources())
    notes.append(phases_note(judgement.phases))
    if plan.trial_failure is not None:
        failure = plan.trial_failure
        notes.append(
            f"the preview in a scratch database could not run: {failure.error_type}: "
            f"{failure.message}" if failure.replaying else
            f"revision {failure.revision} raised in the trial run: {failure.error_type}: "
            f"{failure.message}")
    message = (
        f"Dry run: {len(plan.steps)} pending migrations would run "
        f"({describe_revisions(classification.current)} → {resolved}); nothing was changed"
    )
    log_findings(decision)
    refusal = gate_refusal(decision)
    if refusal is not None:
        message = f"Dry run: the migration would be refused. {refusal}"
    logger.info(message)
    return Outcome(
        operation="dry_run", classification=classification, message=message, sql=plan.sql,
        ok=refusal is None, final=classification.current,
        seconds=time.perf_counter() - started, notes=tuple(notes), baseline=report,
        findings=tuple(f.as_dict() for f in decision.findings),
        plan=tuple(step.as_dict() for step in plan.steps), phases=judgement.phases_dict(),
    )


def phases_note(phases: tuple[RevisionPhase, ...]) -> str:
    """The pending revisions by phase, for people: contract ones wait a release on deploy."""
    grouped = by_phase(phases)
    why = {one.revision: one.why for one in phases}
    contract = ", ".join(f"{r} ({why[r]})" for r in grouped[CONTRACT]) or "none"
    return (f"phases: expand {', '.join(grouped[EXPAND]) or 'none'}; contract {contract}"
            + ("; a deploy applies contract revisions only once the live release contains "
               "them" if grouped[CONTRACT] else ""))
