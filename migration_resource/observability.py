"""Structured logs and CloudWatch metrics for the Lambdas, with Powertools, from the environment.

- Logs: one JSON object per line on stdout (Powertools `Logger`). The engine and the sample
  application log through the standard library (`logging.getLogger(__name__)`); their records
  go out through the same JSON formatter, their text unchanged in the `message` field
  (`Migration state: pending_migrations`, ...). The root logger is left alone.
- Metrics: CloudWatch Embedded Metric Format on stdout, no API calls. Names and the `Stage`
  dimension are in `metric_names`, which the CDK app reads for its alarms.

Environment: POWERTOOLS_SERVICE_NAME, POWERTOOLS_LOG_LEVEL (default INFO),
POWERTOOLS_METRICS_NAMESPACE (default `DatabaseMigrations`), STAGE (the metrics' dimension),
POWERTOOLS_METRICS_DISABLED. Set up once per container on first use; `reset` undoes it (tests).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import IO, TYPE_CHECKING

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from migration_resource import metric_names as names

if TYPE_CHECKING:
    from migration_resource.outcomes import Outcome

# Our packages' loggers: their records are written as JSON by the Powertools handler.
BRIDGED_LOGGERS = ("migration_resource", "sample_app")
DEFAULT_SERVICE = "service_undefined"  # Powertools' own default
DEFAULT_STAGE = "development"
REQUEST_ID_KEY = "function_request_id"  # the key Powertools' inject_lambda_context uses
_EMPTY_FLUSH_WARNING = "No application metrics to publish"


@dataclass
class Observability:
    logger: Logger
    metrics: EphemeralMetrics
    stage: str
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)


_current: Observability | None = None


def setup(env: Mapping[str, str] | None = None, *, stream: IO[str] | None = None) -> Observability:
    """Build the Logger and Metrics from `env` (default: the process environment) and route
    our packages' loggers through the Logger. Replaces an earlier setup of this process."""
    global _current  # noqa: PLW0603 - one logging setup per container is the point
    reset()
    env = os.environ if env is None else env
    logger = Logger(
        service=env.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE,
        level=env.get("POWERTOOLS_LOG_LEVEL") or None,  # None: Powertools' own resolution
        stream=stream,
    )
    stage = env.get("STAGE") or DEFAULT_STAGE
    # Ephemeral (not the class-level shared `Metrics`): every setup starts clean, and its
    # dimensions cannot leak into another instance.
    metrics = EphemeralMetrics(
        namespace=env.get("POWERTOOLS_METRICS_NAMESPACE") or names.NAMESPACE,
        # An empty service keeps Powertools from adding a `service` dimension: alarms match
        # on the exact dimension set, and Stage alone is the contract (metric_names).
        service="",
        default_dimensions={names.STAGE_DIMENSION: stage},
    )
    observability = Observability(logger=logger, metrics=metrics, stage=stage)
    observability._undo.extend(_bridge(logger))
    _current = observability
    return observability


def current() -> Observability:
    """This container's setup, built from the process environment on first use."""
    return _current if _current is not None else setup()


def reset() -> None:
    """Undo `setup`: our loggers and the root handlers are as they were before (tests)."""
    global _current  # noqa: PLW0603
    if _current is None:
        return
    for undo in reversed(_current._undo):
        undo()
    _current = None


@contextmanager
def invocation(context: object) -> Iterator[EphemeralMetrics]:
    """Wrap one Lambda invocation: yields the Metrics to record on.

    Log lines carry the request id; the metrics are flushed at the end even when the body
    raises, with Powertools' ColdStart metric on the container's first invocation.
    """
    observability = current()
    request_id = getattr(context, "aws_request_id", None)
    keys = {REQUEST_ID_KEY: request_id} if request_id else {}
    with observability.logger.append_context_keys(**keys):
        try:
            yield observability.metrics
        finally:
            _flush(observability.metrics, context)


