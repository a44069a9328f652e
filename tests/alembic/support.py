"""Helpers shared by the migration and model tests."""

from __future__ import annotations

from pathlib import Path

import alembic.command
import alembic.config
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"

# The revisions in order, as the tests name them.
CREATE_TABLES = "741c2c5d4584"
ADD_DISPLAY_NAME = "e77ec3fef45a"
BACKFILL_DISPLAY_NAME = "2a83af8c96bd"
INDEX_TASKS = "eb3af3cb1028"
CHECK_TASK_STATUS = "d5b0686155dc"
# The online building blocks (migration_resource.online), one per revision:
ADD_EMAIL_DOMAIN = "b33d0b47f2df"
BACKFILL_EMAIL_DOMAIN = "6dcb9e3c139f"  # batched, resumable
CHECK_EMAIL_DOMAIN = "5c9800449803"  # CHECK ... NOT VALID
VALIDATE_EMAIL_DOMAIN = "f5274432e448"  # VALIDATE CONSTRAINT (the schema stays the same)
INDEX_EMAIL_DOMAIN = "25d7c6ee3024"  # CREATE INDEX CONCURRENTLY
ONLINE_REVISIONS = (ADD_EMAIL_DOMAIN, BACKFILL_EMAIL_DOMAIN, CHECK_EMAIL_DOMAIN,
                    VALIDATE_EMAIL_DOMAIN, INDEX_EMAIL_DOMAIN)
# The release that stops using users.name: nullable first (expand), then the drop
# (contract, destructive on purpose: the change gate's and the phases' example), last.
USERS_NAME_NULLABLE = "3e9a7c1d5b20"
DROP_USERS_NAME = "6f1c2a9b7d3e"
HEAD = DROP_USERS_NAME
ORDER = (CREATE_TABLES, ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME, INDEX_TASKS, CHECK_TASK_STATUS,
         *ONLINE_REVISIONS, USERS_NAME_NULLABLE, DROP_USERS_NAME)
ALL_REVISIONS = len(ORDER)
# What a database at CHECK_TASK_STATUS still has to run, in order.
AFTER_CHECK_TASK_STATUS = ORDER[ORDER.index(CHECK_TASK_STATUS) + 1:]


def make_alembic_config(connection: sa.Connection | None = None) -> alembic.config.Config:
    """The repository's alembic.ini, without letting env.py reconfigure the test's logging."""
    config = alembic.config.Config(str(ALEMBIC_INI))
    # fileConfig would set the root logger to WARNING for the rest of the test session.
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    alembic.command.upgrade(make_alembic_config(connection), revision)


def current_revision(database_url: str) -> str | None:
    """The revision another session sees, i.e. what the migrations committed."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
