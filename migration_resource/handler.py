"""The migration Lambda's entry point: a thin adapter from Lambda events to the engine.

- CloudFormation custom resource events (`RequestType`) go to `custom_resource`.
- Admin events (`admin_operation`) go to the admin protocol, as the local CLI does.
Anything else gets a clear error answer. Settings come from the environment the CDK
construct sets; the database secret is fetched once per container.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from migration_resource import delivery, observability
from migration_resource.audit import RunContext
from migration_resource.classification import describe_revisions
from migration_resource.connection import (
    SECRET_ARN_VARIABLE,
    clear_secret_cache,
    database_url_from_environment,
)
from migration_resource.deploy_event import (
    MigrationProperties,
    PropertyError,
    malformed_event_problem,
    stack_name,
)
from migration_resource.dsn import DatabaseUrlError
from migration_resource.engine import EngineError, MigrationEngine, Outcome
from migration_resource.settings import EngineSettings, SettingsError, stricter_stage

if TYPE_CHECKING:
    from migration_resource.custom_resource import MigrationResource, Services

logger = logging.getLogger(__name__)

# A CA bundle for the ResponseURL: only the local deploy and the tests set it (their
# recorder has a self-signed certificate); CloudFormation's S3 URLs use the system store.
RESPONSE_CA_BUNDLE = "CFN_RESPONSE_CA_BUNDLE"

_resource: MigrationResource | None = None  # crhelper's object, built for the first event
# that may change something (custom_resource imports crhelper and the AWS SDK)


def handler(event: Any, context: Any) -> dict[str, object] | None:
    with observability.invocation(context) as metrics:
        if isinstance(event, Mapping) and "admin_operation" in event:
            return _admin(event, context, metrics)
        if isinstance(event, Mapping) and "RequestType" in event:
            _custom_resource(event, context, metrics)
            return None
        logger.error("Unrecognised event: neither RequestType nor admin_operation")
        from migration_resource.admin import error_answer  # noqa: PLC0415 - see _admin

        return error_answer(
            None, "bad_request",
            "The event is neither a CloudFormation custom resource event (RequestType) nor "
            "an admin event (admin_operation)",
        )


def _admin(event: Mapping[str, Any], context: Any, metrics: Any) -> dict[str, object]:
    # The admin protocol loads with the first admin event: a deploy never needs it.
    from migration_resource.admin import answer_admin_event, error_answer  # noqa: PLC0415

    try:
        engine = build_engine(os.environ, metrics)
    except (SettingsError, DatabaseUrlError) as error:
        return error_answer(event.get("admin_operation"), "settings_error", str(error))
    try:
        request_id = str(getattr(context, "aws_request_id", "") or "") or None
        run_context = RunContext(actor="admin", request_id=request_id) if request_id \
            else RunContext(actor="admin")
        return answer_admin_event(engine, event, run_context)
    finally:
        engine.close()


def _custom_resource(event: Mapping[str, Any], context: Any, metrics: Any) -> None:
    problem = malformed_event_problem(event)
    if problem is not None:
        logger.error("Malformed CloudFormation event: %s", problem)
        url = event.get("ResponseURL") if isinstance(event, Mapping) else None
        if isinstance(url, str):
            delivery.send_response(url, delivery.fit_response({
                "Status": "FAILED",
                "Reason": f"bad_request: {problem}; nothing was changed",
                "PhysicalResourceId": str(event.get("PhysicalResourceId") or "invalid-event"),
                "StackId": str(event.get("StackId", "")),
                "RequestId": str(event.get("RequestId", "")),
                "LogicalResourceId": str(event.get("LogicalResourceId", "")),
                "Data": {},
            }), ssl_verify=os.environ.get(RESPONSE_CA_BUNDLE) or None)
        return
    if _answered_without_changes(event, metrics):
        return
    resource(metrics)(dict(event), context)


def _answered_without_changes(event: Mapping[str, Any], metrics: Any) -> bool:
    """Answer a Create/Update whose database is already at the template's revision.

    One query, no crhelper and no AWS call: a rollback's Update of such a database gets the
    same answer, and nothing else can go wrong that crhelper's lifecycle would handle.
    Anything else (a poll, a Delete, other properties, something to change, an error) is
    left to `custom_resource`, which decides it from the start.
    """
    if event["RequestType"] not in ("Create", "Update") or "CrHelperPoll" in event:
        return False
    try:
        properties = MigrationProperties.parse(event.get("ResourceProperties", {}))
        if not properties.migrate_on_deploy or properties.target_heads is None:
            return False
        engine = build_engine(os.environ, metrics, stage=properties.stage,
                              allow_destructive=properties.allow_destructive,
                              connect_attempts=1)
    except (PropertyError, SettingsError, DatabaseUrlError):
        return False
    try:
        fast = engine.up_to_date_fast(properties.target_heads, properties.history_digest)
    except EngineError:
        return False  # unreachable, say: the full path retries, and knows a rollback
    finally:
        engine.close()
    if fast is None:
        return False
    outcome = Outcome(operation="status", classification=fast, final=fast.current,
                      message="Auto-migration: Database is up to date")
    observability.record_outcome(metrics, outcome)
    revision = describe_revisions(fast.current)
    body = {
        "Status": "SUCCESS",
        "PhysicalResourceId": str(event.get("PhysicalResourceId")
                                  or f"{stack_name(event)}-{event['LogicalResourceId']}"),
        "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "Reason": "", "NoEcho": False,
        "Data": {"State": fast.state.value, "FromRevision": revision, "ToRevision": revision,
                 "Applied": "0", "SnapshotId": ""},
    }
    logger.info("Answering CloudFormation: SUCCESS (the database is at %s; nothing to do)",
                revision)
    delivery.send_response(str(event["ResponseURL"]), delivery.fit_response(body),
                           ssl_verify=os.environ.get(RESPONSE_CA_BUNDLE) or None)
    return True


def resource(metrics: Any) -> MigrationResource:
    """One crhelper object per container: it builds its AWS clients once."""
    from migration_resource.custom_resource import MigrationResource  # noqa: PLC0415

    global _resource  # noqa: PLW0603 - a per-container cache is what Lambda offers
    if _resource is None:
        _resource = MigrationResource(services(metrics))
    else:
        _resource.services.metrics = _Hooks(metrics)
    return _resource


def services(metrics: Any) -> Services:
    from migration_resource.custom_resource import Services  # noqa: PLC0415 - see resource
    def engine_for(properties: MigrationProperties) -> MigrationEngine:
        # The stricter of the deploy's Stage and the function's STAGE decides the safety rules.
        return build_engine(os.environ, metrics, stage=properties.stage,
                            allow_destructive=properties.allow_destructive)

    return Services(
        engine_factory=engine_for,
        rds=_client_on_first_use("rds"),
        cloudformation=_client_on_first_use("cloudformation"),
        metrics=_Hooks(metrics),
        ssl_verify=os.environ.get(RESPONSE_CA_BUNDLE) or None,
    )


def _client_on_first_use(name: str) -> Callable[[], Any]:
    """A boto3 client built on the first call and kept with the crhelper object (one per
    container): a no-change Update builds only the CloudFormation client, and a warm
    container's next Update reuses it."""
    built: list[Any] = []

    def client() -> Any:
        if not built:
            import boto3  # noqa: PLC0415 - only the deploy path needs AWS clients

            built.append(boto3.client(name))
        return built[0]

    return client