# -- what the handlers record ------------------------------------------------------------------
def record_outcome(metrics: EphemeralMetrics, outcome: Outcome) -> None:
    """A migration run that completed: its duration, success, and revisions applied."""
    metrics.add_metric(name=names.MIGRATION_DURATION_SECONDS, unit=MetricUnit.Seconds,
                       value=outcome.seconds)
    _record_result(metrics, succeeded=outcome.ok)
    metrics.add_metric(name=names.MIGRATIONS_APPLIED, unit=MetricUnit.Count,
                       value=len(outcome.applied))


def record_failure(metrics: EphemeralMetrics) -> None:
    """A migration run that was refused or failed."""
    _record_result(metrics, succeeded=False)


def record_snapshot(metrics: EphemeralMetrics, seconds: float) -> None:
    metrics.add_metric(name=names.SNAPSHOT_DURATION_SECONDS, unit=MetricUnit.Seconds,
                       value=seconds)


def record_connection_error(metrics: EphemeralMetrics) -> None:
    metrics.add_metric(name=names.DATABASE_CONNECTION_ERRORS, unit=MetricUnit.Count, value=1)


def record_schema_behind(metrics: EphemeralMetrics, behind: bool) -> None:
    """Auto-migrate's check: 1 while a container refuses requests for its schema, else 0."""
    metrics.add_metric(name=names.SCHEMA_BEHIND, unit=MetricUnit.Count, value=int(behind))


def _record_result(metrics: EphemeralMetrics, *, succeeded: bool) -> None:
    # Both on every run, so that Average(MigrationSucceeded) is the success rate.
    metrics.add_metric(name=names.MIGRATION_SUCCEEDED, unit=MetricUnit.Count,
                       value=int(succeeded))
    metrics.add_metric(name=names.MIGRATION_FAILED, unit=MetricUnit.Count,
                       value=int(not succeeded))


# -- internals ------------------------------------------------------------------------------------
def _bridge(logger: Logger) -> list[Callable[[], None]]:
    """Send our loggers' records through the Powertools handler; returns how to undo it.

    The records still propagate to the root logger, as Powertools' own records do, and the
    same filter Powertools puts on the root handlers for its service drops them there: the
    Lambda runtime's root handler would print every line a second time as plain text. Like
    Powertools, the filter spares pytest's capture handler, so tests keep reading the records.
    """
    undo: list[Callable[[], None]] = []
    handler = logger.registered_handler
    logger.append_keys(name="%(name)s")  # which module wrote the line
    for name in BRIDGED_LOGGERS:
        bridged = logging.getLogger(name)
        undo.append(partial(bridged.setLevel, bridged.level))
        # INFO by default: the Lambda runtime's root logger passes only WARNING and above.
        bridged.setLevel(logger.log_level)
        bridged.addHandler(handler)
        undo.append(partial(bridged.removeHandler, handler))
        suppress = SuppressFilter(name)
        for root_handler in logging.root.handlers:
            if not _is_pytest_capture(root_handler):
                root_handler.addFilter(suppress)
                undo.append(partial(root_handler.removeFilter, suppress))
    return undo


def _is_pytest_capture(handler: logging.Handler) -> bool:
    kind = type(handler)
    return kind.__name__ == "LogCaptureHandler" and kind.__module__ == "_pytest.logging"


def _flush(metrics: EphemeralMetrics, context: object) -> None:
    # The ColdStart metric is named after the function; a local run has no function name.
    named = bool(getattr(context, "function_name", None)
                 or os.environ.get("POWERTOOLS_METRICS_FUNCTION_NAME"))
    with warnings.catch_warnings():
        # A warm invocation with nothing to record is normal, not worth a warning.
        warnings.filterwarnings("ignore", message=_EMPTY_FLUSH_WARNING, category=UserWarning)
        # Powertools' decorator keeps the cold-start bookkeeping (once per container, none
        # under provisioned concurrency); run it around nothing so that it also happens, with
        # the flush, when the invocation raised.
        metrics.log_metrics(_nothing, capture_cold_start_metric=named)(None, context)


def _nothing(event: object, context: object) -> None:
    return None
