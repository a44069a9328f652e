"""The team's own Alembic environment of the team-style test and benchmark histories.

Real projects' histories (Flask-Migrate apps, services with seed data, merges) come with an
env.py that hands Alembic a MetaData carrying the naming convention their revisions rely on
(`op.create_foreign_key(None, ...)` and `op.f()` names come from it). The env.py written here
does what such an env.py does: plain Alembic runs it (the tests prove each history right with
it, as the team ran it before the engine). The migration engine never runs it: it brings its
own environment and takes the convention as a setting (MIGRATION_NAMING_CONVENTION, or
`EngineSettings.naming_convention` = NAMING_CONVENTION below), so the file only stands there
as it does in a team's repository.

Offline it needs only the PostgreSQL dialect (no driver); online it uses a connection passed
in ``config.attributes["connection"]`` as is (never committed or closed here), or an Engine
there, or DATABASE_URL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The convention Flask-SQLAlchemy's documentation and most Flask-Migrate projects use.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ENV_PY = f'''"""Alembic environment of a team-style history (written by localdev/history_env.py)."""
from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

config = context.config
target_metadata = sa.MetaData(naming_convention={NAMING_CONVENTION!r})


def run() -> None:
    callbacks = config.attributes.get("on_version_apply")
    if context.is_offline_mode():
        context.configure(dialect_name="postgresql", literal_binds=True,
                          target_metadata=target_metadata, transaction_per_migration=True,
                          on_version_apply=callbacks)
        with context.begin_transaction():
            context.run_migrations()
        return
    given = config.attributes.get("connection")
    if isinstance(given, sa.Connection):
        _online(given, callbacks)
        return
    engine = given if isinstance(given, sa.Engine) else sa.create_engine(
        os.environ["DATABASE_URL"], poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        _online(connection, callbacks)
        connection.commit()


def _online(connection: sa.Connection, callbacks: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      transaction_per_migration=True, on_version_apply=callbacks)
    with context.begin_transaction():
        context.run_migrations()


run()
'''


def write_script_directory(folder: Path, *, versions_from: Path | None = None) -> Path:
    """Make `folder` an Alembic script directory with this env.py; returns `folder`.

    The engine takes `folder` as its migrations folder (its revisions are in versions/; the
    env.py is not run), with NAMING_CONVENTION as its naming-convention setting.

    With `versions_from`, its revision files are copied into `folder/versions` (a copy, so a
    test may add or edit revisions without touching the original).
    """
    versions = folder / "versions"
    if versions_from is not None:
        shutil.copytree(versions_from, versions, ignore=shutil.ignore_patterns("__pycache__"))
    versions.mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV_PY)
    (folder / "script.py.mako").write_text("")
    return folder
