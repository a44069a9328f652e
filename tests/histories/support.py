"""Team-style Alembic histories: where they live, what each holds, and plain-Alembic helpers.

Each folder next to this module holds the revision files of one history, written the way
real teams write them (Flask-Migrate autogenerate output, seed data, data migrations that
read rows, enums altered outside a transaction, concurrent indexes, branches and merges).
`scripts(name, tmp_path)` turns one into a complete, throwaway Alembic script directory
with the environment of `localdev/history_env.py` (which carries the Flask naming
convention the revisions rely on).

The helpers below drive plain Alembic and look at databases from outside; nothing here
uses the engine, so the histories can be proven right independently of it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import to_tuple

from localdev.history_env import write_script_directory

HISTORIES_DIR = Path(__file__).resolve().parent
ALEMBIC_VERSION = "alembic_version"
# The engine's own table: left out whenever an engine-migrated database is compared with a
# plain-Alembic one.
PRODUCT_TABLES = ("migration_audit",)
# Columns whose default is the clock, or random, differ between two runs by design.
CLOCK_DEFAULTS = ("now()", "current_timestamp", "clock_timestamp()", "statement_timestamp()",
                  "transaction_timestamp()", "gen_random_uuid()")


@dataclass(frozen=True)
class History:
    """One history and the facts the tests rely on (checked against its scripts)."""

    name: str
    revisions: tuple[str, ...]  # an upgrade order: every revision after what it stands on
    # A revision that changes the schema, as does the one after it: a database migrated to it
    # matches it and no neighbour (what the verified baseline must find), and revisions that
    # read or rewrite rows still follow it.
    middle: str
    seed_rows: Mapping[str, int]  # table → rows the migrations themselves write, at head
    drift: tuple[str, str]  # (table at `middle`, column to add by hand) for the drift test
    # Revisions whose upgrade reads from the database (rows, rowcounts, catalog checks): their
    # SQL cannot be rendered offline, only captured from a trial run.
    needs_database: frozenset[str] = frozenset()
    # Revisions that commit in the middle (autocommit_block, op.execute("COMMIT")): a trial
    # run cannot really commit, yet their preview must show what they run (each has an entry
    # in sql_fragments).
    non_transactional: frozenset[str] = frozenset()
    # revision → a piece of the SQL it runs, which its dry-run entry must contain
    sql_fragments: Mapping[str, str] = field(default_factory=dict)
    label_target: str | None = None  # a branch-label target resolving to the head
    merge_parents: tuple[str, ...] = ()  # the heads a merge revision joins

    @property
    def head(self) -> str:
        return self.revisions[-1]

    @property
    def versions(self) -> Path:
        return HISTORIES_DIR / self.name

    def file_name(self, revision: str) -> str:
        (path,) = self.versions.glob(f"{revision}_*.py")
        return path.name

    def ancestry(self, *revisions: str) -> frozenset[str]:
        """The revisions and all they stand on (down revisions and dependencies)."""
        graph = _graph(self.name)
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            revision = stack.pop()
            if revision not in seen:
                seen.add(revision)
                stack.extend(graph[revision])
        return frozenset(seen)

    def pending_after(self, *current: str) -> tuple[str, ...]:
        """What an upgrade to head runs on a database at `current`, in upgrade order."""
        done = self.ancestry(*current)
        return tuple(r for r in self.revisions if r not in done)


@cache
def _graph(name: str) -> dict[str, tuple[str, ...]]:
    """revision → what it stands on, read from the revision files themselves."""
    return {
        script.revision: to_tuple(script.down_revision, default=())
        + to_tuple(script.dependencies, default=())
        for script in script_directory(name).walk_revisions("base", "heads")
    }


def script_directory(name: str) -> ScriptDirectory:
    folder = HISTORIES_DIR / name
    return ScriptDirectory(str(folder), version_locations=[str(folder)])


HISTORIES: dict[str, History] = {
    history.name: history
    for history in (
        History(
            # Flask-Migrate autogenerate style: op.f()/batch_op.f() names, unnamed constraints
            # named by the convention, drop_constraint by the conventional name, a seed
            # revision with lightweight tables, a rename by copy, a backfill.
            name="flask_app",
            revisions=(
                "5b1f0c2a9e11", "8d3a6e4f7c20", "c47e19ab0d35", "e2f08b6d1a47", "1a9c3d7e5f62",
                "73be0a5c2d98", "9f4d2b8e6a13", "b6e3f1a0c8d4", "d0a7c5e2b9f6",
            ),
            middle="1a9c3d7e5f62",
            seed_rows={"users": 1, "tags": 3, "posts": 1, "post_tags": 1},
            drift=("users", "nickname"),
            sql_fragments={
                "e2f08b6d1a47": "INSERT INTO tags",
                "73be0a5c2d98": "fk_comments_author_id_users",
                "9f4d2b8e6a13": "DROP CONSTRAINT uq_users_username",
                "b6e3f1a0c8d4": "UPDATE posts SET content",
                "d0a7c5e2b9f6": "ck_posts_title_not_blank",
            },
        ),
        History(
            # Seed data and data migrations: bulk_insert of reference rows, fetchone() on a
            # row the seed wrote, a loop over sa.select(users) updating each row, an enum
            # created with its table, another created explicitly (create_type=False,
            # checkfirst), values added after op.execute("COMMIT") and in an
            # autocommit_block, the citext extension.
            name="seeded_service",
            revisions=(
                "2c4e6a8b0d13", "41d3f5a7c9e2", "5e7a9c1b3d46", "6f8b0d2c4e57", "7a9c1e3d5f68",
                "8b0d2f4a6c79", "9c1e3a5b7d80", "ad2f4b6c8e91", "be3a5c7d9f02", "cf4b6d8e0a13",
            ),
            middle="5e7a9c1b3d46",
            seed_rows={"roles": 3, "users": 2, "currencies": 4},
            drift=("users", "nickname"),
            needs_database=frozenset({"6f8b0d2c4e57", "7a9c1e3d5f68"}),
            non_transactional=frozenset({"ad2f4b6c8e91", "be3a5c7d9f02"}),
            sql_fragments={
                "41d3f5a7c9e2": "INSERT INTO roles",
                "5e7a9c1b3d46": "CREATE EXTENSION IF NOT EXISTS citext",
                "6f8b0d2c4e57": "UPDATE users SET role_id",
                "7a9c1e3d5f68": "UPDATE users SET display_name",
                "8b0d2f4a6c79": "CREATE TYPE invoice_status",
                "9c1e3a5b7d80": "CREATE TYPE line_kind",
                "ad2f4b6c8e91": "ALTER TYPE invoice_status ADD VALUE 'void'",
                "be3a5c7d9f02": "ADD VALUE IF NOT EXISTS 'overdue'",
                "cf4b6d8e0a13": "INSERT INTO currencies",
            },
        ),
        History(
            # Two bases (the core line and the labelled billing branch), a depends_on across
            # them, a merge revision, and work after the merge.
            name="branchy",
            revisions=(
                "e91b47c2a0d3", "0f6a2d94c8b1", "7c3e58b1d2a6", "4b8d0e6f1a27", "d5a91c3e7f40",
                "2e7f0b5c9d18", "a63c1f8e4b05", "f1d49a7c2e63", "5c02e8b6d91f",
            ),
            middle="a63c1f8e4b05",
            seed_rows={"accounts": 1, "projects": 1, "plans": 3, "subscriptions": 1},
            drift=("subscriptions", "coupon_code"),
            sql_fragments={
                "4b8d0e6f1a27": "INSERT INTO plans",
                "f1d49a7c2e63": "INSERT INTO subscriptions",
                "5c02e8b6d91f": "ux_subscriptions_active_account",
            },
            label_target="billing@head",
            merge_parents=("7c3e58b1d2a6", "d5a91c3e7f40"),
        ),
        History(
            # Concurrent indexes in autocommit blocks (one revision mixes a transactional
            # column with them), plain transactional revisions, a batched backfill that reads
            # rowcounts, a CHECK added NOT VALID and then validated.
            name="concurrent_indexes",
            revisions=(
                "1d7f3b9e5a20", "6a2c8e4f0b31", "b83e1f5a7c42", "0c94a2e6d853", "e5a7c3b9f164",
                "3f18d6a0b275", "92b6e4c8a386", "c7d0a5f3e497",
            ),
            middle="b83e1f5a7c42",
            seed_rows={"shipping_methods": 3, "customers": 1},
            drift=("orders", "gift_note"),
            needs_database=frozenset({"0c94a2e6d853"}),
            non_transactional=frozenset({"b83e1f5a7c42", "e5a7c3b9f164", "92b6e4c8a386"}),
            sql_fragments={
                "6a2c8e4f0b31": "INSERT INTO shipping_methods",
                "b83e1f5a7c42": "CREATE INDEX CONCURRENTLY ix_orders_customer_id",
                "0c94a2e6d853": "UPDATE customers SET email_normalized",
                "e5a7c3b9f164": "CREATE UNIQUE INDEX CONCURRENTLY ux_customers_email_normalized",
                "92b6e4c8a386": "CREATE INDEX CONCURRENTLY ix_orders_pending_placed_at",
                "c7d0a5f3e497": "VALIDATE CONSTRAINT",
            },
        ),
        History(
            # What squawk's lock rules catch, as teams write it: a unique constraint and a
            # primary key added to tables with rows, an index dropped and a REINDEX without
            # CONCURRENTLY, volatile defaults and a stored generated column, CREATE TABLE IF
            # NOT EXISTS, revisions setting their own lock_timeout and statement_timeout;
            # then the online way, in an autocommit_block.
            name="ops_console",
            revisions=(
                "3a1c5e7b9d02", "4b2d6f8a0c13", "5c3e7a9b1d24", "6d4f8b0c2e35", "7e5a9c1d3f46",
                "8f6b0d2e4a57", "9a7c1e3f5b68", "ab8d2f4a6c79", "bc9e3a5b7d80",
            ),
            middle="7e5a9c1d3f46",
            seed_rows={"accounts": 2, "audit_events": 2, "feature_flags": 1},
            drift=("accounts", "nickname"),
            non_transactional=frozenset({"bc9e3a5b7d80"}),
            sql_fragments={
                "4b2d6f8a0c13": "CREATE TABLE IF NOT EXISTS feature_flags",
                "5c3e7a9b1d24": "ADD CONSTRAINT uq_accounts_email UNIQUE",
                "6d4f8b0c2e35": "DROP INDEX ix_sessions_token",
                "7e5a9c1d3f46": "DEFAULT gen_random_uuid()",
                "8f6b0d2e4a57": "SET lock_timeout = '0'",
                "9a7c1e3f5b68": "SET statement_timeout = '2h'",
                "ab8d2f4a6c79": "REINDEX INDEX ix_sessions_token_expires_at",
                "bc9e3a5b7d80": "REINDEX INDEX CONCURRENTLY pk_accounts",
            },
        ),
    )
}
HISTORY_NAMES = tuple(HISTORIES)


def scripts(name: str, tmp_path: Path) -> Path:
    """A complete, throwaway script directory of history `name` under `tmp_path`."""
    folder = tmp_path / name
    if (folder / "env.py").is_file():
        return folder
    return write_script_directory(folder, versions_from=HISTORIES_DIR / name)


# -- a revision that fails, added after a history's head ------------------------------------
FAILING_REVISION = "9b7e5c3a1d20"
FAILING_FILE = f"{FAILING_REVISION}_require_default_tenant.py"
FAILING_ERROR = "no default tenant"
_FAILING_TEXT = '''"""tenants: every account belongs to the default tenant

