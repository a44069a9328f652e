"""The change gate at execution: what a revision sends for the live rows is judged before it
is sent. Real PostgreSQL; the histories are written by the tests (test_trial's helpers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource.engine import MigrationEngine, MigrationFailed
from migration_resource.gate import StatementJudge
from migration_resource.statement_guard import _NEVER_FLAGGED, StatementGuard, StatementRefused
from tests.migration_resource.support import execute, version_rows
from tests.migration_resource.test_trial import (
    CREATE_ROLES,
    applied_by_alembic,
    fingerprint,
    write_history,
)

# Sends a TRUNCATE only when the live table holds a 'guest' row: the scratch database, which
# holds only the history's own seed rows (admin, member), never shows it to the plan.
WIPE_IF_GUESTS = """    conn = op.get_bind()
    guests = conn.execute(sa.text("SELECT id FROM roles WHERE name = 'guest'")).fetchall()
    op.add_column("roles", sa.Column("note", sa.Text, nullable=True))
    if guests:
        conn.execute(sa.text("TRUNCATE roles"))
"""


def at_r1_with_a_guest(db: sa.Engine, folder: Path) -> None:
    """The history r1 (roles) → r2 (WIPE_IF_GUESTS) in `folder`, the database at r1 with a
    row the history's own seeds do not insert."""
    ids = write_history(folder, CREATE_ROLES, WIPE_IF_GUESTS)
    applied_by_alembic(db, folder, ids[0])
    execute(db, "INSERT INTO roles VALUES (3, 'guest')")


def test_a_destructive_statement_the_plan_could_not_see_is_refused_before_it_is_sent(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN live rows the scratch database does not have, and a revision that reads them
    at_r1_with_a_guest(db, tmp_path / "h")
    before = fingerprint(db)
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN the dry run previews it (nothing destructive in the scratch database) and it deploys
    preview = engine.dry_run()
    assert preview.ok and not preview.findings, preview.findings
    with pytest.raises(MigrationFailed) as failure:
        engine.migrate()
    # THEN the TRUNCATE never reached the server: the revision failed, rolled back
    message = str(failure.value)
    assert "the change gate refused truncate before it was sent" in message
    assert "`# migration-approve: truncate roles -- <why>`" in message
    assert "The statement: TRUNCATE roles" in message
    assert "its transaction was rolled back" in message
    assert version_rows(db) == ["r1"]
    assert fingerprint(db) == before


def test_the_approval_the_plan_honours_lets_the_statement_through(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN the same revision, deployed with AllowDestructive
    at_r1_with_a_guest(db, tmp_path / "h")
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN it deploys
    outcome = engine.migrate(allow_destructive=True)
    # THEN it ran as written
    assert outcome.complete and version_rows(db) == ["r2"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM roles").scalar() == 0


NEVER_FLAGGED = [
    "INSERT INTO roles VALUES (1, 'admin')",
    "insert into roles (name) select name from legacy_roles",
    "UPDATE alembic_version SET version_num='r2' WHERE alembic_version.version_num = 'r1'",
    "DELETE FROM alembic_version WHERE alembic_version.version_num = 'r1'",
]
PARSED = [
    "SELECT 1; DROP TABLE roles",  # two statements: never skipped
    "INSERT INTO roles VALUES (1, 'a;b')",  # a `;` anywhere but the end: parsed
    "INSERT INTO roles VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = 'x'",
    "SELECT * INTO roles_copy FROM roles",  # creates a table the rules must know of
    "SELECT id FROM roles WHERE name = 'admin'",  # a SELECT may call an opaque function
    "SELECT purge_roles()",
    "WITH gone AS (DELETE FROM roles RETURNING id) SELECT count(*) FROM gone",
    "UPDATE roles SET name = 'x'",
]


@pytest.mark.parametrize("statement", NEVER_FLAGGED + PARSED)
def test_what_the_guard_skips_unparsed_is_what_the_gate_never_flags(statement: str) -> None:
    # GIVEN the guard in production and the gate's own judge, each on an existing table
    guard = StatementGuard(stage="production", allow_destructive=False, approvals={})
    skipped = _NEVER_FLAGGED.match(statement) is not None and ";" not in statement
    # THEN a statement skipped without parsing is one the gate finds nothing in, and the
    # statements that might hide something are parsed
    assert skipped == (statement in NEVER_FLAGGED)
    if skipped:
        assert StatementJudge().findings("r1", statement) == []
    try:
        guard.check("r1", statement)
    except StatementRefused:
        assert not skipped


def test_a_statement_sent_on_a_connection_the_revision_opened_is_judged_too(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a revision that, finding more rows than the scratch database holds, deletes them
    # all through a connection of its own
    ids = write_history(tmp_path / "h", CREATE_ROLES, (
        "    conn = op.get_bind()\n"
        "    if conn.execute(sa.text('SELECT count(*) FROM roles')).scalar() > 2:\n"
        "        with conn.engine.begin() as other:\n"
        "            other.execute(sa.text('DELETE FROM roles'))\n"))
    applied_by_alembic(db, tmp_path / "h", ids[0])
    execute(db, "INSERT INTO roles VALUES (3, 'guest')")
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN it deploys in production (its preview in the scratch database deleted nothing)
    assert engine.dry_run().ok
    with pytest.raises(MigrationFailed, match="the change gate refused delete_without_where"):
        engine.migrate()
    # THEN the DELETE never reached the server
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM roles").scalar() == 3
    assert version_rows(db) == ["r1"]


# Revision code that reaches the driver under SQLAlchemy, where SQLAlchemy's events are blind.
RAW = {
    "the driver's cursor": (
        "    conn = op.get_bind()\n"
        "    if conn.execute(sa.text('SELECT count(*) FROM roles')).scalar() > 2:\n"
        "        conn.connection.cursor().execute('DELETE FROM roles WHERE id > %s', (0,))\n"),
    "callproc on a connection of its own": (
        "    conn = op.get_bind()\n"
        "    if conn.execute(sa.text('SELECT count(*) FROM roles')).scalar() > 2:\n"
        "        conn.execute(sa.text('CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS '\n"
        "                             '$$ DELETE FROM roles $$'))\n"
        "        with conn.engine.connect() as other:\n"
        "            other.connection.cursor().callproc('wipe')\n"
        "            other.connection.dbapi_connection.commit()\n"),
}


@pytest.mark.parametrize("body", RAW.values(), ids=RAW.keys())
def test_what_revision_code_sends_on_the_driver_itself_is_judged_too(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path, body: str,
) -> None:
    # GIVEN more rows than the scratch database holds, and a revision that then deletes
    # through the driver's own cursor
    ids = write_history(tmp_path / "h", CREATE_ROLES, body)
    applied_by_alembic(db, tmp_path / "h", ids[0])
    execute(db, "INSERT INTO roles VALUES (3, 'guest')")
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN it deploys in production, THEN the gate refuses the statement before it is sent
    with pytest.raises(MigrationFailed, match="the change gate refused"):
        engine.migrate()
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM roles").scalar() == 3
    assert version_rows(db) == ["r1"]
