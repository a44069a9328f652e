"""The migration plan: which revisions run, in Alembic's order, with the SQL each really runs.

One plan serves three readers: the dry run shows it, the change gate judges it, and the apply
runs its revisions in its order. The SQL of each revision comes from one of two places:

- `rendered`: Alembic's offline mode, without touching the database (most revisions);
- `captured`: a trial run (`migration_resource.trial`) in a scratch database of the same
  server, never the live one, for the revisions offline mode cannot render: a data migration
  that reads rows fails there, since offline `execute()` returns None, and one whose offline
  SQL reads a table only shows the statements its code would send for rows it never saw. The
  trial replays the applied history and runs every pending revision (each needs the database
  the ones before it leave), but only the revisions that offline mode could not render take
  their SQL from it.

When the trial stops at a revision (its code raised), the revisions it did not reach that
offline mode cannot render either are `not_previewed`, with why: the gate judges each by its
fail-closed rules, and the real apply checks each statement before it is sent
(`migration_resource.statement_guard`). So does a plan for a database without tables, which
previews nothing (`checked_as_sent`): nothing there can be destroyed or locked, and the
apply judges each statement as it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migration_resource.classification import Classification
from migration_resource.core import ENGINE_LOGGER, EngineCore, with_recorded_row
from migration_resource.execution import render_offline
from migration_resource.outcomes import MigrationRefused
from migration_resource.phases import Release, ReleaseSplit, RevisionPhase, phases_of
from migration_resource.trial import TrialFailure, trial_run

if TYPE_CHECKING:
    from migration_resource.audit import AuditTrail
    from migration_resource.gate import Approval, Finding, GateDecision, LiveTables

logger = logging.getLogger(ENGINE_LOGGER)

RENDERED = "rendered"
CAPTURED = "captured"
NOT_PREVIEWED = "not_previewed"
CHECKED_AS_SENT = "checked_as_sent"
ALEMBIC_ID_WIDTH = 32  # the varchar Alembic makes alembic_version.version_num
# How many times a stopped trial goes on with the revision it stopped at stamped instead.
TRIAL_RETRIES = 3
CHECKED_AS_SENT_NOTE = ("the database has no tables yet: nothing to preview against; each "
                        "statement is judged by the change gate as it is sent")


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
    # every relation the database held, as (schema, name), and the schema unqualified names
    # resolve to: what tells the gate whether a CREATE TABLE IF NOT EXISTS creates a table or
    # finds one with rows (`EngineCore.live_relations`); None: not read
    live_tables: tuple[frozenset[tuple[str, str]], str] | None = None

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(step.revision for step in self.steps)

    @property
    def sql(self) -> dict[str, str]:
        return {step.revision: step.sql for step in self.steps}

    def describe_sources(self) -> str:
        counts = {source: sum(s.source == source for s in self.steps)
                  for source in (RENDERED, CAPTURED, NOT_PREVIEWED, CHECKED_AS_SENT)}
        if counts[CHECKED_AS_SENT]:
            return f"SQL: {counts[CHECKED_AS_SENT]} judged as it is sent"
        parts = [f"{counts[RENDERED]} rendered offline"]
        if counts[CAPTURED]:
            parts.append(f"{counts[CAPTURED]} captured in a scratch database")
        if counts[NOT_PREVIEWED]:
            parts.append(f"{counts[NOT_PREVIEWED]} not previewed")
        return "SQL: " + ", ".join(parts)


def build_plan(
    core: EngineCore,
    classification: Classification,
    *,
    stamp: str | None = None,
    preview: bool = True,
) -> MigrationPlan:
    """The plan from the classified database (or `stamp`) to its target; nothing changes.

    Revisions offline mode cannot render are run in a scratch database (a trial run), never
    on the live one. `preview=False` renders nothing: each revision is `checked_as_sent`,
    for the apply on a database with no tables, where nothing exists that a revision could
    destroy or lock, the apply judges each statement before sending it, and a preview would
    run the history a second time.
    """
    catalogue = core.catalogue
    (target,) = classification.target
    start = (stamp,) if stamp else classification.current
    order = catalogue.upgrade_order(start, target)
    live = core.live_relations()

    def file_of(revision: str) -> str:
        return catalogue.file_path(revision).name

    if not preview:
        steps = tuple(PlannedRevision(r, file_of(r), "", CHECKED_AS_SENT, CHECKED_AS_SENT_NOTE)
                      for r in order)
        return MigrationPlan(start=start, target=target, steps=steps, stamp=stamp,
                             live_tables=live)
    rendered = _render_what_offline_can(core, order, start, target)
    unrendered = [r for r in order if r not in rendered]
    if not unrendered:
        steps = tuple(PlannedRevision(r, file_of(r), rendered[r], RENDERED) for r in order)
        return MigrationPlan(start=start, target=target, steps=steps, stamp=stamp,
                             live_tables=live)

    logger.info("%d revisions read the database (the first: %s), so their SQL cannot be "
                "rendered offline; capturing what they run in a scratch database",
                len(unrendered), unrendered[0])
    trial = trial_run(
        core.database, core.scratch_engine, core.settings, start=start, order=order,
        target=target, extensions=core.live_extensions(), retries=TRIAL_RETRIES,
        script=catalogue.script,
    )
    failure = trial.failure
    if failure is not None:
        logger.warning("Trial run: %s", _failure_text(core, failure))
    stamped = ", ".join(trial.stamped)
    steps = tuple(
        PlannedRevision(r, file_of(r), rendered[r], RENDERED) if r in rendered
        else PlannedRevision(r, file_of(r), trial.sql(r), CAPTURED,
                             f"captured with {stamped} stamped instead of run (the trial "
                             "could not run it)" if stamped else "")
        if r in trial.captured
        else PlannedRevision(r, file_of(r), "", NOT_PREVIEWED, _not_previewed_note(r, failure))
        for r in order
    )
    if trial.stamped:
        logger.info("Trial run: captured with %s stamped instead of run", stamped)
    return MigrationPlan(start=start, target=target, steps=steps, stamp=stamp,
                         trial_failure=failure, live_tables=live)


def _failure_text(core: EngineCore, failure: TrialFailure) -> str:
    if failure.replaying:
        return f"the preview could not run: {failure.error_type}: {failure.message}"
    return (f"revision {failure.revision} ({core.catalogue.file_path(failure.revision).name}) "
            f"raised {failure.error_type}: {failure.message}")


def _render_what_offline_can(
    core: EngineCore, order: tuple[str, ...], start: tuple[str, ...], target: str
) -> dict[str, str]:
    """Offline SQL of every planned revision that neither reads rows nor fails to render.

    Offline mode needs no database, so rendering goes on past a revision it cannot render:
    the next run starts from that revision. From several current heads (before a merge) it
    starts at one of them; the already applied revisions it renders are left out.
    """
    planned = set(order)
    rendered: dict[str, str] = {}
    seen: set[str] = set()
    begin = start[0] if start else "base"
    for _ in range(len(order) + 1):
        rendering = render_offline(core.settings, begin, target,
                                   script=core.catalogue.script)
        for revision, sql in rendering.sql.items():
            if revision in planned and revision not in seen:
                seen.add(revision)
                if not _reads_rows(sql):
                    rendered[revision] = sql
        if rendering.error is None:
            break
        stopped = next((r for r in order if r not in seen), None)
        if stopped is None:
            break
        logger.info("Revision %s cannot be rendered offline (%s: %s)", stopped,
                    type(rendering.error).__name__,
                    " ".join(str(rendering.error).split())[:200])
        seen.add(stopped)
        begin = stopped
    return rendered


def _not_previewed_note(revision: str, failure: TrialFailure | None) -> str:
    if failure is None:
        return "the trial run did not reach it"
    if failure.replaying and failure.error_type == "ScratchUnavailable":
        return failure.message
    if failure.replaying:
        return (f"replaying the applied history into the scratch database stopped after "
                f"{failure.revision}: {failure.error_type}: {failure.message}")
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
@dataclass(frozen=True)
class Judgement:
    """The gate's decision on what runs now, each revision's phase, and what waits."""

    decision: GateDecision
    phases: tuple[RevisionPhase, ...]
    split: ReleaseSplit
    # what approves a destructive statement: the deploy's flag, or the revision file's own
    # approval lines (the apply's statement guard asks the same)
    allow_destructive: bool = False
    approvals: Mapping[str, tuple[Approval, ...]] = field(default_factory=dict)
    live: LiveTables | None = None  # what the apply's statement guard judges against too

    def phases_dict(self) -> tuple[dict[str, object], ...]:
        deferred = set(self.split.deferred)
        return tuple({**one.as_dict(), "deferred": one.revision in deferred}
                     for one in self.phases)


def judge(
    core: EngineCore, plan: MigrationPlan, allow_destructive: bool,
    release: Release | None = None,
) -> Judgement:
    """The gate's findings on the plan's SQL, each revision's phase, and, for a deploy or an
    application container (`release`), which contract revisions wait for a later release.

    Only what runs now is judged: a deferred revision is judged by the deploy that runs it.
    Its deferral does not approve it: a destructive finding in production needs the deploy's
    AllowDestructive or the revision file's approval line naming it, in whichever deploy.
    """
    from migration_resource import gate  # noqa: PLC0415 - deferred on purpose, see above

    refuse_ids_too_long(core, plan.order)
    seen = {s.revision: s.sql for s in plan.steps if s.source in (RENDERED, CAPTURED)}
    live = None if plan.live_tables is None else gate.LiveTables(*plan.live_tables)
    findings: list[Finding] = list(gate.analyse(seen, live=live))
    findings += [
        gate.Finding(
            revision=s.revision, kind=gate.DESTRUCTIVE, rule="not_previewed", statement="",
            message=f"Its SQL could not be previewed ({s.note}); what the gate cannot see "
                    "counts as destructive: check it by hand and approve it.",
        )
        for s in plan.steps if s.source == NOT_PREVIEWED
    ]
    texts: dict[str, str] = {}

    def file_text(revision: str) -> str:
        if revision not in texts:
            texts[revision] = core.catalogue.file_path(revision).read_text()
        return texts[revision]

    phases = phases_of(plan.order, findings, file_text)
    if release is None:
        split = ReleaseSplit(run=plan.order, deferred=(), target=plan.target)
    else:
        split = release.split(plan.order, {p.revision: p.phase for p in phases}, plan.target,
                              lambda revision: core.catalogue.ancestry((revision,)))
    running = set(split.run)
    try:
        approvals = {revision: gate.approvals_in(revision, file_text(revision))
                     for revision in split.run}
    except gate.ApprovalLineError as error:
        raise MigrationRefused(f"pending_migrations: {error}; nothing was changed. Fix the "
                               "line and deploy again", None) from None
    allow = allow_destructive or core.settings.allow_destructive
    decision = gate.decide(
        [f for f in findings if f.revision in running], stage=core.settings.stage,
        allow_destructive=allow, approvals=approvals,
    )
    return Judgement(decision=decision, phases=phases, split=split, allow_destructive=allow,
                     approvals=approvals, live=live)


def refuse_ids_too_long(core: EngineCore, order: tuple[str, ...]) -> None:
    """Refuse, before anything changes, revisions whose ids alembic_version cannot hold:
    Alembic makes its version_num varchar(32), and a longer id would fail the run once the
    revision's work was done, in its last statement."""
    longest = max(order, key=len, default="")
    if len(longest) <= ALEMBIC_ID_WIDTH:
        return
    width = core.version_width()
    if width is None or len(longest) <= width:
        return
    wide = max(64, len(longest))
    raise MigrationRefused(
        f"pending_migrations: revision {longest[:120]} has a {len(longest)}-character id, "
        f"and alembic_version.version_num holds {width}; nothing was changed. Widen it "
        f"first: ALTER TABLE alembic_version ALTER COLUMN version_num TYPE varchar({wide}) "
        "(on a database without alembic_version, create it so: CREATE TABLE alembic_version "
        f"(version_num varchar({wide}) NOT NULL CONSTRAINT alembic_version_pkc PRIMARY KEY)), "
        "then deploy again", None)


def log_findings(decision: GateDecision) -> None:
    for finding in decision.warnings:
        logger.warning("Change gate (%s, %s %s): %s", finding.revision, finding.kind,
                       finding.rule, finding.message)


def gate_refusal(decision: GateDecision) -> str | None:
    """The refusal's message: what blocks, that nothing changed, then how to approve it."""
    blocked = decision.refusal()
    if blocked is None:
        return None
    return f"pending_migrations: {blocked}; nothing was changed. {decision.next_step()}"


def refuse_if_gated(
    decision: GateDecision, classification: Classification, trail: AuditTrail
) -> None:
    message = gate_refusal(decision)
    if message is None:
        return
    if trail.record_refusal("upgrade", decision.blocking[0].revision, "refused", detail=message):
        message = with_recorded_row(message)
    logger.warning(message)
    raise MigrationRefused(message, classification)
