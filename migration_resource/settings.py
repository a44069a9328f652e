"""Engine settings: one frozen object, read once from the environment by the adapters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from migration_resource.dsn import mask_url, normalize_url

DEFAULT_MIGRATION_TIMEOUT_SECONDS = 300  # the guide's MIGRATION_TIMEOUT
# A DDL statement waiting for a table lock queues every later query on that table behind it:
# wait a few seconds, then let go and try again, as GitLab's with_lock_retries and squawk do.
DEFAULT_LOCK_TIMEOUT_SECONDS = 5
DEFAULT_LOCK_RETRIES = 5
DEFAULT_LOCK_WAIT_SECONDS = 60
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
# In the repository the scripts live in alembic/; in the Lambda bundle they are copied to
# migrations/ because pip puts the alembic library itself at <bundle>/alembic/.
SCRIPT_LOCATION_CANDIDATES = ("migrations", "alembic")
STAGES = ("development", "production")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class EngineSettings:
    database_url: sa.URL
    script_location: Path
    schema: str = "public"
    migration_timeout_seconds: int = DEFAULT_MIGRATION_TIMEOUT_SECONDS
    # lock_timeout for DDL waiting on table locks; defaults to the migration timeout as in
    # the guide, but busy tables are better served by a few seconds and a retried deploy.
    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS
    # How often a revision whose statement timed out waiting for a table lock runs again
    # (after 1 s, 2 s, 4 s ... of backoff) before the run fails, naming the blocking session.
    lock_retries: int = DEFAULT_LOCK_RETRIES
    # How long to wait for another migration run to release the advisory lock.
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
    application_name: str = "db-migrations"
    ignored_tables: tuple[str, ...] = field(default_factory=tuple)
    # production refuses destructive revisions unless allowed, and explicit baselines
    # unless confirmed; development warns.
    stage: str = "development"
    allow_destructive: bool = False
    # Connection attempts before giving up (1 s, 2 s, 4 s... apart): a just-created or
    # resuming database refuses connections for a while.
    connect_attempts: int = 3

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise SettingsError(f"STAGE={self.stage!r} must be one of {', '.join(STAGES)}")

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return (
            f"EngineSettings(database_url={mask_url(self.database_url)!r}, "
            f"script_location={str(self.script_location)!r}, schema={self.schema!r})"
        )

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, *, database_url: str | None = None
    ) -> EngineSettings:
        """Read MIGRATION_TIMEOUT, MIGRATION_LOCK_TIMEOUT, MIGRATION_LOCK_WAIT,
        ALEMBIC_SCRIPT_LOCATION, DATABASE_SCHEMA, MIGRATION_IGNORED_TABLES, STAGE,
        ALLOW_DESTRUCTIVE and DATABASE_URL."""
        env = os.environ if env is None else env
        url = database_url or env.get("DATABASE_URL")
        if not url:
            raise SettingsError(
                "DATABASE_URL is not set; pass --database-url or export "
                "DATABASE_URL=postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
            )
        timeout = _positive_int(env, "MIGRATION_TIMEOUT", DEFAULT_MIGRATION_TIMEOUT_SECONDS)
        ignored_raw = env.get("MIGRATION_IGNORED_TABLES", "")
        ignored = tuple(t.strip() for t in ignored_raw.split(",") if t.strip())
        return cls(
            database_url=normalize_url(url),
            script_location=resolve_script_location(env.get("ALEMBIC_SCRIPT_LOCATION")),
            schema=env.get("DATABASE_SCHEMA", "public") or "public",
            migration_timeout_seconds=timeout,
            lock_timeout_seconds=min(
                _positive_int(env, "MIGRATION_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_SECONDS), timeout
            ),
            lock_retries=_count(env, "MIGRATION_LOCK_RETRIES", DEFAULT_LOCK_RETRIES),
            lock_wait_seconds=_positive_int(env, "MIGRATION_LOCK_WAIT", DEFAULT_LOCK_WAIT_SECONDS),
            ignored_tables=ignored,
            stage=env.get("STAGE", "development") or "development",
            allow_destructive=_flag(env, "ALLOW_DESTRUCTIVE"),
            connect_attempts=_positive_int(env, "DATABASE_CONNECT_ATTEMPTS", 3),
        )


def resolve_script_location(explicit: str | None = None) -> Path:
    """The folder holding env.py and versions/: explicit, else next to this package."""
    if explicit:
        location = Path(explicit).resolve()
        if not (location / "env.py").is_file():
            raise SettingsError(
                f"ALEMBIC_SCRIPT_LOCATION={explicit} has no env.py; point it at the folder "
                "holding env.py and versions/"
            )
        return location
    for name in SCRIPT_LOCATION_CANDIDATES:
        location = PACKAGE_PARENT / name
        if (location / "env.py").is_file() and (location / "versions").is_dir():
            return location
    raise SettingsError(
        f"No migration scripts found in {PACKAGE_PARENT}/migrations or "
        f"{PACKAGE_PARENT}/alembic; set ALEMBIC_SCRIPT_LOCATION"
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit():
        raise SettingsError(f"{name}={raw!r} must be a whole number (0 or more)")
    return int(raw)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be a positive number of seconds")
    return value
