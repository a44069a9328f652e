"""A deploy's plan: what the database needs (classify, gate, snapshot or not), then its apply.

A deploy may outlast one Lambda run (a snapshot to wait for, a migration that needs a whole
run), so the adapter carries the plan from the run that made it to the run that applies it
(`DeployPlan.to_json` / `from_json`): the decisions are made once, before anything costly,
and the apply checks under the migration lock that the database is still the one planned
for. The engine knows nothing of snapshots beyond "one is needed first": taking it is the
adapter's part.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from migration_resource.audit import RunContext
from migration_resource.classification import Classification, describe_revisions
from migration_resource.commands import inspect, migrate
from migration_resource.core import ENGINE_LOGGER, EngineCore
from migration_resource.outcomes import EngineError, MigrationRefused, Outcome, UsageError
from migration_resource.phases import Release
from migration_resource.states import DatabaseState

logger = logging.getLogger(ENGINE_LOGGER)

# What a plan asks of the apply.
NOTHING, BOOKKEEPING, MIGRATE = "nothing", "bookkeeping", "migrate"
# States whose data a snapshot protects (an empty database has nothing to lose).
PROTECTED_STATES = (DatabaseState.PENDING_MIGRATIONS,
                    DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY)


@dataclass(frozen=True)
class DeployRequest:
    """What the deploying template asks for."""

    target: str
    target_heads: tuple[str, ...] | None
    history_digest: str | None
    allow_destructive: bool
    snapshot_before_migrate: bool
    # The target revision(s) of the release being replaced (an Update's
    # OldResourceProperties), None when unknown (a Create): its contract revisions may run,
    # the others wait for a later release.
    live_release: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DeployPlan:
    """The decisions of a deploy, made once and carried to the run that applies them."""

    action: str  # NOTHING, BOOKKEEPING or MIGRATE
    state: str  # the database's state when planned
    from_revision: str
    to_revision: str
    snapshot: bool  # a snapshot must be available before the apply
    pending: tuple[str, ...]  # the revisions to apply now, in order (none when only known
    # after the baseline establishes a history)
    deferred: tuple[str, ...] = ()  # contract revisions (and what follows) left for later

    @property
    def changes(self) -> bool:
        return self.action != NOTHING

    @property
    def migrates(self) -> bool:
        """Runs revisions or a baseline: needs a whole revision's time, not one query's."""
        return self.action == MIGRATE

    def describe(self) -> str:
        revisions = (f"{len(self.pending)} revision(s) {', '.join(self.pending)}"
                     if self.pending else "the revisions the baseline leaves pending")
        if self.action == NOTHING:
            return f"{self.state} at {self.from_revision}: nothing to change"
        if self.action == BOOKKEEPING:
            return (f"{self.state} at {self.from_revision}: record the trail's bookkeeping, "
                    "no schema change")
        if not self.pending and self.deferred:
            revisions = "no revision to apply now"
        return (f"{self.state}: {self.from_revision} → {self.to_revision}, {revisions}"
                f"{', after a snapshot' if self.snapshot else ''}"
                + (f"; deferred to the next release: {', '.join(self.deferred)}"
                   if self.deferred else ""))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeployPlan:
        try:
            raw: Mapping[str, Any] = json.loads(text)
            plan = cls(action=str(raw["action"]), state=str(raw["state"]),
                       from_revision=str(raw["from_revision"]),
                       to_revision=str(raw["to_revision"]), snapshot=bool(raw["snapshot"]),
                       pending=tuple(str(one) for one in raw["pending"]),
                       deferred=tuple(str(one) for one in raw.get("deferred", ())))
        except (ValueError, KeyError, TypeError):
            raise EngineError("The deploy plan this run carries cannot be read (it was made by "
                              "another version); nothing was changed. Deploy again") from None
        if plan.action not in (NOTHING, BOOKKEEPING, MIGRATE):
            raise EngineError(f"The deploy plan's action {plan.action[:40]!r} is unknown (it was "
                              "made by another version); nothing was changed. Deploy again")
        return plan


@dataclass(frozen=True)
class PlannedDeploy:
    plan: DeployPlan
    status: Outcome  # the classification the plan was made from (the no-change answer)


def plan_deploy(
    core: EngineCore, request: DeployRequest, *, context: RunContext | None = None
) -> PlannedDeploy:
    """Classify (one query when nothing changed), refuse an inconsistent database, and for a
    database that needs changes judge them at the change gate now, before any snapshot: a
    refused deploy costs nothing and says why."""
    status = inspect.status(core, request.target, target_heads=request.target_heads,
                            history_digest=request.history_digest, with_history=False)
    before = status.classification
    migrate.refuse_if_inconsistent(core, before)
    action = _action(before)
    pending: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    if action == MIGRATE:
        judgement = migrate.check_gate(core, before, allow_destructive=request.allow_destructive,
                                       context=context, release=release_of(core, request, before))
        pending = before.pending
        if judgement is not None:
            pending, deferred = judgement.split.run, judgement.split.deferred
    changes_schema = action == MIGRATE and (bool(pending) or not deferred)
    plan = DeployPlan(
        action=action, state=before.state.value,
        from_revision=describe_revisions(before.current),
        to_revision=describe_revisions(before.target),
        snapshot=changes_schema and request.snapshot_before_migrate
        and before.state in PROTECTED_STATES,
        pending=pending, deferred=deferred,
    )
    if plan.changes:
        logger.info("Deploy plan: %s", plan.describe())
    return PlannedDeploy(plan=plan, status=status)


def apply_deploy(
    core: EngineCore, request: DeployRequest, plan: DeployPlan, *,
    context: RunContext | None = None,
) -> Outcome:
    """Carry out a plan, possibly in a later run than the one that made it.

    Under the lock the database is classified again (another migrator may have moved it);
    what was decided stays decided, except that a database planned as empty (no snapshot)
    that has data by now is refused: it would be migrated without the snapshot it needs.
    """
    if not plan.changes:
        raise UsageError("This deploy plan changes nothing; there is nothing to apply")

    def still_planned(now: Classification) -> None:
        if (request.snapshot_before_migrate and plan.state == DatabaseState.EMPTY.value
                and now.state in PROTECTED_STATES):
            raise MigrationRefused(
                f"{now.state.value}: the database was {plan.state} when this deploy planned "
                "its changes (so no snapshot was taken) and is "
                f"{now.state.value} at {describe_revisions(now.current)} now; nothing was "
                "changed. Deploy again: the new plan takes the snapshot first",
                now,
            )

    return migrate.migrate(
        core, request.target, target_heads=request.target_heads,
        history_digest=request.history_digest, fix_history=True,
        allow_destructive=request.allow_destructive, context=context,
        check_locked=still_planned,
        release=None if plan.state == DatabaseState.EMPTY.value
        else release_of(core, request, None),
    )


def release_of(
    core: EngineCore, request: DeployRequest, before: Classification | None
) -> Release | None:
    """What is live, for the deferral of contract revisions; None on an empty database,
    where no code can be using anything a revision removes."""
    if before is not None and before.state is DatabaseState.EMPTY:
        return None
    live = request.live_release
    if not live or not all(core.catalogue.is_known(revision) for revision in live):
        return Release(contains=None)
    return Release(contains=core.catalogue.ancestry(live))


def _action(before: Classification) -> str:
    if before.state in (DatabaseState.UP_TO_DATE, DatabaseState.AHEAD):
        return BOOKKEEPING if before.needs_bookkeeping else NOTHING
    return MIGRATE
