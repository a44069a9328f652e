"""A function of the kind a team already has: its own handler, reading its own tables.

It is not the sample API (`sample_app.handler`); it stands for the Lambda a team brings when
it adopts `DatabaseMigrations` in an existing app. The stack creates it as such a team would,
then hands it to `DatabaseMigrations.connect_application(function)` (check-only): the
function gets the engine's variables and the secret, is updated only after the migration,
and checks once per container that the schema fits its code before it answers.

    any event → {"schema": "<state>", "users": N, "projects": [{"name", "owner", "tasks"}]}

While the schema is not one it can serve, it answers 503 with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from migration_resource.auto_migrate import ensure_schema
from migration_resource.connection import database_url_from_environment
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings

CONNECT_TIMEOUT_SECONDS = 10
REPORT = sa.text("""
    SELECT p.name, u.email AS owner, count(t.id) AS tasks
    FROM projects p JOIN users u ON u.id = p.owner_id
    LEFT JOIN tasks t ON t.project_id = p.id
    GROUP BY p.id, p.name, u.email
    ORDER BY p.id
""")


def handler(event: Any, context: Any) -> dict[str, object]:
    env = os.environ
    schema = ensure_schema(lambda: _migration_engine(env), env=env)
    if not schema.serve:
        return _answer(503, {"message": schema.client_message(), "state": schema.state})
    engine = sa.create_engine(database_url_from_environment(env), poolclass=sa.NullPool,
                              connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as connection:
            users = connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
            projects = [dict(row._mapping) for row in connection.execute(REPORT)]
    finally:
        engine.dispose()
    return _answer(200, {"schema": schema.state, "users": users, "projects": projects})


def _migration_engine(env: Mapping[str, str]) -> MigrationEngine:
    url = database_url_from_environment(env).render_as_string(hide_password=False)
    return MigrationEngine(EngineSettings.from_environment(env, database_url=url))


def _answer(status: int, body: Mapping[str, object]) -> dict[str, object]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body)}
