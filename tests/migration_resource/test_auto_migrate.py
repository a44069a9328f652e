"""Auto-migrate on first request (application Lambdas), on real PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from aws_lambda_powertools.metrics import EphemeralMetrics

from migration_resource import auto_migrate, metric_names
from migration_resource.audit import RunContext
from migration_resource.auto_migrate import AutoMigrateResult, ensure_schema
from migration_resource.engine import MigrationEngine
from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings
from tests.alembic.support import (
    AFTER_CHECK_TASK_STATUS,
    ALL_REVISIONS,
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    DROP_USERS_NAME,
    HEAD,
    ORDER,
    USERS_NAME_NULLABLE,
)
from tests.migration_resource.support import SAMPLE_SCRIPTS, execute, version_rows

EngineFactory = Callable[..., MigrationEngine]


class Factory:
    """Builds engines from the process environment, as the application does, and counts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> MigrationEngine:
        self.calls += 1
        return MigrationEngine(EngineSettings.from_environment())


@pytest.fixture(autouse=True)
def container() -> Iterator[None]:
    """Each test is a new container."""
    auto_migrate.reset()
    yield
    auto_migrate.reset()


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ALEMBIC_SCRIPT_LOCATION", str(SAMPLE_SCRIPTS))
    monkeypatch.setenv("STAGE", "development")
    monkeypatch.setenv("MIGRATION_LOCK_WAIT", "30")
    for name in ("AUTO_MIGRATE", "ALLOW_DESTRUCTIVE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def metrics() -> EphemeralMetrics:
    return EphemeralMetrics(namespace=metric_names.NAMESPACE)


def values(metrics: EphemeralMetrics, name: str) -> list[float]:
    return list(metrics.metric_set.get(name, {}).get("Value", []))


def audit(db: sa.Engine) -> list[tuple[str, str, str | None, str]]:
    with db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT actor, action, revision, outcome FROM migration_audit ORDER BY id")
        return [(r.actor, r.action, r.revision, r.outcome) for r in rows]


def test_auto_migrate_true_migrates_once_per_container(
    app_env: pytest.MonkeyPatch, db: sa.Engine, metrics: EphemeralMetrics
) -> None:
    # GIVEN an empty database and AUTO_MIGRATE=true
    app_env.setenv("AUTO_MIGRATE", "true")
    factory = Factory()

    # WHEN the container's first request checks the schema
    result = ensure_schema(factory, env=os.environ, metrics=metrics)

    # THEN every migration ran, recorded as auto-migrate, and the application serves
    assert result.serve and result.error is None
    assert (result.mode, result.state) == ("auto-migrate", "empty")
    assert len(result.applied) == ALL_REVISIONS and result.applied[-1] == HEAD
    assert result.message.startswith("Database migrations completed successfully.")
    assert version_rows(db) == [HEAD]
    upgrades = [row for row in audit(db) if row[1] == "upgrade"]
    assert len(upgrades) == ALL_REVISIONS
    assert {(actor, outcome) for actor, _, _, outcome in upgrades} == {
        ("auto-migrate", "succeeded")
    }
    assert values(metrics, metric_names.MIGRATIONS_APPLIED) == [ALL_REVISIONS]
    assert values(metrics, metric_names.MIGRATION_SUCCEEDED) == [1]
    assert values(metrics, metric_names.SCHEMA_BEHIND) == [0]

    # AND a second call in the same container does nothing at all
    rows = audit(db)
    assert ensure_schema(factory, env=os.environ, metrics=metrics) is result
    assert factory.calls == 1
    assert audit(db) == rows


def test_up_to_date_database_logs_the_guides_line_and_records_no_run(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory, metrics: EphemeralMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_engine().migrate()
    app_env.setenv("AUTO_MIGRATE", "true")
    caplog.set_level("INFO")

    result = ensure_schema(Factory(), env=os.environ, metrics=metrics)

    assert result.serve and result.applied == ()
    assert result.message == "Auto-migration: Database is up to date"
    assert "Auto-migration: Database is up to date" in caplog.messages
    assert values(metrics, metric_names.MIGRATION_SUCCEEDED) == []
    assert values(metrics, metric_names.SCHEMA_BEHIND) == [0]


def test_auto_migrate_off_only_checks_and_reports_a_schema_behind(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory, db: sa.Engine,
    metrics: EphemeralMetrics, caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a database one revision behind, AUTO_MIGRATE unset
    make_engine().migrate(USERS_NAME_NULLABLE)
    rows = audit(db)
    caplog.set_level("INFO")

    result = ensure_schema(Factory(), env=os.environ, metrics=metrics)

    # THEN nothing changed, the warning says why and what to do, and requests are refused
    assert not result.serve
    assert (result.mode, result.state, result.error) == (
        "check", "pending_migrations", "schema_not_ready"
    )
    assert version_rows(db) == [USERS_NAME_NULLABLE]
    assert audit(db) == rows
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warning == result.message
    assert warning.startswith(f"Migration state: pending_migrations (1 pending: {HEAD}).")
    assert "AUTO_MIGRATE is off" in warning
    assert "python scripts/remote_admin.py --confirm run-migrations" in warning
    assert "Migration state: pending_migrations" in caplog.messages
    assert values(metrics, metric_names.SCHEMA_BEHIND) == [1]
    assert values(metrics, metric_names.MIGRATION_FAILED) == []
    assert "behind this version of the application" in result.client_message()


def test_a_refusal_is_checked_again_and_serves_once_migrated(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory
) -> None:
    factory = Factory()
    refused = ensure_schema(factory, env=os.environ)
    assert (refused.serve, refused.state) == (False, "empty")

    # Within the interval the refusal stands without touching the database
    assert ensure_schema(factory, env=os.environ) is refused
    assert factory.calls == 1

    # Once an operator has migrated and the interval has passed, the container serves
    make_engine().migrate()
    app_env.setattr(auto_migrate, "RECHECK_SECONDS", 0.0)
    assert ensure_schema(factory, env=os.environ).serve
    assert factory.calls == 2


def test_an_application_container_never_contracts(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory, db: sa.Engine,
    metrics: EphemeralMetrics,
) -> None:
    # GIVEN production data at the revision before the column drop, AUTO_MIGRATE=true
    make_engine().migrate(CHECK_TASK_STATUS)
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada')")
    app_env.setenv("STAGE", "production")
    app_env.setenv("AUTO_MIGRATE", "true")

    result = ensure_schema(Factory(), env=os.environ, metrics=metrics)

    # THEN the container applies the expand revisions, stops before the contract revision
    # and serves: the drop waits for a deploy, once the release that stopped reading the
    # column is live
    assert result.serve, result.message
    assert (result.mode, result.state, result.applied) == (
        "auto-migrate", "pending_migrations", AFTER_CHECK_TASK_STATUS[:-1])
    assert result.outcome is not None and result.outcome.deferred == (DROP_USERS_NAME,)
    assert version_rows(db) == [USERS_NAME_NULLABLE]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM users").scalar_one() == "Ada"
    assert [row for row in audit(db) if row[1] == "defer"] == [
        ("auto-migrate", "defer", DROP_USERS_NAME, "deferred")]

    # AND a new container that only checks serves too: only deferred revisions are pending
    auto_migrate.reset()
    app_env.setenv("AUTO_MIGRATE", "false")
    again = ensure_schema(Factory(), env=os.environ)
    assert (again.serve, again.mode) == (True, "check"), again.message
    assert f"{DROP_USERS_NAME} wait for the next release" in again.message


def test_a_check_only_container_refuses_a_schema_missing_an_expand_revision(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory, db: sa.Engine
) -> None:
    make_engine().migrate(CREATE_TABLES)
    app_env.setenv("AUTO_MIGRATE", "false")
    result = ensure_schema(Factory(), env=os.environ)
    assert not result.serve and result.error == "schema_not_ready"


def test_tables_without_history_get_the_verified_baseline_then_migrate(
    app_env: pytest.MonkeyPatch, db: sa.Engine
) -> None:
    with db.connect() as conn:
        config = alembic_config(SAMPLE_SCRIPTS)
        config.attributes["connection"] = conn
        command.upgrade(config, CREATE_TABLES)
    execute(db, "DROP TABLE alembic_version")
    app_env.setenv("AUTO_MIGRATE", "true")

    result = ensure_schema(Factory(), env=os.environ)

    # (it stops before the contract revision, as any application container does)
    assert result.serve and result.state == "tables_without_migration_history"
    assert len(result.applied) == ORDER.index(USERS_NAME_NULLABLE)
    assert version_rows(db) == [USERS_NAME_NULLABLE]
    assert ("auto-migrate", "baseline", CREATE_TABLES, "succeeded") in audit(db)


def test_a_concurrent_deploy_and_auto_migrate_apply_each_revision_once(
    app_env: pytest.MonkeyPatch, make_engine: EngineFactory, db: sa.Engine
) -> None:
    # GIVEN an empty database, a deploy and a container starting at the same moment
    app_env.setenv("AUTO_MIGRATE", "true")
    start = threading.Barrier(2)

    def deploy() -> int:
        engine = make_engine()
        start.wait()
        return len(engine.migrate(context=RunContext(actor="deploy")).applied)

    def container() -> AutoMigrateResult:
        start.wait()
        return ensure_schema(Factory(), env=os.environ)

    with ThreadPoolExecutor(max_workers=2) as pool:
        deployed = pool.submit(deploy)
        checked = pool.submit(container)
        applied_by_deploy, result = deployed.result(timeout=120), checked.result(timeout=120)

    # THEN the migration lock let one of them migrate; both succeed, nothing ran twice
    assert result.serve
    assert applied_by_deploy + len(result.applied) == ALL_REVISIONS
    assert version_rows(db) == [HEAD]
    upgrades = [row for row in audit(db) if row[1] == "upgrade"]
    assert [outcome for *_, outcome in upgrades] == ["succeeded"] * ALL_REVISIONS
    assert len({actor for actor, *_ in upgrades}) == 1


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:9/none", "database_unavailable"),
        ("DATABASE_URL", "", "configuration"),
        ("AUTO_MIGRATE", "maybe", "configuration"),
        ("ALEMBIC_SCRIPT_LOCATION", "/nonexistent", "configuration"),
    ],
)
def test_errors_are_reported_not_raised(
    app_env: pytest.MonkeyPatch, setting: str, value: str, error: str
) -> None:
    app_env.setenv("DATABASE_CONNECT_ATTEMPTS", "1")
    app_env.setenv(setting, value)

    result = ensure_schema(Factory(), env=os.environ)

    assert (result.serve, result.state, result.error) == (False, None, error)
    assert "secret" not in result.message
    assert result.client_message() == "The database is unavailable; retry later"