Revision ID: {revision}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(60), nullable=False),
    )
    raise ValueError("{error}")


def downgrade():
    op.drop_table("tenants")
'''


def add_failing_revision(script_location: Path, down_revision: str) -> Path:
    """Add a revision after `down_revision` that creates a table, then raises ValueError."""
    path = script_location / "versions" / FAILING_FILE
    path.write_text(
        _FAILING_TEXT.format(revision=FAILING_REVISION, down=down_revision, error=FAILING_ERROR)
    )
    return path


# -- plain Alembic ----------------------------------------------------------------------------
def alembic_config(script_location: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return config


def alembic_upgrade(db: sa.Engine, script_location: Path, target: str) -> None:
    _run_alembic(db, script_location, command.upgrade, target)


def alembic_downgrade(db: sa.Engine, script_location: Path, target: str) -> None:
    _run_alembic(db, script_location, command.downgrade, target)


def _run_alembic(db: sa.Engine, script_location: Path, run: Any, target: str) -> None:
    config = alembic_config(script_location)
    with db.connect() as connection:
        config.attributes["connection"] = connection
        run(config, target)
        connection.commit()


def drop_version_table(db: sa.Engine) -> None:
    with db.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE {ALEMBIC_VERSION}")


# -- looking at a database ------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """A database's schema (pg_dump text) and the rows of its tables."""

    schema: str
    rows: dict[str, list[tuple[Any, ...]]]


def snapshot(url: str, *, exclude: tuple[str, ...] = PRODUCT_TABLES) -> Snapshot:
    """Schema and rows of the public schema, without the tables in `exclude`."""
    return Snapshot(schema=schema_dump(url, exclude=exclude), rows=table_rows(url, exclude=exclude))


def schema_dump(url: str, *, exclude: tuple[str, ...] = PRODUCT_TABLES) -> str:
    libpq_url = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    argv = ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", f"--dbname={libpq_url}"]
    for table in exclude:
        argv.append(f"--exclude-table=public.{table}")
    dump = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    # pg_dump 15.18 brackets the dump with \restrict <random key> / \unrestrict <key>
    return "\n".join(
        line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def table_rows(url: str, *, exclude: tuple[str, ...] = PRODUCT_TABLES) -> dict[str, list[Any]]:
    """table → its rows (sorted), without columns whose default is the clock."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            columns = connection.execute(sa.text(
                "SELECT c.table_name, c.column_name, c.column_default FROM "
                "information_schema.columns c JOIN information_schema.tables t "
                "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
                "ORDER BY c.table_name, c.ordinal_position"
            )).all()
            kept: dict[str, list[str]] = {}
            for table, column, default in columns:
                if table in exclude:
                    continue
                kept.setdefault(table, [])
                if default is None or not any(c in default.lower() for c in CLOCK_DEFAULTS):
                    kept[table].append(column)
            rows: dict[str, list[Any]] = {}
            for table, names in kept.items():
                selected = ", ".join(f'"{n}"' for n in names) or "1"
                fetched = connection.execute(sa.text(f'SELECT {selected} FROM "{table}"')).all()
                rows[table] = sorted((tuple(r) for r in fetched), key=repr)
            return rows
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())
    finally:
        engine.dispose()


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server (for the session's reference databases), then dropped."""
    name = f"ref_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
