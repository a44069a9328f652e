"""Alembic environment for the sample application's migrations.

Three ways in:

- a caller holding a session (the tests, a tool) passes an open connection in
  ``config.attributes["connection"]``. It is used as is: the caller owns its lifetime, its
  transactions and its session settings, so this file never opens, commits or closes it
  (the migration engine runs its own environment, ``migration_resource/alembic_env``, with
  the same options: ``migration_resource.alembic_env.options``);
- the ``alembic`` CLI and local tools set ``DATABASE_URL``;
- offline mode (``alembic upgrade --sql``) renders the SQL without any database.

Other ``config.attributes`` read here, all optional: ``ignored_tables`` (tables that
``alembic check`` must not report), ``on_version_apply`` (alembic's per-revision callback)
and ``configure_logger`` (False when the caller keeps its own logging configuration).
"""

from __future__ import annotations

import logging.config
import os

import sqlalchemy as sa
from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from migration_resource.alembic_env.options import offline_options, online_options
from sample_app.models import Base

# Offline mode only needs a dialect to render SQL, never a server.
OFFLINE_DIALECT_URL = "postgresql+psycopg2://"

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    # Keep loggers that exist already (a test run, an embedding tool) working.
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata



def database_url_from_env() -> URL | None:
    """DATABASE_URL with a bare PostgreSQL scheme given the psycopg2 driver, the one installed.

    Heroku-style ``postgres://`` names no dialect SQLAlchemy knows; plain ``postgresql://``
    selects psycopg2 anyway, and is pinned for clarity. An explicit driver
    (``postgresql+psycopg://`` where psycopg 3 is installed) is kept.
    """
    raw = os.environ.get("DATABASE_URL", "").strip()
    if not raw:
        return None
    url = sa.make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    return url


def run_migrations_offline() -> None:
    context.configure(url=database_url_from_env() or sa.make_url(OFFLINE_DIALECT_URL),
                      **offline_options(config.attributes, target_metadata))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    context.configure(connection=connection,
                      **online_options(config.attributes, target_metadata))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run_migrations_on(given)
        return
    if isinstance(given, Engine):
        # pytest-alembic hands over its engine under the same key.
        with given.connect() as connection:
            run_migrations_on(connection)
        return
    if given is not None:
        raise CommandError(
            "config.attributes['connection'] must be an SQLAlchemy Connection or Engine, "
            f"not {type(given).__name__}"
        )

    url = database_url_from_env()
    if url is None:
        raise CommandError(
            "No database to migrate: set DATABASE_URL, or pass an SQLAlchemy connection in "
            "config.attributes['connection'] (use --sql to render SQL without a database)"
        )
    # NullPool: a migration run is one short session; nothing should stay open after it.
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            run_migrations_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
