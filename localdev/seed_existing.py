"""An existing app's database, for the local deploy of an `existingDatabase` stage.

What a team adopting the migrations has: tables and rows, and no migration history, as an app
that created its schema with `db.create_all()` has. Here those are the sample app's tables as
the first revision of the repository's history creates them (that revision is run, then its
`alembic_version` dropped), with a few users, projects and tasks. The first deploy must find
them (`tables_without_migration_history`), take the verified baseline, migrate on, and keep
every row; `count_rows` before and after says whether it did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

REPO_ROOT = Path(__file__).resolve().parents[1]
# Tables that are the engine's, not the application's: left out of the row counts.
ENGINE_TABLES = ("alembic_version",)
ENGINE_TABLE_PREFIX = "migration_"
TEAMS = ("billing", "search", "support")


def first_revision(root: Path = REPO_ROOT) -> str:
    """The base of the repository's sample history (alembic.ini's script folder)."""
    script = ScriptDirectory.from_config(Config(str(root / "alembic.ini")))
    (base,) = script.get_bases()
    return str(base)


def application_tables(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        names = sa.inspect(connection).get_table_names(schema="public")
    return sorted(name for name in names if name not in ENGINE_TABLES
                  and not name.startswith(ENGINE_TABLE_PREFIX))


def is_empty(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        return not sa.inspect(connection).get_table_names(schema="public")


def seed_like_create_all(url: str, *, revision: str | None = None) -> str:
    """Create the tables of `revision` (default: the first) without history, and some rows.
    Returns the revision whose tables were created."""
    revision = revision or first_revision()
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", revision], cwd=REPO_ROOT,
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "DATABASE_URL": url})
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE alembic_version"))  # create_all keeps none
            users = {column["name"] for column in sa.inspect(connection).get_columns("users")}
            for team in TEAMS:
                user = {"email": f"lead@{team}.example.com", "name": f"{team.title()} lead"}
                if "name" not in users:  # a revision after the one that drops it
                    del user["name"]
                owner = connection.execute(sa.text(
                    f"INSERT INTO users ({', '.join(user)}) VALUES "
                    f"({', '.join(':' + key for key in user)}) RETURNING id"), user).scalar_one()
                project = connection.execute(sa.text(
                    "INSERT INTO projects (owner_id, name) VALUES (:owner, :name) RETURNING id"),
                    {"owner": owner, "name": team}).scalar_one()
                for title in ("triage the backlog", "ship the release"):
                    connection.execute(sa.text(
                        "INSERT INTO tasks (project_id, title) VALUES (:project, :title)"),
                        {"project": project, "title": f"{team}: {title}"})
    finally:
        engine.dispose()
    return revision


def count_rows(engine: sa.Engine, tables: list[str]) -> dict[str, int]:
    """Rows per table; a table that is gone counts 0."""
    present = set(application_tables(engine))
    with engine.connect() as connection:
        return {table: (connection.execute(sa.text(f'SELECT count(*) FROM "{table}"'))
                        .scalar_one() if table in present else 0)
                for table in tables}


def rows_kept_line(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """`Rows kept: 9 of 9 (projects 3 of 3, ...)`: what a deploy must not lose."""
    kept = {table: min(count, after.get(table, 0)) for table, count in before.items()}
    detail = ", ".join(f"{table} {kept[table]} of {count}" for table, count in before.items())
    return (f"Rows kept: {sum(kept.values())} of {sum(before.values())}"
            + (f" ({detail})" if detail else ""))
