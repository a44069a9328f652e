"""The migration plan: which revisions run, in Alembic's order, with the SQL each really runs.

One plan serves three readers: the dry run shows it, the change gate judges it, and the apply
runs its revisions in its order. The SQL of each revision comes from one of two places:

- `rendered`: Alembic's offline mode, without touching the database (most revisions);
- `captured`: a trial run (`migration_resource.trial`) in a rolled-back transaction, for the
  revisions offline mode cannot render: a data migration that reads rows fails there, since
  offline `execute()` returns None, and one whose offline SQL reads a table only shows the
  statements its code would send for rows it never saw. The trial starts at the first such
  revision's predecessors (they run too, to give it the database it expects) and the
  revisions before it keep their rendered SQL.

When the trial itself stops at a revision (its code raised, or PostgreSQL refused something
only a real commit would allow), that revision and the ones after it are `not_previewed`:
the gate warns about each, and the apply meets the same error for real, if it is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migration_resource.classification import Classification
from migration_resource.core import ENGINE_LOGGER, EngineCore
from migration_resource.execution import OfflineRendering, render_offline
from migration_resource.outcomes import MigrationRefused
from migration_resource.trial import TrialFailure, trial_run

if TYPE_CHECKING:
    from migration_resource.audit import AuditTrail
    from migration_resource.gate import Finding, GateDecision

logger = logging.getLogger(ENGINE_LOGGER)

RENDERED = "rendered"
CAPTURED = "captured"
NOT_PREVIEWED = "not_previewed"


@dataclass(frozen=True)
class PlannedRevision:
    revision: str
    file: str  # the revision file's name
    sql: str
    source: str  # RENDERED, CAPTURED or NOT_PREVIEWED
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        answer = {"revision": self.revision, "file": self.file, "source": self.source,
                  "sql": self.sql}
        if self.note:
            answer["note"] = self.note
        return answer


@dataclass(frozen=True)
class MigrationPlan:
    start: tuple[str, ...]  # the revisions the database is at (or the one to be stamped)
    target: str
    steps: tuple[PlannedRevision, ...]
    stamp: str | None = None  # a baseline stamped before the steps run
    trial_failure: TrialFailure | None = None

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(step.revision for step in self.steps)

    @property
    def sql(self) -> dict[str, str]:
        return {step.revision: step.sql for step in self.steps}

    def describe_sources(self) -> str:
        counts = {source: sum(s.source == source for s in self.steps)
                  for source in (RENDERED, CAPTURED, NOT_PREVIEWED)}
        parts = [f"{counts[RENDERED]} rendered offline"]
        if counts[CAPTURED]:
            parts.append(f"{counts[CAPTURED]} captured in a rolled-back trial run")
        if counts[NOT_PREVIEWED]:
            parts.append(f"{counts[NOT_PREVIEWED]} not previewed")
        return "SQL: " + ", ".join(parts)


def build_plan(
    core: EngineCore,
    classification: Classification,
    *,
    stamp: str | None = None,
    hold_lock: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> MigrationPlan:
    """The plan from the classified database (or `stamp`) to its target; nothing changes.

    `hold_lock` is entered around a trial run, which executes migration code: callers that
    do not hold the migration lock yet pass a way to take it.
    """
    catalogue = core.catalogue
    (target,) = classification.target
    start = (stamp,) if stamp else classification.current
    order = catalogue.upgrade_order(start, target)
    if not order:
        return MigrationPlan(start=start, target=target, steps=(), stamp=stamp)
    if len(start) > 1:
        # Offline mode upgrades from one revision only; a database at several branch heads
        # goes straight to the trial.
        rendering = OfflineRendering({})
    else:
        rendering = render_offline(core.settings.script_location,
                                   start[0] if start else "base", target)
    first_unrendered = next(
        (r for r in order if r not in rendering.sql or _reads_rows(rendering.sql[r])), None
    )

    def file_of(revision: str) -> str:
        return catalogue.file_path(revision).name

    if first_unrendered is None:
        steps = tuple(PlannedRevision(r, file_of(r), rendering.sql[r], RENDERED) for r in order)
        return MigrationPlan(start=start, target=target, steps=steps, stamp=stamp)

    logger.info("Revision %s reads the database, so its SQL cannot be rendered offline; "
                "capturing what it runs in a trial run that is rolled back", first_unrendered)
    settings = core.settings
    with hold_lock():
        trial = trial_run(
            core.connect, settings.script_location, order, target, stamp=stamp,
            statement_timeout_seconds=settings.migration_timeout_seconds,
            lock_timeout_seconds=settings.lock_timeout_seconds,
        )
    trial_from = order.index(first_unrendered)
    planned: dict[str, PlannedRevision] = {}
    for index, revision in enumerate(order):
        if index < trial_from:
            planned[revision] = PlannedRevision(revision, file_of(revision),
                                                rendering.sql[revision], RENDERED)
        elif revision in trial.captured:
            planned[revision] = PlannedRevision(revision, file_of(revision),
                                                trial.sql(revision), CAPTURED)
    if trial.failure is not None:
        failed = trial.failure.revision
        logger.warning("Trial run: revision %s (%s) raised %s: %s", failed, file_of(failed),
                       trial.failure.error_type, trial.failure.message)
        planned[failed] = PlannedRevision(failed, file_of(failed), "", NOT_PREVIEWED,
                                          _not_previewed_note(failed, trial.failure))
        planned.update(_render_the_rest(core, order, target, planned, file_of))
    steps = tuple(planned.get(r) or PlannedRevision(r, file_of(r), "", NOT_PREVIEWED,
                                                    _not_previewed_note(r, trial.failure))
                  for r in order)
    return MigrationPlan(start=start, target=target, steps=steps, stamp=stamp,
                         trial_failure=trial.failure)


def _render_the_rest(
    core: EngineCore, order: tuple[str, ...], target: str,
    planned: dict[str, PlannedRevision], file_of: Callable[[str], str],
) -> dict[str, PlannedRevision]:
    """After the trial stopped: render offline what it can, from the revision it stopped at.

    The trial cannot go past a revision that needs a real commit before it (a data
    migration using an enum value added by `ALTER TYPE ... ADD VALUE` just before), but
    offline mode needs no database: it renders every later revision that does not read
    rows. Each revision it cannot render is left `not_previewed`, and rendering goes on
    after it.
    """
    found: dict[str, PlannedRevision] = {}
    stopped = next(r for r in order if r in planned and planned[r].source == NOT_PREVIEWED)
    for _ in range(len(order)):
        rendering = render_offline(core.settings.script_location, stopped, target)
        for revision, sql in rendering.sql.items():
            if revision not in planned and revision not in found and not _reads_rows(sql):
                found[revision] = PlannedRevision(revision, file_of(revision), sql, RENDERED)
        left = [r for r in order if r not in planned and r not in found]
        if not left:
            break
        stopped = left[0]
        found[stopped] = PlannedRevision(
            stopped, file_of(stopped), "", NOT_PREVIEWED,
            "it reads the database, and the trial run stopped before it"
            if rendering.error is None else
            f"it reads the database, so offline mode cannot render it "
            f"({type(rendering.error).__name__}), and the trial run stopped before it",
        )
    return found


def _not_previewed_note(revision: str, failure: TrialFailure | None) -> str:
    if failure is None:
        return "the trial run did not reach it"
    if failure.revision == revision and "unsafe use of new value" in failure.message:
        return ("it uses an enum value added earlier in this deploy, which PostgreSQL allows "
                "only after a commit, and a trial run never commits; it runs for real after "
                "that commit")
    if failure.revision == revision:
        return (f"its code raised in the trial run: {failure.error_type}: {failure.message}; "
                "it will fail the same way for real unless that was the trial's limit (see "
                "docs/RUNBOOK.md#sql-preview)")
    return f"the trial run stopped at {failure.revision} before it"


def _reads_rows(sql: str) -> bool:
    """A top-level SELECT from a table: code that reads rows, rendered without any."""
    # Imported here: the SQL parser costs ~160 ms of import, which a no-change deploy's
    # cold start should not pay.
    from pglast import ast  # noqa: PLC0415 - deferred on purpose
    from pglast.parser import ParseError, parse_sql  # noqa: PLC0415

    try:
        statements = parse_sql(sql)
    except ParseError:
        return False  # the gate reports what it cannot parse
    return any(
        isinstance(raw.stmt, ast.SelectStmt) and raw.stmt.intoClause is None
        and bool(raw.stmt.fromClause)
        for raw in statements
    )


# -- the change gate over the plan -----------------------------------------------------------
def judge(core: EngineCore, plan: MigrationPlan, allow_destructive: bool) -> GateDecision:
    """The gate's findings on the plan's SQL, and what blocks in this stage."""
    from migration_resource import gate  # noqa: PLC0415 - deferred on purpose, see above

    seen = {s.revision: s.sql for s in plan.steps if s.source != NOT_PREVIEWED}
    findings: list[Finding] = list(gate.analyse(seen))
    findings += [
        gate.Finding(
            revision=s.revision, kind=gate.LOCKING, rule="not_previewed", statement="",
            message=f"Its SQL could not be previewed ({s.note}); a reviewer must check it by "
                    "hand for destructive or locking changes.",
        )
        for s in plan.steps if s.source == NOT_PREVIEWED
    ]
    marked = frozenset(
        revision for revision in {f.revision for f in findings}
        if gate.allowed_by_marker(core.catalogue.file_path(revision).read_text())
    )
    return gate.decide(
        findings, stage=core.settings.stage,
        allow_destructive=allow_destructive or core.settings.allow_destructive,
        allowed_revisions=marked,
    )


def log_findings(decision: GateDecision) -> None:
    for finding in decision.warnings:
        logger.warning("Change gate (%s, %s %s): %s", finding.revision, finding.kind,
                       finding.rule, finding.message)


def gate_refusal(blocked: str) -> str:
    return f"pending_migrations: {blocked}; nothing was changed"


def refuse_if_gated(
    decision: GateDecision, classification: Classification, trail: AuditTrail
) -> None:
    blocked = decision.refusal()
    if blocked is None:
        return
    message = gate_refusal(blocked)
    logger.warning(message)
    trail.record("upgrade", decision.blocking[0].revision, "refused", detail=message)
    raise MigrationRefused(message, classification)
