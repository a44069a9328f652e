"""The migration engine's own Alembic environment, used by every engine run.

A deploy's custom resource, the admin CLI and an application's auto-migrate all run this file,
never the env.py a team's migrations folder may hold: the advisory lock, the session's
timeouts, the audit trail and one transaction per revision are set up by the engine on the
connection it passes here, and must not depend on what a team's env.py does with it. The
team's revisions come in through Alembic's ``version_locations``.

What an environment legitimately supplies comes from the engine's settings, in
``config.attributes``:

- ``connection``: the engine's open connection, used as is (never committed, closed or given
  session settings here). A SQLAlchemy Engine is accepted too (pytest-alembic passes one):
  a connection is opened on it, committed and closed;
- ``naming_convention`` (MIGRATION_NAMING_CONVENTION): put on the MetaData given to Alembic as
  ``target_metadata``, which is where Alembic's operations take their naming convention
  from: ``op.f()`` names and constraints created with the name ``None`` get the team's names;
- ``target_metadata_path`` (MIGRATION_METADATA, ``module:attribute``): the team's MetaData (or
  declarative base), for ``alembic check`` and autogenerate comparisons; its naming convention
  is the one used when ``naming_convention`` is not set;
- ``ignored_tables``: tables comparisons leave out, besides the engine's ``migration_audit``;
- ``on_version_apply``: Alembic's per-revision callback (the engine's timer and audit, the
  dry run's split of the offline SQL).

Offline mode (``--sql``, the dry run's rendering) needs only the PostgreSQL dialect, no
driver and no server.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping

import sqlalchemy as sa
from alembic import context
from alembic.util import CommandError

from migration_resource.alembic_env.options import offline_options, online_options

OFFLINE_DIALECT = "postgresql"
# One DEBUG line per run of this environment (each run walks the revisions it applies).
logger = logging.getLogger("migration_resource.alembic_env")

config = context.config


def load_metadata(path: str) -> sa.MetaData:
    """The MetaData at `module:attribute` (a declarative base's `.metadata` too)."""
    module_name, _, attribute = path.partition(":")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except Exception as error:  # the team's module runs its own code on import
        raise CommandError(
            f"MIGRATION_METADATA={path} cannot be loaded: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]}; check the import path and that its "
            "package is in the bundle, or unset MIGRATION_METADATA"
        ) from None
    if isinstance(found, sa.MetaData):
        return found
    inner = getattr(found, "metadata", None)
    if isinstance(inner, sa.MetaData):
        return inner
    raise CommandError(
        f"MIGRATION_METADATA={path} is a {type(found).__name__}, not an SQLAlchemy MetaData "
        "(nor a declarative base holding one)"
    )


def target_metadata() -> sa.MetaData:
    convention: Mapping[str, str] | None = config.attributes.get("naming_convention")
    path: str | None = config.attributes.get("target_metadata_path")
    if path:
        team = load_metadata(path)
        if convention and dict(team.naming_convention) != dict(convention):
            raise CommandError(
                f"MIGRATION_NAMING_CONVENTION differs from the naming convention of "
                f"MIGRATION_METADATA={path}; revisions would be named by one and compared "
                "with the other: set the same convention in both, or unset "
                "MIGRATION_NAMING_CONVENTION to use the MetaData's"
            )
        return team
    if convention:
        return sa.MetaData(naming_convention=dict(convention))
    return sa.MetaData()


def run_migrations_offline(metadata: sa.MetaData) -> None:
    context.configure(dialect_name=OFFLINE_DIALECT, **offline_options(config.attributes, metadata))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: sa.Connection, metadata: sa.MetaData) -> None:
    context.configure(connection=connection, **online_options(config.attributes, metadata))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online(metadata: sa.MetaData) -> None:
    given = config.attributes.get("connection")
    if isinstance(given, sa.Connection):
        run_migrations_on(given, metadata)
        return
    if isinstance(given, sa.Engine):
        with given.connect() as connection:
            run_migrations_on(connection, metadata)
            connection.commit()
        return
    raise CommandError(
        "The migration engine's Alembic environment runs on the connection the engine passes "
        "in config.attributes['connection'] (an SQLAlchemy Connection or Engine), "
        f"not {type(given).__name__}; run migrations with the engine (remote_admin.py, the "
        "deploy), or use --sql to render them without a database"
    )


if context.is_offline_mode():
    logger.debug("The engine's Alembic environment runs offline")
    run_migrations_offline(target_metadata())
else:
    logger.debug("The engine's Alembic environment runs online")
    run_migrations_online(target_metadata())
