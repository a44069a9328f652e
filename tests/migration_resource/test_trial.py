"""The trial run and the plan: what revisions that read the database really execute.

Real PostgreSQL. Each test writes a small history into a throwaway script directory (the
team-style env.py of localdev/history_env.py) and checks both what the trial captured in its
scratch database and that the live database is exactly as it was: relations, rows and the
transaction that last wrote each row; and that no scratch database is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from localdev.history_env import write_script_directory
from migration_resource.engine import MigrationEngine, MigrationFailed, MigrationRefused
from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings
from migration_resource.trial import TrialResult, trial_run
from tests.migration_resource.support import execute, relations, version_rows

HEADER = """import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def downgrade() -> None:
    pass


def upgrade() -> None:
"""

CREATE_ROLES = """    op.create_table("roles", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False))
    op.bulk_insert(sa.table("roles", sa.column("id", sa.Integer), sa.column("name", sa.Text)),
                   [{"id": 1, "name": "admin"}, {"id": 2, "name": "member"}])
"""

READ_ADMIN = """    conn = op.get_bind()
    admin = conn.execute(sa.text("SELECT id FROM roles WHERE name = :n"), {"n": "admin"}).fetchone()
    op.add_column("roles", sa.Column("is_admin", sa.Boolean, nullable=True))
    conn.execute(sa.text("UPDATE roles SET is_admin = (id = :a) WHERE is_admin IS NULL"),
                 {"a": admin[0]})
