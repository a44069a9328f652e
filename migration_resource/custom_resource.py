"""`Custom::DatabaseMigration`: what CloudFormation's Create/Update/Delete mean for the database.

Built on crhelper, configured for this product: it does not re-level the root logger, never
sleeps on Delete, sends its response with a bounded sender (crhelper's retries forever),
keeps every response under CloudFormation's 4 KB and builds crhelper's polling clients only
when it polls.

A Create/Update classifies the database. Nothing to do (`up_to_date`, `ahead`) or nothing
to lose (`empty`) answers at once. When migrations are pending, the engine's change gate
decides first (a refused deploy takes no snapshot), then the snapshot is started and
crhelper's polling (a scheduled re-invocation every minute) takes over: each poll checks the
snapshot and, once it is `available`, migrates. Polling is what lets a large snapshot or a
long migration outlast one Lambda run; the custom resource's ServiceTimeout bounds the whole.
The poll input is fixed when polling starts, so everything a poll needs is derived again
from the database and RDS, or was decided up front (the snapshot id, the start time).

With `MigrateOnDeploy` false (stage setting `migrateOnDeploy`) a Create/Update only
classifies, read-only, and answers SUCCESS: no snapshot, no change, never a failure.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import crhelper

from migration_resource import delivery
from migration_resource.audit import RunContext
from migration_resource.classification import Classification, describe_revisions
from migration_resource.deploy_event import (
    MigrationProperties,
    stack_name,
)
from migration_resource.dsn import mask_text
from migration_resource.engine import MigrationEngine
from migration_resource.outcomes import EngineError, Outcome
from migration_resource.reasons import short_reason
from migration_resource.snapshots import (
    SnapshotError,
    database_status,
    snapshot_identifier,
    snapshot_status,
    start_snapshot,
)
from migration_resource.states import DatabaseState

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
# The poll input is the event crhelper stored when polling began: keys we add there.
SNAPSHOT_KEY, STARTED_KEY = "SnapshotId", "StartedAt"


class LambdaContext(Protocol):
    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int: ...


class MetricsHooks(Protocol):
    def outcome(self, outcome: Outcome) -> None: ...
    def failure(self) -> None: ...
    def snapshot(self, seconds: float) -> None: ...


@dataclass
class Services:
    """Everything with a side effect, built by the handler (and by tests)."""

    engine_factory: Callable[[MigrationProperties], MigrationEngine]
    rds: Callable[[], Any]
    cloudformation: Callable[[], Any]
    metrics: MetricsHooks
    clock: Callable[[], float] = time.time
    ssl_verify: bool | str | None = None


# crhelper's partial annotations do not cover the attributes and hooks we override.
_CfnResource: Any = crhelper.CfnResource
# crhelper's own switch (for `sam local`) that skips building its clients at construction.
_CRHELPER_LOCAL = "AWS_SAM_LOCAL"


@contextmanager
def _crhelper_clients_deferred() -> Iterator[str | None]:
    """crhelper's constructor builds lambda, events and logs clients, about 100 ms of a cold
    start (botocore loads each service model), that only polling uses (logs: never). Its local
    switch skips them; MigrationResource builds each on first use instead. Yields the
    switch's own value, so a real `sam local` run keeps crhelper's local behaviour."""
    original = os.environ.get(_CRHELPER_LOCAL)
    os.environ[_CRHELPER_LOCAL] = "true"
    try:
        yield original
    finally:
        if original is None:
            os.environ.pop(_CRHELPER_LOCAL, None)
        else:
            os.environ[_CRHELPER_LOCAL] = original


class MigrationResource(_CfnResource):  # type: ignore[misc]
    """crhelper's lifecycle with this product's settings and handlers."""

    def __init__(self, services: Services) -> None:
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        with _crhelper_clients_deferred() as local:
            super().__init__(json_logging=False, log_level="INFO", boto_level="WARNING",
                             polling_interval=POLLING_INTERVAL_MINUTES, sleep_on_delete=0,
                             ssl_verify=services.ssl_verify)
        self._sam_local = local  # polling works as crhelper would have it
        # crhelper re-levels the root logger at construction; give the Lambda's back.
        root.setLevel(level)
        root.handlers[:] = handlers
        self.services = services
        self._answer_now = False
        # One answer per request: crhelper's timer thread and the main thread may both try
        # in the last half second; the first one wins.
        self._answer_lock = threading.Lock()
        self._answered_request: str | None = None
        # A poll that found its request already over: remove the rule, answer nothing.
        self._stop_polling_silently = False
        self.create(self._create_or_update)
        self.update(self._create_or_update)
        self.delete(self._delete)
        self.poll_create(self._poll)
        self.poll_update(self._poll)

    # crhelper's polling clients, built on first use (see _crhelper_clients_deferred).
    @functools.cached_property
    def _lambda_client(self) -> Any:
        return self._crhelper_client("lambda")

    @functools.cached_property
    def _events_client(self) -> Any:
        return self._crhelper_client("events")

    @functools.cached_property
    def _logs_client(self) -> Any:
        return self._crhelper_client("logs")

    def _crhelper_client(self, name: str) -> Any:
        import boto3  # noqa: PLC0415 - crhelper imported it already

        return boto3.client(name, region_name=self._region, verify=self._ssl_verify)

    # -- crhelper hooks ----------------------------------------------------------------
    def _log_setup(self, event: Any, context: Any) -> None:
        """Logging is configured by the handler; crhelper must not touch it per event."""

    def _polling_init(self, event: Any) -> None:
        # crhelper starts polling after every Create/Update; we answer at once when the
        # first run already finished (no snapshot to wait for, no time problem).
        if "CrHelperPoll" not in event and self._answer_now:
            self._send_response = True
            return
        if self._stop_polling_silently:
            self._stop_polling_silently = False
            self._remove_polling()
            self._send_response = False
            return
        super()._polling_init(event)

    def _remove_polling(self) -> None:
        """crhelper's clean-up of its poll rule; after a success, a failure to clean up is a
        warning (the rule's next firing finds the request answered and stops), never the
        answer."""
        try:
            super()._remove_polling()
        except Exception as error:  # boto3's errors: the answer matters more
            logger.warning("Could not remove the poll rule (%s); its next firing will find the "
                           "request answered and stop", mask_text(str(error))[:200])

    def _timeout(self) -> None:
        logger.error("The migration Lambda is about to time out; answering FAILED")
        self._send(
            "FAILED",
            "timeout: the migration Lambda ran out of time. Revisions that finished are "
            "committed and recorded in migration_audit; raise the Lambda timeout and deploy "
            "again",
        )

    def _send(self, status: str | None = None, reason: str = "", send_response: Any = None) -> None:
        """crhelper's response, fitted to 4 KB and sent with bounded retries, once a request."""
        with self._answer_lock:
            request = str(self.RequestId)
            if self._answered_request == request:
                logger.warning("Request %s was answered already; not answering %s again",
                               request, status or self.Status)
                return
            self._answered_request = request
        body = {
            "Status": status or self.Status,
            "PhysicalResourceId": str(self.PhysicalResourceId or self._event.get(
                "PhysicalResourceId") or self._physical_id()),
            "StackId": self.StackId,
            "RequestId": self.RequestId,
            "LogicalResourceId": self.LogicalResourceId,
            "Reason": short_reason(reason if status else str(self.Reason)),
            "Data": {k: str(v) for k, v in self.Data.items() if k in RESPONSE_DATA_KEYS},
            "NoEcho": False,
        }
        logger.info("Answering CloudFormation: %s %s", body["Status"], body["Reason"])
        if not self._response_url:
            logger.error("The event has no ResponseURL; CloudFormation cannot be answered")
            return
        delivery.send_response(self._response_url, delivery.fit_response(body),
                               ssl_verify=self.services.ssl_verify)

    # -- lifecycle -------------------------------------------------------------------------
    def _create_or_update(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        self._answer_now = False
        return self._counting_failures(self._first_run, event, context)

    def _poll(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        return self._counting_failures(self._next_run, event, context)

    def _counting_failures(
        self, run: Callable[[Mapping[str, Any], LambdaContext], str | None],
        event: Mapping[str, Any], context: LambdaContext,
    ) -> str | None:
        try:
            return run(event, context)
        except Exception:
            # crhelper turns the exception into the FAILED answer; the alarm needs the count.
            self.services.metrics.failure()
            raise

    def _first_run(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        # A rollback must complete whatever its old properties say and whatever the database
        # does, so whatever fails first asks whether this is one. A database with nothing to
        # change gets the same answer either way: the stack's status (and the AWS SDK, a
        # sixth of a cold start) is read only when the deploy would change something.
        own_id = str(event.get("PhysicalResourceId") or self._physical_id())
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
            return self._deploy(engine, properties, event, context, own_id)
        finally:
            engine.close()

    def _deploy(
        self, engine: MigrationEngine, properties: MigrationProperties,
        event: Mapping[str, Any], context: LambdaContext, own_id: str,
    ) -> str | None:
        try:
            status = self._classify(engine, properties)
        except Exception:
            if self._rollback_answered(event):
                return own_id
            raise
        before = status.classification
        if before.state in (DatabaseState.UP_TO_DATE, DatabaseState.AHEAD) and not (
            before.needs_bookkeeping
        ):
            self._answer(event, status)
            return own_id
        if self._rollback_answered(event):
            return own_id
        return self._change(engine, properties, event, context, status)

    def _change(
        self, engine: MigrationEngine, properties: MigrationProperties,
        event: Mapping[str, Any], context: LambdaContext, status: Outcome,
    ) -> str | None:
        """Snapshot (after the gate), then migrate, when the run has the time; else poll."""
        before = status.classification
        self.Data[STARTED_KEY] = str(int(self.services.clock()))
        if self._snapshot_needed(properties, before):
            # A deploy the change gate refuses must not cost a snapshot: decide first.
            engine.check_gate(before, allow_destructive=properties.allow_destructive,
                              context=_deploy_context(event))
            assert properties.snapshot_target is not None
            snapshot_id = snapshot_identifier(
                stack_name(event), before.target[0] if before.target else "head",
                datetime.fromtimestamp(self.services.clock(), UTC),
            )
            self.Data[SNAPSHOT_KEY] = snapshot_id
            if not self._advance_snapshot(properties, snapshot_id,
                                          float(self.Data[STARTED_KEY])):
                return None  # crhelper polls until the snapshot is available
        else:
            self.Data[SNAPSHOT_KEY] = ""
        if not self._enough_time(engine, context, before):
            return None  # a poll starts with a whole Lambda run
        return self._migrate(engine, properties, event, status)

    def _next_run(self, event: Mapping[str, Any], context: LambdaContext) -> str | None:
        over = self._request_over(event)
        if over is not None:
            # Answered already (crhelper's timer, an earlier poll), or the stack moved on:
            # touching the database now would act for a request CloudFormation closed.
            logger.warning("Poll for request %s: %s; stopping without touching the database",
                           event.get("RequestId"), over)
            self._stop_polling_silently = True
            return None
        properties = MigrationProperties.parse(event.get("ResourceProperties", {}))
        data = event.get("CrHelperData", {})
        snapshot_id = str(data.get(SNAPSHOT_KEY, ""))
        started = float(data.get(STARTED_KEY, self.services.clock()))
        service_timeout = float(event.get("ResourceProperties", {}).get("ServiceTimeout", 3600))
        if self.services.clock() - started > service_timeout:
            raise EngineError(
                f"timeout: the deploy has waited {int(self.services.clock() - started)} s "
                f"(ServiceTimeout {int(service_timeout)} s); nothing more was changed. Check "
                f"snapshot {snapshot_id or '(none)'} and deploy again"
            )
        if snapshot_id and not self._advance_snapshot(properties, snapshot_id, started):
            return None
        engine = self.services.engine_factory(properties)
        try:
            status = self._classify(engine, properties)
            before = status.classification
            if not self._enough_time(engine, context, before):
                left = context.get_remaining_time_in_millis() / 1000
                raise EngineError(
                    f"timeout: this Lambda run has {left:.0f} s, and a migration may need "
                    f"MIGRATION_TIMEOUT ({engine.settings.migration_timeout_seconds} s) plus "
                    f"{TIME_MARGIN_SECONDS} s; nothing was changed. Raise the Lambda timeout "
                    "above MIGRATION_TIMEOUT and deploy again"
                )
            return self._migrate(engine, properties, event, status)
        finally:
            engine.close()

    def _delete(self, event: Mapping[str, Any], context: LambdaContext) -> str:
        # The schema and its data belong to the application; removing this resource (or
        # the stack) must never drop or downgrade anything.
        logger.info("Delete: the database is left as it is")
        self._answer_now = True
        return str(event.get("PhysicalResourceId") or self._physical_id())

    def _report_without_migrating(self, properties: MigrationProperties) -> None:
        """migrateOnDeploy false: classify read-only and answer SUCCESS, whatever happens.

        This is the escape hatch for shipping code while a migration keeps failing, so it
        must never block the deploy: a database that cannot be reached or classified is
        reported as `unknown` with a warning, not as a failure.
        """
        self._answer_now = True
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
    def _enough_time(
        self, engine: MigrationEngine, context: LambdaContext, before: Classification
    ) -> bool:
        """Start a migration only with time for one statement's MIGRATION_TIMEOUT and a margin."""
        if not (before.needs_changes
                or before.state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY):
            return True
        needed = engine.settings.migration_timeout_seconds + TIME_MARGIN_SECONDS
        left = context.get_remaining_time_in_millis() / 1000
        if left < needed:
            logger.warning("Not starting the migration: %.0f s left in this run, %d s needed",
                           left, needed)
        return left >= needed

    def _migrate(
        self, engine: MigrationEngine, properties: MigrationProperties,
        event: Mapping[str, Any], status: Outcome,
    ) -> str | None:
        classification = status.classification
        if classification.state in (DatabaseState.UP_TO_DATE, DatabaseState.AHEAD) and not (
            classification.needs_bookkeeping
        ):
            # Nothing to do: answer from the classification already made (one query on the
            # deploy's fast path) rather than classify again.
            self._answer(event, status)
            return str(event.get("PhysicalResourceId") or self._physical_id())
        engine.time_left = lambda: self._context.get_remaining_time_in_millis() / 1000
        outcome = engine.migrate(
            properties.target_revision,
            target_heads=properties.target_heads,
            history_digest=properties.history_digest,
            fix_history=True,
            allow_destructive=properties.allow_destructive,
            context=_deploy_context(event, self.Data.get(SNAPSHOT_KEY) or
                                    event.get("CrHelperData", {}).get(SNAPSHOT_KEY) or None),
        )
        if not outcome.complete:
            # Committed revisions stay; crhelper's next poll (a whole Lambda run) goes on.
            logger.info("%s", outcome.message)
            return None
        self._answer(event, outcome)
        return str(event.get("PhysicalResourceId") or self._physical_id())

    def _answer(self, event: Mapping[str, Any], outcome: Outcome) -> None:
        self.services.metrics.outcome(outcome)
        self.Data.update(
            State=outcome.classification.state.value,
            FromRevision=describe_revisions(outcome.classification.current),
            ToRevision=describe_revisions(outcome.final),
            Applied=str(len(outcome.applied)),
            SnapshotId=str(self.Data.get(SNAPSHOT_KEY) or
                           event.get("CrHelperData", {}).get(SNAPSHOT_KEY) or ""),
        )
        self._answer_now = True

    def _advance_snapshot(
        self, properties: MigrationProperties, snapshot_id: str, started: float | None = None
    ) -> bool:
        """Start the snapshot once the database is available; True once it is available.

        A failed or refused snapshot stops the deploy before any migration runs.
        """
        try:
            return self._snapshot_step(properties, snapshot_id, started)
        except SnapshotError as error:
            raise EngineError(f"pending_migrations: {error}") from None

    def _snapshot_step(
        self, properties: MigrationProperties, snapshot_id: str, started: float | None
    ) -> bool:
        assert properties.snapshot_target is not None
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
            if started is not None:
                self.services.metrics.snapshot(self.services.clock() - started)
            logger.info("Snapshot %s is available", snapshot_id)
            return True
        if status in ("creating", "pending", "backing-up", None):
            logger.info("Snapshot %s is %s", snapshot_id, status)
            return False
        raise SnapshotError(
            f"snapshot {snapshot_id} is {status}; nothing was changed. Check the snapshot in "
            "the RDS console and deploy again"
        )

    def _snapshot_needed(self, properties: MigrationProperties, before: Classification) -> bool:
        # An empty database has nothing to lose, and a no-change deploy nothing to protect.
        return properties.snapshot_before_migrate and before.state in (
            DatabaseState.PENDING_MIGRATIONS, DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY,
        )

    def _classify(self, engine: MigrationEngine, properties: MigrationProperties) -> Outcome:
        """The deploy's classification (one query when nothing changed); refuses inconsistent."""
        status = engine.status(properties.target_revision,
                               target_heads=properties.target_heads,
                               history_digest=properties.history_digest,
                               with_history=False)
        # The engine words the refusal: its cause's own next step, then the runbook anchor.
        engine.refuse_if_inconsistent(status.classification)
        return status

    def _rollback_answered(self, event: Mapping[str, Any]) -> bool:
        """True (and the answer set) when this Update is a stack rollback's."""
        if not self._in_rollback(event):
            return False
        logger.info("Stack rollback in progress: the database is left as it is")
        self.Data.update(State="rollback", FromRevision="", ToRevision="", Applied="0",
                         SnapshotId="")
        self._answer_now = True
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

    def _physical_id(self) -> str:
        """Stable across updates: a new id would make CloudFormation delete the old one."""
        stack = stack_name(self._event) if self._event else "stack"
        return f"{stack}-{self._event.get('LogicalResourceId', 'DatabaseMigration')}"


RESPONSE_DATA_KEYS = ("State", "FromRevision", "ToRevision", "Applied", "SnapshotId")
# The State answered when migrations on deploy are disabled and the database cannot be read.
UNKNOWN_STATE = "unknown"
ERROR_TEXT_LIMIT = 300


def _one_line(error: BaseException) -> str:
    """An error for a log line: its type, one line, bounded, any URL password masked."""
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {mask_text(text)[:ERROR_TEXT_LIMIT]}"


def _deploy_context(event: Mapping[str, Any], snapshot_id: str | None = None) -> RunContext:
    """Who acts, for the audit trail: this deploy's request."""
    return RunContext(actor="deploy", request_id=str(event.get("RequestId", "")),
                      snapshot_id=snapshot_id)


