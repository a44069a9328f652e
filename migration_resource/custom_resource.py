"""`Custom::DatabaseMigration`: what CloudFormation's Create/Update/Delete mean for the database.

The engine plans the deploy (`MigrationEngine.plan_deploy`: classify, refuse an inconsistent
database, judge the changes at the gate, decide whether a snapshot comes first) and this
adapter carries the plan out: nothing to do answers at once; otherwise the snapshot is
started and crhelper's polling (a re-invocation every minute, `crhelper_lifecycle`) waits for
it, then `MigrationEngine.apply_deploy` migrates. Polling is what lets a large snapshot or a
long migration outlast one Lambda run; the custom resource's ServiceTimeout bounds the whole.
The poll input is fixed when polling starts, so the plan, the snapshot id and the start time
travel in it (crhelper's `CrHelperData`) to every later run.

With `MigrateOnDeploy` false (stage setting `migrateOnDeploy`) a Create/Update only
classifies, read-only, and answers SUCCESS: no snapshot, no change, never a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from migration_resource.audit import RunContext
from migration_resource.classification import describe_revisions
from migration_resource.commands.deploy import DeployPlan, DeployRequest
from migration_resource.crhelper_lifecycle import CrHelperLifecycle
from migration_resource.deploy_event import MigrationProperties, stack_name
from migration_resource.dsn import mask_text
from migration_resource.engine import MigrationEngine
from migration_resource.outcomes import EngineError, Outcome
from migration_resource.snapshots import (
    SnapshotError,
    database_status,
    snapshot_identifier,
    snapshot_status,
    start_snapshot,
)

logger = logging.getLogger(__name__)

# CloudFormation sends the Update of a rollback with the old properties; the stack's own
# status tells it apart. During these we answer SUCCESS without touching the database.
ROLLBACK_STATUSES = frozenset({
    "ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "IMPORT_ROLLBACK_IN_PROGRESS",
})
# Seconds kept free at the end of a Lambda run: stop starting work before crhelper's own
# timer answers for us.
TIME_MARGIN_SECONDS = 20
POLLING_INTERVAL_MINUTES = 1
# What the runs of one request carry to its polls (crhelper's CrHelperData).
PLAN_KEY, SNAPSHOT_KEY, STARTED_KEY = "DeployPlan", "SnapshotId", "StartedAt"
# Runs in a row that stopped before their first revision for lack of time: planning (a trial
# in a scratch database, say) leaves too little of a whole Lambda run for a revision, and
# every poll would stop the same way until ServiceTimeout. After this many the deploy fails.
STALLED_KEY, MAX_STALLED_RUNS = "StalledRuns", 3
RESPONSE_DATA_KEYS = ("State", "FromRevision", "ToRevision", "Applied", "SnapshotId", "Expand",
                      "Contract", "Deferred")
# The State answered when migrations on deploy are disabled and the database cannot be read.
UNKNOWN_STATE = "unknown"
ERROR_TEXT_LIMIT = 300


class LambdaContext(Protocol):
    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int: ...


class MetricsHooks(Protocol):
    def outcome(self, outcome: Outcome) -> None: ...
    def failure(self) -> None: ...
    def snapshot(self, seconds: float) -> None: ...


Run = Callable[[Mapping[str, Any], "LambdaContext"], "str | None"]


@dataclass
class Services:
    """Everything with a side effect, built by the handler (and by tests)."""

    engine_factory: Callable[[MigrationProperties], MigrationEngine]
    rds: Callable[[], Any]
    cloudformation: Callable[[], Any]
    metrics: MetricsHooks
    clock: Callable[[], float] = time.time
    ssl_verify: bool | str | None = None


class MigrationResource(CrHelperLifecycle):
    """The deploy's runs: plan in the first, then snapshot and apply, in as many as it takes."""

    response_keys = RESPONSE_DATA_KEYS
    expected_failures = (EngineError, SnapshotError)
    timeout_reason = ("the migration Lambda ran out of time. Revisions that finished are "
                      "committed and recorded in migration_audit; raise the Lambda timeout and "
                      "deploy again")

    def __init__(self, services: Services) -> None:
        super().__init__(polling_interval_minutes=POLLING_INTERVAL_MINUTES,
                         ssl_verify=services.ssl_verify)
        self.services = services
        self.create(self._counting_failures(self._first_run))
        self.update(self._counting_failures(self._first_run))
        self.delete(self._delete)
        self.poll_create(self._counting_failures(self._next_run))
        self.poll_update(self._counting_failures(self._next_run))

    # -- runs ------------------------------------------------------------------------------
    def _first_run(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        """Plan, answer what changes nothing, and start carrying out the rest."""
        self.keep_polling()
        own_id = self.own_physical_id(event)
        # A rollback must complete whatever its old properties say and whatever the
        # database does, so whatever fails first asks whether this is one. A database with
        # nothing to change gets the same answer either way: the stack's status (and the
        # AWS SDK, a sixth of a cold start) is read only when the deploy would change
        # something.
        try:
            properties = MigrationProperties.parse(event.get("ResourceProperties", {}))
            if not properties.migrate_on_deploy:
                self._report_without_migrating(properties)
                return own_id
            engine = self.services.engine_factory(properties)
        except Exception:
            if self._rollback_answered(event):
                return own_id
            raise
        try:
            try:
                planned = engine.plan_deploy(deploy_request(properties, event),
                                             context=_deploy_context(event))
            except Exception:
                if self._rollback_answered(event):
                    return own_id
                raise
            if not planned.plan.changes:
                self._answer(planned.status)
                return own_id
            if self._rollback_answered(event):
                return own_id
            self.Data[PLAN_KEY] = planned.plan.to_json()
            self.Data[STARTED_KEY] = str(int(self.services.clock()))
            self.Data[SNAPSHOT_KEY] = self._snapshot_name(event, planned.plan)
            return self._carry_out(engine, properties, planned.plan, event, context,
                                   may_poll=True)
        finally:
            engine.close()

    def _next_run(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        """A poll: the plan, snapshot id and start time come from the first run."""
        over = self._request_over(event)
        if over is not None:
            # Answered already (crhelper's timer, an earlier poll), or the stack moved on:
            # touching the database now would act for a request CloudFormation closed.
            logger.warning("Poll for request %s: %s; stopping without touching the "
                           "database", event.get("RequestId"), over)
            self.stop_polling_silently()
            return None
        properties = MigrationProperties.parse(event.get("ResourceProperties", {}))
        plan = DeployPlan.from_json(str(self.Data.get(PLAN_KEY, "")))
        self._check_service_timeout(event)
        engine = self.services.engine_factory(properties)
        try:
            return self._carry_out(engine, properties, plan, event, context,
                                   may_poll=False)
        finally:
            engine.close()

    def _delete(self, event: Mapping[str, Any], context: LambdaContext) -> str:
        # The schema and its data belong to the application; removing this resource (or
        # the stack) must never drop or downgrade anything.
        logger.info("Delete: the database is left as it is")
        self.answer_now()
        return self.own_physical_id(event)

    def _carry_out(
        self, engine: MigrationEngine, properties: MigrationProperties, plan: DeployPlan,
        event: Mapping[str, Any], context: LambdaContext, *, may_poll: bool,
    ) -> str | None:
        """The plan's next steps: the snapshot (if it needs one), then the apply, when this
        run has the time; None keeps crhelper polling."""
        snapshot_id = str(self.Data.get(SNAPSHOT_KEY) or "")
        if plan.snapshot and not self._snapshot_available(properties, snapshot_id):
            return None
        if plan.migrates and not self._enough_time(engine, context):
            if may_poll:
                return None  # a poll starts with a whole Lambda run
            left = context.get_remaining_time_in_millis() / 1000
            raise EngineError(
                f"timeout: this Lambda run has {left:.0f} s, and a migration may need "
                f"MIGRATION_TIMEOUT ({engine.settings.migration_timeout_seconds} s) plus "
                f"{TIME_MARGIN_SECONDS} s; nothing was changed. Raise the Lambda timeout "
                "above MIGRATION_TIMEOUT and deploy again"
            )
        engine.time_left = lambda: context.get_remaining_time_in_millis() / 1000
        outcome = engine.apply_deploy(deploy_request(properties, event), plan,
                                      context=_deploy_context(event, snapshot_id or None))
        if not outcome.complete:
            # Committed revisions stay; crhelper's next poll (a whole Lambda run) goes on.
            logger.info("%s", outcome.message)
            self._count_stalled_runs(outcome, engine)
            self.keep_polling()
            return None
        self._answer(outcome)
        return self.own_physical_id(event)

    def _count_stalled_runs(self, outcome: Outcome, engine: MigrationEngine) -> None:
        stalled = 0 if outcome.applied else int(self.Data.get(STALLED_KEY) or 0) + 1
        if stalled >= MAX_STALLED_RUNS:
            raise EngineError(
                f"timeout: {stalled} runs in a row stopped before their first revision, each "
                "with less than MIGRATION_TIMEOUT "
                f"({engine.settings.migration_timeout_seconds} s) plus {TIME_MARGIN_SECONDS} s "
                "left after planning; nothing more was changed. Raise the Lambda timeout or "
                "lower MIGRATION_TIMEOUT, and deploy again")
        self.Data[STALLED_KEY] = str(stalled)

    def _report_without_migrating(self, properties: MigrationProperties) -> None:
        """migrateOnDeploy false: classify read-only and answer SUCCESS, whatever happens.

        This is the escape hatch for shipping code while a migration keeps failing, so it
        must never block the deploy: a database that cannot be reached or classified is
        reported as `unknown` with a warning, not as a failure.
        """
        self.answer_now()
        self.Data.update(Applied="0", SnapshotId="")
        try:
            engine = self.services.engine_factory(properties)
            try:
                classification = engine.status(
                    properties.target_revision, target_heads=properties.target_heads,
                    history_digest=properties.history_digest, with_history=False,
                ).classification
            finally:
                engine.close()
        except Exception as error:  # whatever it is, it must not fail this deploy
            logger.warning(
                "Migrations on deploy are disabled (migrateOnDeploy is false): the database "
                "could not be classified (%s); nothing was changed", _one_line(error))
            self.Data.update(State=UNKNOWN_STATE, FromRevision="", ToRevision="")
            return
        revision = describe_revisions(classification.current)
        logger.warning(
            "Migrations on deploy are disabled (migrateOnDeploy is false): the database is %s "
            "at %s; nothing was changed", classification.state.value, revision)
        self.Data.update(State=classification.state.value, FromRevision=revision,
                         ToRevision=revision)

    # -- steps -------------------------------------------------------------------------------
    def _counting_failures(self, run: Run) -> Run:
        def counted(event: Mapping[str, Any], context: LambdaContext) -> str | None:
            try:
                return run(event, context)
            except Exception:
                # crhelper turns the exception into the FAILED answer; the alarm needs the
                # count.
                self.services.metrics.failure()
                raise

        return counted

    def _answer(self, outcome: Outcome) -> None:
        self.services.metrics.outcome(outcome)
        self.Data.update(
            State=outcome.classification.state.value,
            FromRevision=describe_revisions(outcome.classification.current),
            ToRevision=describe_revisions(outcome.final),
            Applied=str(len(outcome.applied)),
            SnapshotId=str(self.Data.get(SNAPSHOT_KEY) or ""),
            **phase_data(outcome),
        )
        if outcome.deferred:
            logger.warning("Deferred to the next release: %s", ", ".join(outcome.deferred))
        self.answer_now()

    def _enough_time(self, engine: MigrationEngine, context: LambdaContext) -> bool:
        """Start a migration only with time for a revision's MIGRATION_TIMEOUT and a margin
        (the apply also stops between revisions when the next one may not fit)."""
        needed = engine.settings.migration_timeout_seconds + TIME_MARGIN_SECONDS
        left = context.get_remaining_time_in_millis() / 1000
        if left < needed:
            logger.warning("Not starting the migration: %.0f s left in this run, %d s needed",
                           left, needed)
        return left >= needed

    def _check_service_timeout(self, event: Mapping[str, Any]) -> None:
        started = float(self.Data.get(STARTED_KEY) or self.services.clock())
        service_timeout = float(event.get("ResourceProperties", {}).get("ServiceTimeout", 3600))
        waited = self.services.clock() - started
        if waited > service_timeout:
            raise EngineError(
                f"timeout: the deploy has waited {int(waited)} s (ServiceTimeout "
                f"{int(service_timeout)} s); nothing more was changed. Check snapshot "
                f"{self.Data.get(SNAPSHOT_KEY) or '(none)'} and deploy again"
            )

    def _snapshot_name(self, event: Mapping[str, Any], plan: DeployPlan) -> str:
        if not plan.snapshot:
            return ""
        return snapshot_identifier(stack_name(event), plan.to_revision.split(",")[0].strip(),
                                   datetime.fromtimestamp(self.services.clock(), UTC))

    def _snapshot_available(self, properties: MigrationProperties, snapshot_id: str) -> bool:
        """Start the snapshot once the database is available; True once it is available.

        A failed or refused snapshot stops the deploy before any migration runs.
        """
        try:
            return self._snapshot_step(properties, snapshot_id)
        except SnapshotError as error:
            raise EngineError(f"pending_migrations: {error}") from None

    def _snapshot_step(self, properties: MigrationProperties, snapshot_id: str) -> bool:
        if properties.snapshot_target is None or not snapshot_id:
            raise SnapshotError("the deploy plan needs a snapshot but names no database to "
                                "snapshot; nothing was changed. Deploy again")
        rds = self.services.rds()
        target = properties.snapshot_target
        status = snapshot_status(rds, target, snapshot_id)
        if status is None:
            database = database_status(rds, target)
            if database != "available":
                logger.info("Waiting for %s to be available (now %s) before the snapshot",
                            target.identifier, database)
                return False
            start_snapshot(rds, target, snapshot_id, {"CreatedBy": "db-migrations",
                                                       "Purpose": "pre-migration"})
            logger.info("Started pre-migration snapshot %s of %s", snapshot_id,
                        target.identifier)
            status = snapshot_status(rds, target, snapshot_id)
        if status == "available":
            started = self.Data.get(STARTED_KEY)
            if started:
                self.services.metrics.snapshot(self.services.clock() - float(started))
            logger.info("Snapshot %s is available", snapshot_id)
            return True
        if status in ("creating", "pending", "backing-up", None):
            logger.info("Snapshot %s is %s", snapshot_id, status)
            return False
        raise SnapshotError(
            f"snapshot {snapshot_id} is {status}; nothing was changed. Check the snapshot in "
            "the RDS console and deploy again"
        )

    def _rollback_answered(self, event: Mapping[str, Any]) -> bool:
        """True (and the answer set) when this Update is a stack rollback's."""
        if not self._in_rollback(event):
            return False
        logger.info("Stack rollback in progress: the database is left as it is")
        self.Data.update(State="rollback", FromRevision="", ToRevision="", Applied="0",
                         SnapshotId="")
        self.answer_now()
        return True

    def _in_rollback(self, event: Mapping[str, Any]) -> bool:
        if event.get("RequestType") != "Update":
            return False
        try:
            stacks = self.services.cloudformation().describe_stacks(
                StackName=event["StackId"])["Stacks"]
        except Exception as error:  # the normal path never downgrades either
            logger.warning("Could not read the stack status (%s); treating the event as a "
                           "normal update, which never downgrades", type(error).__name__)
            return False
        status = stacks[0]["StackStatus"] if stacks else ""
        logger.info("Stack status: %s", status)
        return status in ROLLBACK_STATUSES

    def _request_over(self, event: Mapping[str, Any]) -> str | None:
        """Why the request this poll carries is no longer waiting for us, or None."""
        if self._in_rollback(event):
            # The rollback's own request shows the resource in progress again.
            return "the stack is rolling back"
        try:
            resource = self.services.cloudformation().describe_stack_resource(
                StackName=event["StackId"], LogicalResourceId=event["LogicalResourceId"],
            )["StackResourceDetail"]
        except Exception as error:  # unknown: go on, as a poll did before this check
            logger.warning("Could not read the resource's status (%s); going on",
                           mask_text(str(error))[:200])
            return None
        status = str(resource.get("ResourceStatus", ""))
        if status.endswith("_IN_PROGRESS") and not status.startswith(("DELETE", "ROLLBACK")):
            return None
        return f"the resource is {status or 'gone'}"


def deploy_request(properties: MigrationProperties, event: Mapping[str, Any]) -> DeployRequest:
    return DeployRequest(
        target=properties.target_revision, target_heads=properties.target_heads,
        history_digest=properties.history_digest,
        allow_destructive=properties.allow_destructive,
        snapshot_before_migrate=properties.snapshot_before_migrate,
        live_release=live_release(event),
    )


def live_release(event: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The target revision of the release this Update replaces: what is live now."""
    if event.get("RequestType") != "Update":
        return None
    old = event.get("OldResourceProperties")
    target = old.get("TargetRevision") if isinstance(old, Mapping) else None
    if not isinstance(target, str) or target in ("", "head", "heads") or len(target) > 256:
        return None
    return tuple(part.strip() for part in target.split(",") if part.strip()) or None


def phase_data(outcome: Outcome) -> dict[str, str]:
    """The response's Expand/Contract/Deferred: the revisions of this deploy by phase."""
    phases = outcome.phases or ()
    return {
        "Expand": ",".join(str(p["revision"]) for p in phases if p["phase"] == "expand"),
        "Contract": ",".join(str(p["revision"]) for p in phases if p["phase"] == "contract"),
        "Deferred": ",".join(outcome.deferred),
    }


def _one_line(error: BaseException) -> str:
    """An error for a log line: its type, one line, bounded, any URL password masked."""
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {mask_text(text)[:ERROR_TEXT_LIMIT]}"


def _deploy_context(event: Mapping[str, Any], snapshot_id: str | None = None) -> RunContext:
    """Who acts, for the audit trail: this deploy's request."""
    return RunContext(actor="deploy", request_id=str(event.get("RequestId", "")),
                      snapshot_id=snapshot_id)
