"""Engine settings: one frozen object, read once from the environment by the adapters."""

from __future__ import annotations

import json
import os
import re
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
# In the repository the scripts live in alembic/; in the Lambda bundle the revision files are
# copied to migrations/versions/ because pip puts the alembic library itself at
# <bundle>/alembic/ (which has no versions/ folder, so it is never taken for the scripts).
SCRIPT_LOCATION_CANDIDATES = ("migrations", "alembic")
STAGES = ("development", "production")


def stricter_stage(*stages: str) -> str:
    """Production when any source says production: the function's STAGE and the deploy's
    `Stage` each may; neither relaxes the other, and a missing one never does."""
    return "production" if "production" in stages else "development"
# The team's migrations folder; ALEMBIC_SCRIPT_LOCATION is its older name, still read.
MIGRATIONS_PATH = "MIGRATIONS_PATH"
MIGRATIONS_PATH_ALIAS = "ALEMBIC_SCRIPT_LOCATION"
MIGRATION_NAMING_CONVENTION = "MIGRATION_NAMING_CONVENTION"
MIGRATION_METADATA = "MIGRATION_METADATA"
# What a naming convention names, as SQLAlchemy spells the kinds of constraint.
NAMING_CONVENTION_KEYS = ("ix", "uq", "ck", "fk", "pk")
# The tokens SQLAlchemy fills in (sqlalchemy/sql/naming.py): `%(column_0_name)s`,
# `%(column_0_N_name)s`, `%(referred_column_0_name)s`...
_NAMING_TOKEN = re.compile(
    r"table_name|constraint_name|referred_table_name|column_\d+(_?N)?_(name|key|label)"
    r"|referred_column_\d+(_?N)?_name"
)
_TEMPLATE_TOKEN = re.compile(r"%\((\w*)\)s")
_METADATA_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


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
    # What a team's env.py used to supply, as settings (the engine runs its own environment,
    # migration_resource/alembic_env/env.py): the naming convention the revisions rely on
    # (`op.f()` and constraints named None get their names from it), and optionally the
    # `module:attribute` of the team's MetaData, for `alembic check` comparisons (its naming
    # convention is used when naming_convention is None).
    naming_convention: Mapping[str, str] | None = None
    metadata: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise SettingsError(f"STAGE={self.stage!r} must be one of {', '.join(STAGES)}")
        if self.naming_convention is not None:
            object.__setattr__(self, "naming_convention",
                               check_naming_convention(self.naming_convention))
        if self.metadata is not None:
            object.__setattr__(self, "metadata", check_metadata_path(self.metadata))

    @property
    def session_guards(self) -> tuple[str, ...]:
        """The SET statements that bound a migration session: each statement by
        MIGRATION_TIMEOUT, each wait for a table lock by MIGRATION_LOCK_TIMEOUT."""
        return (f"SET statement_timeout = '{int(self.migration_timeout_seconds)}s'",
                f"SET lock_timeout = '{int(self.lock_timeout_seconds)}s'")

    @property
    def versions_location(self) -> Path:
        """The folder holding the revision files themselves."""
        return versions_location(self.script_location)

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
        MIGRATIONS_PATH (or ALEMBIC_SCRIPT_LOCATION), MIGRATION_NAMING_CONVENTION,
        MIGRATION_METADATA, DATABASE_SCHEMA, MIGRATION_IGNORED_TABLES, STAGE,
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
            script_location=_migrations_path(env),
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
            naming_convention=_naming_convention(env),
            metadata=env.get(MIGRATION_METADATA, "").strip() or None,
        )


