"""The sample application's Lambda handler: a tiny task-tracker API over the sample models.

Events are API Gateway proxy events (REST API v1 or HTTP API v2); answers are JSON.

    GET  /tasks   how many tasks there are per status
    POST /users   create a user from {"email": "...", "display_name": "..."}

Before its first request a container makes sure the schema fits this code
(`migration_resource.auto_migrate.ensure_schema`): it migrates with AUTO_MIGRATE=true and only
checks otherwise. While the schema is not ready, every request is answered 503 with the reason.
That runs on the first request, not at import: a migration can outlast the Lambda init phase.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from migration_resource import observability
from migration_resource.auto_migrate import RECHECK_SECONDS, ensure_schema
from migration_resource.auto_migrate import reset as reset_auto_migrate
from migration_resource.connection import database_url_from_environment
from migration_resource.dsn import mask_text
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
from sample_app.models import TASK_STATUSES, Task, User
from sample_app.release import RELEASE

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

logger = logging.getLogger(__name__)

APPLICATION_NAME = "sample-app"
CONNECT_TIMEOUT_SECONDS = 10
EMAIL_MAX_LENGTH = 320  # the column's length
DISPLAY_NAME_MAX_LENGTH = 200
UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE, whichever driver reports it

Response = dict[str, object]


class BadRequest(ValueError):
    """The request cannot be understood; the message says why (answered 400)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: str | None

    def json_object(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.body or "")
        except json.JSONDecodeError:
            raise BadRequest("The body must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise BadRequest("The body must be a JSON object")
        return parsed


def handler(event: Any, context: Any) -> Response:
    with observability.invocation(context) as metrics:
        env = os.environ
        counted = partial(observability.record_connection_error, metrics)
        schema = ensure_schema(partial(migration_engine, env, on_connection_error=counted),
                               env=env, metrics=metrics)
        if not schema.serve:
            return answer(503, {"message": schema.client_message(), "state": schema.state},
                          headers={"Retry-After": str(int(RECHECK_SECONDS))})
        try:
            request = parse_request(event)
        except BadRequest as error:
            return answer(400, {"message": str(error)})
        response = serve(request, env, metrics)
        logger.info("%s %s: %s", request.method, request.path, response["statusCode"])
        return response


def serve(request: Request, env: Mapping[str, str], metrics: EphemeralMetrics) -> Response:
    methods = ROUTES.get(request.path)
    if methods is None:
        return answer(404, {"message": f"No route for {request.path}"})
    view = methods.get(request.method)
    if view is None:
        return answer(405, {"message": f"{request.method} is not allowed on {request.path}"},
                      headers={"Allow": ", ".join(sorted(methods))})
    try:
        with Session(database(env)) as session:
            return view(session, request)
    except BadRequest as error:
        return answer(400, {"message": str(error)})
    except sa.exc.OperationalError as error:
        observability.record_connection_error(metrics)
        logger.warning("The database is unavailable: %s", mask_text(str(error.orig or error)))
        return answer(503, {"message": "The database is unavailable; retry later"},
                      headers={"Retry-After": "5"})


# -- the routes ---------------------------------------------------------------------------
def count_tasks(session: Session, request: Request) -> Response:
    rows = session.execute(sa.select(Task.status, sa.func.count()).group_by(Task.status))
    counts = dict.fromkeys(TASK_STATUSES, 0)
    counts.update({status: count for status, count in rows})
    return answer(200, {"counts": counts, "total": sum(counts.values())})


def create_user(session: Session, request: Request) -> Response:
    body = request.json_object()
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email.strip():
        raise BadRequest("email is required: a string with an @")
    email = email.strip()
    if len(email) > EMAIL_MAX_LENGTH:
        raise BadRequest(f"email is longer than {EMAIL_MAX_LENGTH} characters")
    display_name = body.get("display_name")
    if display_name is not None and (
        not isinstance(display_name, str) or len(display_name) > DISPLAY_NAME_MAX_LENGTH
    ):
        raise BadRequest(f"display_name must be a string of at most {DISPLAY_NAME_MAX_LENGTH} "
                         "characters")
    user = User(email=email, display_name=display_name)
    session.add(user)
    try:
        session.commit()
    except sa.exc.IntegrityError as error:
        if sqlstate(error) == UNIQUE_VIOLATION:
            return answer(409, {"message": "A user with this email exists already"})
        raise
    return answer(201, {"id": user.id, "email": user.email, "display_name": user.display_name,
                        "created_at": user.created_at.isoformat()})


def sqlstate(error: sa.exc.DBAPIError) -> str | None:
    """The SQLSTATE of the driver's error: ``pgcode`` in psycopg2, ``sqlstate`` in psycopg 3."""
    original = error.orig
    code = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    return str(code) if code else None


View = Callable[[Session, Request], Response]
ROUTES: dict[str, dict[str, View]] = {
    "/tasks": {"GET": count_tasks},
    "/users": {"POST": create_user},
}


# -- the database -------------------------------------------------------------------------
def database_url(env: Mapping[str, str]) -> sa.URL:
    """The application's database URL: the one place that decides where the database is
    (DATABASE_SECRET_ARN in AWS, DATABASE_URL locally; the secret is read once per container)."""
    return database_url_from_environment(env)


def migration_engine(
    env: Mapping[str, str], *, on_connection_error: Callable[[], None] | None = None
) -> MigrationEngine:
    url = database_url(env).render_as_string(hide_password=False)
    settings = EngineSettings.from_environment(env, database_url=url)
    return MigrationEngine(settings, on_connection_error=on_connection_error)


_database: tuple[sa.URL, sa.Engine] | None = None


def database(env: Mapping[str, str]) -> sa.Engine:
    """One pooled connection kept across warm invocations; a new engine when the URL changes
    (a rotated password, once the secret is read again)."""
    global _database  # noqa: PLW0603 - a per-container cache is what Lambda offers
    url = database_url(env)
    if _database is not None and _database[0] == url:
        return _database[1]
    if _database is not None:
        _database[1].dispose()
    engine = sa.create_engine(
        url, pool_size=1, max_overflow=0,
        # A frozen container's connection may have been closed by the server meanwhile.
        pool_pre_ping=True,
        connect_args={"application_name": APPLICATION_NAME,
                      "connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    _database = (url, engine)
    return engine


def reset() -> None:
    """Forget the per-container state: the schema check and the database engine (tests)."""
    global _database  # noqa: PLW0603
    reset_auto_migrate()
    if _database is not None:
        _database[1].dispose()
        _database = None


# -- API Gateway events ---------------------------------------------------------------------
def parse_request(event: Any) -> Request:
    """Method, path and body of a REST API (v1) or HTTP API (v2) proxy event."""
    if not isinstance(event, Mapping):
        raise BadRequest("The event is not an API Gateway proxy event")
    request_context = event.get("requestContext")
    http = request_context.get("http") if isinstance(request_context, Mapping) else None
    method = event.get("httpMethod") or (http.get("method") if isinstance(http, Mapping) else None)
    path = event.get("path") or event.get("rawPath")
    if not isinstance(method, str) or not isinstance(path, str):
        raise BadRequest("The event is not an API Gateway proxy event")
    body = event.get("body")
    if isinstance(body, str) and event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("The body is not valid base64-encoded UTF-8") from None
    return Request(method=method.upper(), path=path.rstrip("/") or "/",
                   body=body if isinstance(body, str) else None)


def answer(status: int, body: Mapping[str, object], *,
           headers: Mapping[str, str] | None = None) -> Response:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "X-App-Release": RELEASE,
                    **(headers or {})},
        "body": json.dumps(body),
    }
