"""Helpers to look at a test database from outside the engine."""

from __future__ import annotations

import sqlalchemy as sa

from tests.alembic.support import REPO_ROOT

SAMPLE_SCRIPTS = REPO_ROOT / "alembic"


def version_rows(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('public.alembic_version')")).scalar()
        if exists is None:
            return []
        return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def relations(db: sa.Engine) -> list[str]:
    """Every relation in the public schema (tables, indexes, sequences)."""
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.relname || ':' || c.relkind::text FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' ORDER BY 1"
                )
            ).scalars()
        )


def execute(db: sa.Engine, *statements: str) -> None:
    with db.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