def resolve_script_location(explicit: str | None = None, *, name: str = MIGRATIONS_PATH) -> Path:
    """The team's migrations folder: `explicit`, else migrations/ or alembic/ next to this
    package.

    Either layout: a script directory whose versions/ holds the revisions (Flask-Migrate's
    `migrations/`, a plain Alembic `alembic/`; its env.py is not run), or a folder of revision
    files itself. `name` is the setting `explicit` came from, for the error message.
    """
    if explicit:
        location = Path(explicit).expanduser().resolve()
        if not location.is_dir():
            raise SettingsError(
                f"{name}={explicit} is not a folder; point it at your migrations folder (the "
                "one holding versions/) or at a folder of revision files"
            )
        if (location / "env.py").is_file() and not (location / "versions").is_dir():
            raise SettingsError(
                f"{name}={explicit} holds an env.py but no versions/ folder; point it at the "
                "folder holding versions/, or at the folder of revision files"
            )
        return location
    for candidate in SCRIPT_LOCATION_CANDIDATES:
        location = PACKAGE_PARENT / candidate
        if (location / "versions").is_dir():
            return location
    raise SettingsError(
        f"No migration scripts found in {PACKAGE_PARENT}/migrations/versions or "
        f"{PACKAGE_PARENT}/alembic/versions; set {MIGRATIONS_PATH}"
    )


def versions_location(folder: Path) -> Path:
    """Where the revision files of a migrations folder are: its versions/ when it has one
    (a script directory), else the folder itself (a folder of revision files)."""
    versions = folder / "versions"
    return versions if versions.is_dir() else folder


def check_naming_convention(
    value: object, *, name: str = MIGRATION_NAMING_CONVENTION
) -> dict[str, str] | None:
    """A naming convention as SQLAlchemy's MetaData takes it, checked; None when empty."""
    if not isinstance(value, Mapping):
        raise SettingsError(
            f"{name} must be a JSON object such as "
            '{"pk": "pk_%(table_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s_'
            '%(referred_table_name)s"}, not a ' + type(value).__name__
        )
    checked: dict[str, str] = {}
    for key, template in value.items():
        if key not in NAMING_CONVENTION_KEYS:
            raise SettingsError(
                f"{name}: {key!r} is not a kind of constraint; the keys are "
                f"{', '.join(NAMING_CONVENTION_KEYS)}"
            )
        if not isinstance(template, str) or not template.strip():
            raise SettingsError(f"{name}: the template of {key!r} must be a non-empty string")
        unknown = [token for token in _TEMPLATE_TOKEN.findall(template)
                   if not _NAMING_TOKEN.fullmatch(token)]
        if unknown:
            raise SettingsError(
                f"{name}: the template of {key!r} uses %({unknown[0]})s, which SQLAlchemy does "
                "not fill in (table_name, column_0_name, column_0_N_name, column_0_label, "
                "referred_table_name, referred_column_0_name, constraint_name)"
            )
        checked[key] = template
    return checked or None


def check_metadata_path(value: str, *, name: str = MIGRATION_METADATA) -> str:
    cleaned = value.strip()
    if not _METADATA_PATH.fullmatch(cleaned):
        raise SettingsError(
            f"{name}={value!r} must be an import path and an attribute, as "
            "`package.module:attribute` (e.g. myapp.models:Base.metadata)"
        )
    return cleaned


def _migrations_path(env: Mapping[str, str]) -> Path:
    path = env.get(MIGRATIONS_PATH, "").strip()
    alias = env.get(MIGRATIONS_PATH_ALIAS, "").strip()
    if path and alias and Path(path).resolve() != Path(alias).resolve():
        raise SettingsError(
            f"{MIGRATIONS_PATH}={path} and {MIGRATIONS_PATH_ALIAS}={alias} name different "
            f"folders; set {MIGRATIONS_PATH} alone"
        )
    if path:
        return resolve_script_location(path, name=MIGRATIONS_PATH)
    return resolve_script_location(alias or None, name=MIGRATIONS_PATH_ALIAS)


def _naming_convention(env: Mapping[str, str]) -> dict[str, str] | None:
    raw = env.get(MIGRATION_NAMING_CONVENTION, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SettingsError(
            f"{MIGRATION_NAMING_CONVENTION} is not JSON ({error.msg} at character "
            f"{error.pos}); write a JSON object of templates by kind "
            f"({', '.join(NAMING_CONVENTION_KEYS)}), or leave it empty"
        ) from None
    return check_naming_convention(value)


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