def build_engine(
    env: Mapping[str, str], metrics: Any, *, stage: str | None = None,
    allow_destructive: bool = False, connect_attempts: int | None = None,
) -> MigrationEngine:
    url = database_url_from_environment(env)
    settings = EngineSettings.from_environment(
        env, database_url=url.render_as_string(hide_password=False)
    )
    if stage is not None:
        settings = dataclasses.replace(
            settings, stage=stricter_stage(settings.stage, stage),
            allow_destructive=allow_destructive or settings.allow_destructive,
        )
    if connect_attempts is not None:
        settings = dataclasses.replace(settings, connect_attempts=connect_attempts)
    return MigrationEngine(
        settings, on_connection_error=lambda: observability.record_connection_error(metrics),
        refresh_credentials=_secret_read_again(env) if env.get(SECRET_ARN_VARIABLE) else None,
    )


def _secret_read_again(env: Mapping[str, str]) -> Callable[[], sa.URL]:
    """After a password rotation the cached secret is stale: read it once more."""

    def read_again() -> sa.URL:
        clear_secret_cache()
        return database_url_from_environment(env)

    return read_again


@dataclasses.dataclass
class _Hooks:
    """The custom resource's metric hooks, on this invocation's Metrics."""

    metrics: Any

    def outcome(self, outcome: Outcome) -> None:
        observability.record_outcome(self.metrics, outcome)

    def failure(self) -> None:
        observability.record_failure(self.metrics)

    def snapshot(self, seconds: float) -> None:
        observability.record_snapshot(self.metrics, seconds)
