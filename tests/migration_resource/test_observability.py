"""Logs and metrics as the Lambdas write them: JSON log lines and EMF metrics on stdout."""

from __future__ import annotations

import io
import json
import logging
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from migration_resource import metric_names as names
from migration_resource import observability
from migration_resource.engine import MigrationEngine
from tests.alembic.support import ALL_REVISIONS, HEAD

EngineFactory = Callable[..., MigrationEngine]


@dataclass(frozen=True)
class FakeContext:
    function_name: str = "migration-function"
    aws_request_id: str = "request-1"


@pytest.fixture(autouse=True)
def clean_setup() -> Iterator[None]:
    observability.reset()
    yield
    observability.reset()


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Set up from the environment with the log lines going to a buffer."""
    # A service name per test: Powertools reuses the handler of a service it has seen.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STAGE", "production")
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    stream = io.StringIO()
    observability.setup(stream=stream)
    return stream


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def emf(stdout: str) -> list[dict[str, Any]]:
    return [blob for blob in json_lines(stdout) if "_aws" in blob]


def units(blob: dict[str, Any]) -> dict[str, str]:
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    return {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}


def test_migration_metrics_are_emf_with_units_and_the_stage_dimension(
    log_stream: io.StringIO, engine: MigrationEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a migration run on an empty database
    with observability.invocation(FakeContext()) as metrics:
        outcome = engine.migrate()
        # WHEN the handler records what happened
        observability.record_outcome(metrics, outcome)
        observability.record_snapshot(metrics, 2.5)
        observability.record_connection_error(metrics)
        observability.record_connection_error(metrics)

    # THEN one EMF document on stdout carries them, under the Stage dimension alone
    (blob,) = [b for b in emf(capsys.readouterr().out) if names.MIGRATIONS_APPLIED in b]
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == names.NAMESPACE
    assert directive["Dimensions"] == [[names.STAGE_DIMENSION]]
    assert blob[names.STAGE_DIMENSION] == "production"
    assert units(blob) == {
        names.MIGRATION_DURATION_SECONDS: "Seconds",
        names.MIGRATION_SUCCEEDED: "Count",
        names.MIGRATION_FAILED: "Count",
        names.MIGRATIONS_APPLIED: "Count",
        names.SNAPSHOT_DURATION_SECONDS: "Seconds",
        names.DATABASE_CONNECTION_ERRORS: "Count",
    }
    assert blob[names.MIGRATIONS_APPLIED] == [ALL_REVISIONS]
    assert blob[names.MIGRATION_SUCCEEDED] == [1]
    assert blob[names.MIGRATION_FAILED] == [0]
    assert blob[names.MIGRATION_DURATION_SECONDS] == [pytest.approx(outcome.seconds)]
    assert blob[names.DATABASE_CONNECTION_ERRORS] == [1, 1]


def test_namespace_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "OtherNamespace")
    monkeypatch.delenv("STAGE", raising=False)
    observability.setup(stream=io.StringIO())

    with observability.invocation(None) as metrics:
        observability.record_failure(metrics)
        observability.record_schema_behind(metrics, True)

    (blob,) = emf(capsys.readouterr().out)
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "OtherNamespace"
    assert blob[names.STAGE_DIMENSION] == "development"
    assert units(blob) == {names.MIGRATION_SUCCEEDED: "Count", names.MIGRATION_FAILED: "Count",
                           names.SCHEMA_BEHIND: "Count"}
    assert (blob[names.MIGRATION_FAILED], blob[names.SCHEMA_BEHIND]) == ([1], [1])


def test_metrics_are_flushed_when_the_handler_raises_and_cold_start_is_counted_once(
    log_stream: io.StringIO, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a new container whose first invocation fails
    monkeypatch.setattr(cold_start, "is_cold_start", True)
    with pytest.raises(RuntimeError), observability.invocation(FakeContext()) as metrics:
        observability.record_failure(metrics)
        raise RuntimeError("boom")

    # THEN the failure and the cold start are on stdout all the same
    first = emf(capsys.readouterr().out)
    cold = [blob for blob in first if names.COLD_START in blob]
    assert len(cold) == 1
    assert cold[0]["function_name"] == "migration-function"
    assert cold[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == names.NAMESPACE
    assert any(blob.get(names.MIGRATION_FAILED) == [1] for blob in first)

    # AND a warm invocation has no cold start; one with nothing to say prints nothing
    with observability.invocation(FakeContext()) as metrics:
        observability.record_schema_behind(metrics, False)
    assert [names.COLD_START in blob for blob in emf(capsys.readouterr().out)] == [False]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with observability.invocation(FakeContext()):
            pass
    assert emf(capsys.readouterr().out) == []


def test_engine_log_lines_are_json_with_the_guides_exact_messages(
    log_stream: io.StringIO, make_engine: EngineFactory
) -> None:
    # WHEN the engine migrates an empty database, then runs again, inside an invocation
    with observability.invocation(FakeContext(aws_request_id="abc-123")):
        make_engine().migrate()
        make_engine().migrate()

    # THEN its stdlib log records come out as Powertools JSON, the text unchanged
    lines = json_lines(log_stream.getvalue())
    messages = [line["message"] for line in lines]
    for expected in (
        "Migration state: empty",
        f"Running {ALL_REVISIONS} pending migrations...",
        f"Database migrations completed successfully. Revision: base → {HEAD}",
        "Auto-migration: Database is up to date",
    ):
        assert expected in messages
    running = lines[messages.index(f"Running {ALL_REVISIONS} pending migrations...")]
    assert running["level"] == "INFO"
    assert running["name"] == "migration_resource.engine"
    assert running["service"].startswith("test-")
    assert running["function_request_id"] == "abc-123"
    assert "timestamp" in running


def test_root_logger_is_left_alone_and_nothing_is_printed_twice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a root handler standing in for the Lambda runtime's
    runtime_stream = io.StringIO()
    runtime_handler = logging.StreamHandler(runtime_stream)
    root = logging.getLogger()
    root.addHandler(runtime_handler)
    bridged = logging.getLogger("migration_resource")
    before = (root.level, list(root.handlers), bridged.level, list(bridged.handlers))
    try:
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"test-{uuid.uuid4().hex[:8]}")
        stream = io.StringIO()
        observability.setup(stream=stream)
        assert (root.level, root.handlers) == (before[0], before[1])

        # WHEN the engine's logger and some other library's logger write
        logging.getLogger("migration_resource.engine").warning("Migration state: ahead")
        logging.getLogger("some_library").warning("not ours")

        # THEN ours is written once, as JSON; the other library's goes to the root as before
        assert [line["message"] for line in json_lines(stream.getvalue())] == [
            "Migration state: ahead"
        ]
        assert runtime_stream.getvalue() == "not ours\n"
        # AND tests still read the engine's records through caplog
        assert "Migration state: ahead" in caplog.messages

        # AND reset puts our loggers back as they were
        observability.reset()
        assert (root.level, list(root.handlers), bridged.level, list(bridged.handlers)) == before
        # (Powertools' own filter for its service logger stays, as Powertools put it there)
        assert not {getattr(f, "logger", None) for f in runtime_handler.filters} & set(
            observability.BRIDGED_LOGGERS
        )
    finally:
        root.removeHandler(runtime_handler)
