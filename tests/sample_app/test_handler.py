"""The sample application's Lambda handler, end to end against a fresh real database."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from migration_resource import observability
from sample_app import handler as app
from tests.alembic.support import ALL_REVISIONS, HEAD, upgrade
from tests.migration_resource.support import execute, relations, version_rows


@dataclass(frozen=True)
class FakeContext:
    function_name: str = "sample-app"
    aws_request_id: str = "request-1"


@pytest.fixture(autouse=True)
def container(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    """A new container of the function, configured by its environment."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STAGE", "development")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"sample-app-{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("AUTO_MIGRATE", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)  # DATABASE_URL it is
    monkeypatch.delenv("ALEMBIC_SCRIPT_LOCATION", raising=False)  # found beside the package
    app.reset()
    observability.reset()
    yield
    app.reset()
    observability.reset()


def rest_event(method: str, path: str, body: object = None) -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy event, trimmed to what a handler reads."""
    return {
        "resource": path, "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "requestContext": {"stage": "prod", "requestId": "r-1"},
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False,
    }


def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = app.handler(event, FakeContext())
    status, body, headers = response["statusCode"], response["body"], response["headers"]
    assert isinstance(status, int) and isinstance(body, str) and isinstance(headers, dict)
    return status, json.loads(body), headers


def test_first_request_migrates_then_requests_work(
    monkeypatch: pytest.MonkeyPatch, db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a fresh database and AUTO_MIGRATE=true
    monkeypatch.setenv("AUTO_MIGRATE", "true")

    # WHEN the first request arrives
    status, body, _ = call(rest_event("GET", "/tasks"))

    # THEN the schema was migrated first and the request answered
    assert (status, body) == (200, {"counts": {"todo": 0, "in_progress": 0, "done": 0},
                                    "total": 0})
    assert version_rows(db) == [HEAD]
    stdout = capsys.readouterr().out
    assert "Database migrations completed successfully. Revision: base" in stdout
    assert f'"MigrationsApplied":[{ALL_REVISIONS}' in stdout

    # AND users can be created, once per email
    status, created, _ = call(rest_event("POST", "/users", {"email": "ada@example.com",
                                                            "display_name": "Ada"}))
    assert status == 201
    assert (created["email"], created["display_name"]) == ("ada@example.com", "Ada")
    assert call(rest_event("POST", "/users", {"email": "ada@example.com"}))[0] == 409

    # AND the task counts reflect the data (an HTTP API v2 event this time)
    execute(
        db,
        f"INSERT INTO projects (owner_id, name) VALUES ({created['id']}, 'Engine')",
        "INSERT INTO tasks (project_id, title, status) SELECT id, t, s FROM projects, "
        "(VALUES ('a', 'todo'), ('b', 'done'), ('c', 'done')) AS v(t, s)",
    )
    v2 = {"version": "2.0", "rawPath": "/tasks/", "body": None,
          "requestContext": {"http": {"method": "GET", "path": "/tasks/"}}}
    status, body, _ = call(v2)
    assert (status, body) == (200, {"counts": {"todo": 1, "in_progress": 0, "done": 2},
                                    "total": 3})
    # AND later requests did not check the schema again
    assert "Migration state" not in capsys.readouterr().out


def test_without_auto_migrate_an_empty_database_answers_503(
    monkeypatch: pytest.MonkeyPatch, db: sa.Engine
) -> None:
    # GIVEN a fresh database and AUTO_MIGRATE unset
    status, body, headers = call(rest_event("GET", "/tasks"))

    # THEN requests are refused with a clear reason, and nothing was created
    assert status == 503
    assert body == {
        "message": "The database schema is behind this version of the application "
                   "(state: empty); requests are refused until the migrations have run",
        "state": "empty",
    }
    assert headers["Retry-After"] == "30"
    assert relations(db) == []

    # AND once the migrations have run, the container serves at its next check
    with db.connect() as conn:
        upgrade(conn, "head")
    monkeypatch.setattr("migration_resource.auto_migrate.RECHECK_SECONDS", 0.0)
    assert call(rest_event("GET", "/tasks"))[0] == 200


def test_bad_requests_get_clear_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_MIGRATE", "true")
    encoded = rest_event("POST", "/users")
    encoded.update(body=base64.b64encode(b'{"email": "grace@example.com"}').decode(),
                   isBase64Encoded=True)

    assert call(encoded)[0] == 201
    assert call(rest_event("GET", "/nowhere"))[0] == 404
    status, _, headers = call(rest_event("DELETE", "/users"))
    assert (status, headers["Allow"]) == (405, "POST")
    status, body, _ = call({**rest_event("POST", "/users"), "body": "{not json"})
    assert (status, body["message"]) == (400, "The body must be a JSON object")
    status, body, _ = call(rest_event("POST", "/users", {"display_name": "nobody"}))
    assert (status, body["message"]) == (400, "email is required: a string with an @")
    assert call({"not": "an api gateway event"})[0] == 400