"""


def write_history(folder: Path, *bodies: str) -> list[str]:
    """One revision per body, linear; returns the ids (r1, r2, ...)."""
    write_script_directory(folder)
    ids = [f"r{index}" for index in range(1, len(bodies) + 1)]
    for index, body in enumerate(bodies):
        down = ids[index - 1] if index else None
        text = HEADER.format(revision=ids[index], down=down) + body
        (folder / "versions" / f"{ids[index]}_step.py").write_text(text)
    return ids


def fingerprint(db: sa.Engine) -> tuple[object, ...]:
    """Relations (but the audit trail's), version rows and every row of roles with the
    transaction that wrote it.

    A row's xmin changes with any committed update; the statistics counters would not do,
    as they count the updates of a rolled-back transaction too.
    """
    with db.connect() as conn:
        roles = (
            tuple(conn.exec_driver_sql("SELECT xmin::text, * FROM roles ORDER BY id").all())
            if conn.exec_driver_sql("SELECT to_regclass('public.roles')").scalar() else ()
        )
    ours = tuple(r for r in relations(db) if not r.startswith("migration_audit"))
    return ours, tuple(version_rows(db)), roles


def run_trial(db: sa.Engine, folder: Path, start: str, ids: list[str]) -> TrialResult:
    settings = EngineSettings(database_url=db.url, script_location=folder)
    return trial_run(db, lambda name: sa.create_engine(db.url.set(database=name),
                                                       poolclass=sa.NullPool),
                     settings, start=(start,), order=ids, target="head")


def scratch_databases(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT datname FROM pg_database WHERE starts_with(datname, 'migration_trial_')"
        ).scalars())


def applied_by_alembic(db: sa.Engine, folder: Path, target: str) -> None:
    config = alembic_config(folder)
    with db.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, target)
        conn.commit()


# psycopg2, the bundled driver; psycopg 3 where installed (an explicit postgresql+psycopg://):
# each renders the captured statements' parameters its own way (cursor.mogrify, ClientCursor).
@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_a_data_migration_that_reads_rows_is_captured_and_nothing_changes(
    database_url: str, tmp_path: Path, driver: str
) -> None:
    db = sa.create_engine(sa.make_url(database_url).set(drivername=f"postgresql+{driver}"),
                          poolclass=sa.NullPool)
    assert db.dialect.driver == driver
    try:
        # GIVEN a database at r1 (roles with two rows) and r2 reading a row to update the others
        ids = write_history(tmp_path / "h", CREATE_ROLES, READ_ADMIN)
        applied_by_alembic(db, tmp_path / "h", ids[0])
        before = fingerprint(db)
        # WHEN the trial runs r2
        result = run_trial(db, tmp_path / "h", ids[0], ids[1:])
        # THEN it saw the read, the DDL and the update with its parameter as a literal
        assert result.failure is None
        sql = result.sql("r2")
        assert "SELECT id FROM roles WHERE name = 'admin';" in sql
        assert "ALTER TABLE roles ADD COLUMN is_admin BOOLEAN;" in sql
        assert "UPDATE roles SET is_admin = (id = 1) WHERE is_admin IS NULL;" in sql
        # AND the live database is exactly as it was
        assert fingerprint(db) == before
    finally:
        db.dispose()


# Revision code that would change the live database if it ran there: a second connection of
# the revision's engine, the connection's own commit, COMMIT or ROLLBACK inside a string.
ESCAPES = {
    "engine-begin": (
        "    with op.get_bind().engine.begin() as other:\n"
        "        other.execute(sa.text(\"INSERT INTO roles VALUES (10, 'engine')\"))\n"),
    "connection-commit": (
        "    op.execute(\"INSERT INTO roles VALUES (11, 'committed')\")\n"
        "    op.get_bind().commit()\n"),
    "commit-in-a-string": (
        "    op.execute(\"UPDATE roles SET name = 'x' WHERE id = 2; COMMIT; \"\n"
        "               \"UPDATE roles SET name = 'y' WHERE id = 2\")\n"),
    "rollback-in-a-string": (
        "    op.execute(\"SELECT 1; ROLLBACK; INSERT INTO roles VALUES (12, 'after')\")\n"
        "    op.execute(\"UPDATE roles SET name = 'z' WHERE id = 2\")\n"),
}


@pytest.mark.parametrize("body", ESCAPES.values(), ids=ESCAPES.keys())
def test_status_dry_run_and_a_refused_deploy_change_nothing_whatever_the_revision_does(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path, body: str
) -> None:
    # GIVEN a database at r1 and a pending r2 that reads a row (so it runs in a trial), then
    # escapes its transaction, and a destructive r3 the production gate refuses
    ids = write_history(tmp_path / "h", CREATE_ROLES, body + READ_ADMIN,
                        '    op.execute("DELETE FROM roles")\n')
    applied_by_alembic(db, tmp_path / "h", ids[0])
    before = fingerprint(db)
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN an operator asks for the status with phases, a dry run, and a deploy
    status = engine.status(with_phases=True)
    preview = engine.dry_run()
    with pytest.raises(MigrationRefused, match=r"r[23]: (update_overwrites|delete_without_where)"):
        engine.migrate()
    # THEN the trial saw what r2 sends, and the live database is exactly as it was
    assert status.phases is not None
    assert preview.plan is not None
    assert [s["source"] for s in preview.plan] == ["captured", "rendered"]
    assert fingerprint(db) == before
    assert scratch_databases(db) == []


def test_commit_statements_and_autocommit_blocks_run_for_real_in_the_scratch_database(
    db: sa.Engine, tmp_path: Path
) -> None:
    body = (
        '    op.execute("COMMIT")\n'
        "    with op.get_context().autocommit_block():\n"
        '        op.create_index("ix_roles_name", "roles", ["name"],\n'
        "                        postgresql_concurrently=True)\n"
        '    op.execute("UPDATE public.roles SET name = upper(name)")\n'
    )
    ids = write_history(tmp_path / "h", CREATE_ROLES, READ_ADMIN, body)
    applied_by_alembic(db, tmp_path / "h", ids[0])
    before = fingerprint(db)
    result = run_trial(db, tmp_path / "h", ids[0], ids[1:])
    assert result.failure is None
    sql = result.sql("r3")
    assert "COMMIT;" in sql
    assert "CREATE INDEX CONCURRENTLY ix_roles_name ON roles (name);" in sql
    # the schema-qualified update ran against the scratch database's table, not the live one
    assert "UPDATE public.roles SET name = upper(name);" in sql
    assert fingerprint(db) == before
    assert "ix_roles_name:i" not in relations(db)
    assert scratch_databases(db) == []


def test_a_plan_waits_for_no_writer_of_a_live_table(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN an application transaction holding a row lock and an open write on roles
    ids = write_history(tmp_path / "h", CREATE_ROLES, READ_ADMIN,
                        '    op.create_index("ix_roles_name", "roles", ["name"])\n'
                        '    op.execute("UPDATE roles SET name = name WHERE id = 1")\n')
    applied_by_alembic(db, tmp_path / "h", ids[0])
    engine = make_engine(script_location=tmp_path / "h", lock_timeout_seconds=1)
    with db.connect() as app:
        app.exec_driver_sql("UPDATE roles SET name = 'held' WHERE id = 2")
        # WHEN a dry run previews revisions that index and update roles
        preview = engine.dry_run()
        # THEN it captured r2 without waiting for the writer (ALTER TABLE roles in r2 would
        # wait for it, and give up after the 1 s lock timeout, on the live table)
        assert preview.ok, preview.message
        assert preview.plan is not None
        assert [s["source"] for s in preview.plan] == ["captured", "rendered"]
        app.rollback()


def test_the_dry_run_says_which_sql_was_rendered_and_which_captured(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    ids = write_history(tmp_path / "h", CREATE_ROLES, READ_ADMIN,
                        '    op.add_column("roles", sa.Column("note", sa.Text))\n')
    engine = make_engine(script_location=tmp_path / "h")
    outcome = engine.dry_run()
    assert outcome.ok
    assert outcome.plan is not None
    assert [(s["revision"], s["source"]) for s in outcome.plan] == [
        ("r1", "rendered"), ("r2", "captured"), ("r3", "rendered"),
    ]
    assert outcome.plan[1]["file"] == "r2_step.py"
    assert outcome.sql is not None and list(outcome.sql) == ids
    assert "2 rendered offline, 1 captured in a scratch database" in " ".join(outcome.notes)
    assert relations(db) == []


def test_the_gate_refuses_a_captured_destructive_statement_before_anything_changes(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a data migration that reads a row, then deletes every row with a WHERE true
    wipe = READ_ADMIN + '    conn.execute(sa.text("DELETE FROM roles WHERE true"))\n'
    ids = write_history(tmp_path / "h", CREATE_ROLES, wipe)
    applied_by_alembic(db, tmp_path / "h", ids[0])
    before = fingerprint(db)
    engine = make_engine(script_location=tmp_path / "h", stage="production")
    # WHEN the deploy's early gate check and the migrate run
    status = engine.status()
    with pytest.raises(MigrationRefused, match="r2: delete_without_where"):
        engine.check_gate(status.classification)
    with pytest.raises(MigrationRefused, match="r2: delete_without_where"):
        engine.migrate()
    # THEN nothing changed
    assert fingerprint(db) == before


def test_a_revision_raising_in_the_trial_is_previewed_as_such_and_fails_cleanly(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    raising = READ_ADMIN + '    raise ValueError("no default tenant")\n'
    write_history(tmp_path / "h", CREATE_ROLES, raising,
                  '    op.add_column("roles", sa.Column("note", sa.Text))\n')
    engine = make_engine(script_location=tmp_path / "h")
    engine.migrate("r1")
    execute(db, "INSERT INTO roles VALUES (3, 'guest')")
    preview = engine.dry_run()
    assert preview.plan is not None
    assert [s["source"] for s in preview.plan] == ["not_previewed", "rendered"]
    assert "ValueError: no default tenant" in preview.plan[0]["note"]
    assert any("revision r2 raised in the trial run: ValueError" in n for n in preview.notes)
    with pytest.raises(MigrationFailed) as failure:
        engine.migrate()
    message = str(failure.value)
    assert message.startswith("pending_migrations: revision r2 (r2_step.py) failed after 0 of 2")
    assert "ValueError: no default tenant" in message
    assert "Nothing was committed before it in this run" in message
    assert "Traceback" not in message
    assert version_rows(db) == ["r1"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM roles").scalar() == 3


def test_the_baseline_search_of_a_dry_run_runs_no_revision_code_on_the_live_database(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN tables made without migration history, and a revision that writes through a
    # connection of its own (which no scratch schema's search_path reaches)
    ids = write_history(tmp_path / "h", CREATE_ROLES, (
        "    with op.get_bind().engine.begin() as other:\n"
        "        other.execute(sa.text(\"INSERT INTO roles \"\n"
        "                              \"SELECT max(id) + 1, 'engine' FROM roles\"))\n"))
    applied_by_alembic(db, tmp_path / "h", ids[1])
    execute(db, "DROP TABLE alembic_version")
    before = fingerprint(db)
    # WHEN a dry run looks for the verified baseline
    engine = make_engine(script_location=tmp_path / "h")
    with pytest.raises(MigrationRefused, match="the baseline check could not replay"):
        engine.dry_run(fix_history=True)
    # THEN the replay ran in a scratch database, where that connection found no roles table
    # (the baseline is unverifiable: refused, not guessed), and the live rows are as they were
    assert fingerprint(db) == before
    assert scratch_databases(db) == []


def test_a_trial_sends_nothing_that_acts_beyond_its_scratch_database(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN an application session, and a pending revision (read by a trial) that creates a
    # role, changes the role it runs as, ends other sessions (a pg_catalog read with a bound
    # parameter) and runs a DO block
    body = READ_ADMIN + (
        '    op.execute("CREATE ROLE reporting_trial NOLOGIN")\n'
        '    op.execute("ALTER ROLE CURRENT_USER SET work_mem = \'77MB\'")\n'
        '    op.get_bind().execute(sa.text("SELECT pg_terminate_backend(pid) "\n'
        '        "FROM pg_catalog.pg_stat_activity WHERE application_name = :name"),\n'
        '        {"name": "the_app"})\n'
        '    op.execute("DO $$ BEGIN PERFORM 1; END $$")\n')
    ids = write_history(tmp_path / "h", CREATE_ROLES, body)
    applied_by_alembic(db, tmp_path / "h", ids[0])
    app = sa.create_engine(db.url.update_query_dict({"application_name": "the_app"}),
                           poolclass=sa.NullPool)
    try:
        with app.connect() as live:
            live.exec_driver_sql("SELECT 1").all()
            # WHEN a dry run previews it
            preview = make_engine(script_location=tmp_path / "h").dry_run()
            # THEN the application's session lives on, and no role or setting changed
            assert live.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        app.dispose()
    with db.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting_trial'").scalar() == 0
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM pg_db_role_setting WHERE 'work_mem=77MB' = ANY(setconfig)"
        ).scalar() == 0
    # AND the plan shows each of them, marked as not executed, with why
    assert preview.plan is not None
    sql = preview.plan[0]["sql"]
    assert "-- not executed in the trial: it creates a role" in sql
    assert "-- not executed in the trial: it alters a role" in sql
    assert "-- not executed in the trial: it calls pg_terminate_backend()" in sql
    assert "-- not executed in the trial: it runs code the trial cannot see into (DO)" in sql
    assert scratch_databases(db) == []


def test_what_revision_code_sends_on_the_driver_itself_is_kept_from_the_server_and_shown(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a pending revision (read by a trial) that uses the driver's own cursor to create
    # a role and to delete a row, past SQLAlchemy's events
    body = READ_ADMIN + (
        "    cursor = op.get_bind().connection.cursor()\n"
        "    cursor.execute('CREATE ROLE reporting_raw NOLOGIN')\n"
        "    cursor.execute('DELETE FROM roles WHERE id = %s', (2,))\n")
    ids = write_history(tmp_path / "h", CREATE_ROLES, body)
    applied_by_alembic(db, tmp_path / "h", ids[0])
    # WHEN a dry run previews it
    preview = make_engine(script_location=tmp_path / "h", stage="production").dry_run()
    # THEN the role was not created on the server, and the plan shows both statements, the
    # DELETE with its parameter, judged by the gate
    with db.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting_raw'").scalar() == 0
    assert preview.plan is not None
    sql = preview.plan[0]["sql"]
    assert "-- not executed in the trial: it creates a role" in sql
    assert "DELETE FROM roles WHERE id = 2;" in sql
    assert ("r2", "delete_rows") in {(f["revision"], f["rule"]) for f in preview.findings}
    assert scratch_databases(db) == []
