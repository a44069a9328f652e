"""Finding the revision an unversioned database matches, by replay into a scratch schema.

Every test builds "tables without migration history" for real: the migrations bring the
database to a revision, then alembic_version is dropped. After every test no scratch schema
may be left (see the autouse fixture).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from localdev.synthetic_history import ENV_PY, REVISION_PY
from migration_resource import baseline
from migration_resource.baseline import BaselineError, drop_scratch_schemas, find_baseline
from migration_resource.outcomes import MigrationRefused
from migration_resource.revisions import RevisionCatalogue, alembic_config
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    ADD_EMAIL_DOMAIN,
    BACKFILL_DISPLAY_NAME,
    BACKFILL_EMAIL_DOMAIN,
    CHECK_EMAIL_DOMAIN,
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    HEAD,
    INDEX_TASKS,
    VALIDATE_EMAIL_DOMAIN,
)
from tests.migration_resource.support import (
    SAMPLE_SCRIPTS,
    execute,
    linear_history,
    relations,
)

Synthetic = Callable[..., tuple[Path, list[str]]]
ORDER = RevisionCatalogue.load(SAMPLE_SCRIPTS).ordered


def tables_at(
    db: sa.Engine, script_location: Path, revision: str, *, schema: str | None = None
) -> None:
    """Migrate to `revision`, then forget the history: tables without alembic_version."""
    with db.connect() as conn:
        if schema is not None:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            conn.exec_driver_sql(f"SET search_path TO {schema}")
            conn.commit()
        config = alembic_config(script_location)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.commit()


def scratch_schemas(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'migration\\_scratch%' "
                    "ORDER BY 1"
                )
            ).scalars()
        )


def fingerprint(db: sa.Engine, table: str = "users") -> tuple[Any, ...]:
    """Relations, columns, constraints and `table`'s rows in the live schema; alembic_version."""
    with db.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            )
        ).all()
        constraints = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = 'public' ORDER BY 1, 2"
            )
        ).all()
        rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1")).all()
        version_table = conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar()
    return tuple(relations(db)), tuple(columns), tuple(constraints), tuple(rows), version_table


def write_history(folder: Path, *upgrades: str) -> list[str]:
    """A linear history with the synthetic histories' env.py, one revision per upgrade body."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY)
    (folder / "script.py.mako").write_text("")
    ids = [f"rev{index:02d}" for index in range(1, len(upgrades) + 1)]
    for index, (revision, body) in enumerate(zip(ids, upgrades, strict=True), start=1):
        code = "import sqlalchemy as sa\n" + textwrap.dedent(body).strip()
        (folder / "versions" / f"{revision}.py").write_text(REVISION_PY.format(
            index=index, revision=revision, down=ids[index - 2] if index > 1 else None,
            upgrade=textwrap.indent(code, "    "), downgrade="    pass",
        ))
    return ids


# Nine revisions of the kinds real teams write: named constraints, an enum that gains a label,
# extensions, a standalone sequence, a view, a data-only revision.
TEAM_HISTORY = (
    """
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("email", sa.String(200), nullable=False))
    op.create_unique_constraint("uq_users_email", "users", ["email"])
    """,
    """
    op.create_table("projects", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False),
                    sa.Column("owner_id", sa.Integer, sa.ForeignKey(
                        "users.id", name="fk_projects_owner_id_users"), nullable=False))
    op.create_index("ix_projects_owner_id", "projects", ["owner_id"])
    """,
    # The live database has them once these tables exist: a replayed CREATE EXTENSION then
    # leaves them where they are (a plain one would fail on "already exists")
    """
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION citext")
    """,
    # The extensions' objects are used unqualified, as SQLAlchemy renders them
    """
    from sqlalchemy.dialects import postgresql

    op.create_table("tasks", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer,
                              sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
                    sa.Column("title", sa.Text, nullable=False),
                    sa.Column("status", sa.Enum("todo", "done", name="task_status"),
                              nullable=False, server_default="todo"),
                    sa.Column("label", postgresql.CITEXT))
    op.create_index("ix_tasks_title_trgm", "tasks", ["title"], postgresql_using="gin",
                    postgresql_ops={"title": "gin_trgm_ops"})
    """,
    """
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE task_status ADD VALUE 'blocked'")
    """,
    'op.execute("CREATE SEQUENCE invoice_number_seq AS bigint START 1000")',
    """
    op.execute("CREATE VIEW open_tasks AS SELECT id, title FROM tasks WHERE status <> 'done'")
    """,
    'op.execute("UPDATE tasks SET title = trim(title)")',
    'op.add_column("tasks", sa.Column("due_on", sa.Date))',
)


@pytest.fixture
def team(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "team"
    return folder, write_history(folder, *TEAM_HISTORY)


def extensions(db: sa.Engine) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(sa.text("SELECT extname FROM pg_extension")).scalars())


@pytest.fixture(autouse=True)
def no_scratch_schema_left(request: pytest.FixtureRequest) -> Iterator[None]:
    # Only where a test has a database: the statement guard's tests need none.
    db = request.getfixturevalue("db") if "db" in request.fixturenames else None
    yield
    if db is not None:
        assert scratch_schemas(db) == []


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision", "matches"),
    [
        (CREATE_TABLES, (CREATE_TABLES,)),
        # The backfill changes no schema: both match, and the earliest is the one to stamp so
        # that the backfill still runs.
        (ADD_DISPLAY_NAME, (ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME)),
        (BACKFILL_DISPLAY_NAME, (ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME)),
        (INDEX_TASKS, (INDEX_TASKS,)),
        (CHECK_TASK_STATUS, (CHECK_TASK_STATUS,)),
        # The batched backfill leaves no trace (its progress table goes with its last row);
        # a CHECK validated is the same schema as the CHECK added NOT VALID.
        (BACKFILL_EMAIL_DOMAIN, (ADD_EMAIL_DOMAIN, BACKFILL_EMAIL_DOMAIN)),
        (VALIDATE_EMAIL_DOMAIN, (CHECK_EMAIL_DOMAIN, VALIDATE_EMAIL_DOMAIN)),
        (HEAD, (HEAD,)),
    ],
)
def test_tables_at_a_revision_match_the_earliest_revision_with_that_schema(
    db: sa.Engine, revision: str, matches: tuple[str, ...]
) -> None:
    # GIVEN tables made by the migrations up to `revision`, without alembic_version
    tables_at(db, SAMPLE_SCRIPTS, revision)
    # WHEN the baseline is looked for
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    # THEN the earliest revision with the same schema is the one to stamp
    assert result.matched == matches[0]
    assert result.matches == matches
    assert result.nearest is None
    assert result.differences == ()
    # replaying stopped at the first revision after the matches
    assert result.revisions_compared == min(ORDER.index(matches[-1]) + 2, len(ORDER))
    assert result.seconds > 0


def test_summary_names_the_match_and_the_data_only_revisions(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, ADD_DISPLAY_NAME)
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.summary() == (
        f"schema matches revision {ADD_DISPLAY_NAME} "
        f"(also {BACKFILL_DISPLAY_NAME}: they change no schema)"
    )


def test_constraint_and_index_names_are_differences(db: sa.Engine) -> None:
    # GIVEN a database at head whose objects carry other names (as one made by hand would)
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(
        db,
        "ALTER INDEX ix_tasks_project_id_status RENAME TO tasks_board",
        "ALTER TABLE tasks RENAME CONSTRAINT fk_tasks_project_id_projects TO tasks_project_fk",
        "ALTER TABLE users RENAME CONSTRAINT uq_users_email TO users_email_key",
        "ALTER TABLE users RENAME CONSTRAINT pk_users TO users_pkey",
    )
    # WHEN the baseline is looked for
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    # THEN the structure is found, but a later drop_constraint('uq_users_email') would not
    # find it: each name is a difference of its own, against head
    assert result.matched is None
    assert result.nearest == HEAD
    assert result.differences == (
        "foreign key on tasks(project_id → projects(id) ON DELETE CASCADE) is named "
        f"tasks_project_fk in the database, fk_tasks_project_id_projects at revision {HEAD}",
        "index on tasks(project_id, status) is named tasks_board in the database, "
        f"ix_tasks_project_id_status at revision {HEAD}",
        "primary key on users(id) is named users_pkey in the database, pk_users at revision "
        f"{HEAD}",
        "unique constraint on users(email) is named users_email_key in the database, "
        f"uq_users_email at revision {HEAD}",
    )
    assert result.difference_weight == 4
    assert result.summary() == (
        f"schema matches no revision; nearest {HEAD}: foreign key on tasks(project_id → "
        "projects(id) ON DELETE CASCADE) is named tasks_project_fk in the database, "
        "fk_tasks_project_id_projects… (+3 more)"
    )


def test_product_tables_are_left_out(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "CREATE TABLE migration_audit (id serial PRIMARY KEY, note text)")
    assert find_baseline(db, SAMPLE_SCRIPTS, ORDER).matched == HEAD


# -- differences -----------------------------------------------------------------------------


def test_an_extra_column_matches_no_revision_and_is_named(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "ALTER TABLE users ADD COLUMN nickname text")
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.matched is None
    assert result.matches == ()
    assert result.nearest == HEAD
    assert result.differences == (
        f"column users.nickname exists in the database but not at revision {HEAD}",
    )
    assert result.difference_count == 1
    # nothing matched, so every revision was replayed
    assert result.revisions_compared == len(ORDER)
    assert result.summary() == (
        f"schema matches no revision; nearest {HEAD}: column users.nickname exists in the "
        "database only"
    )


def test_a_missing_index_is_named_with_its_columns(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "DROP INDEX ix_tasks_assignee_id")
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.nearest == HEAD
    assert result.differences == (
        "index ix_tasks_assignee_id (tasks: assignee_id) is missing from the database",
    )


def test_changed_type_nullability_and_default_are_named(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(
        db,
        "ALTER TABLE tasks ALTER COLUMN title TYPE varchar(200)",
        "ALTER TABLE users ALTER COLUMN display_name SET NOT NULL",
        "ALTER TABLE tasks ALTER COLUMN status SET DEFAULT 'done'",
    )
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.nearest == HEAD
    assert set(result.differences) == {
        f"column tasks.title: type VARCHAR(200) in the database, VARCHAR(500) at revision {HEAD}",
        f"column users.display_name: NOT NULL in the database, nullable at revision {HEAD}",
        "column tasks.status: default 'done'::character varying in the database, "
        f"'todo'::character varying at revision {HEAD}",
    }
    assert result.summary().endswith("(+2 more)")


def test_a_foreign_key_with_another_on_delete_is_a_difference(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(
        db,
        "ALTER TABLE tasks DROP CONSTRAINT fk_tasks_project_id_projects",
        "ALTER TABLE tasks ADD CONSTRAINT tasks_project_fk FOREIGN KEY (project_id) "
        "REFERENCES projects (id)",
    )
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.differences == (
        "foreign key tasks_project_fk (tasks: project_id → projects(id)) exists in the database "
        f"but not at revision {HEAD}",
        "foreign key fk_tasks_project_id_projects (tasks: project_id → projects(id) ON DELETE "
        "CASCADE) is missing from the database",
    )


def test_a_different_check_constraint_is_a_difference(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(
        db,
        "ALTER TABLE tasks DROP CONSTRAINT ck_tasks_status_valid",
        "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_status_valid "
        "CHECK (status IN ('todo', 'done'))",
    )
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.matched is None
    assert any(line.startswith("check constraint ck_tasks_status_valid (tasks: status")
               for line in result.differences)


def test_long_lists_of_differences_are_summarised(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, *(f"ALTER TABLE users ADD COLUMN extra_{i:02d} integer" for i in range(25)))
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.difference_count == 25
    assert len(result.differences) == 21
    assert result.differences[-1] == "... and 5 more"
    # one line, the first differences while they fit a CloudFormation reason, then the rest
    assert result.summary() == (
        f"schema matches no revision; nearest {HEAD}: column users.extra_00 exists in the "
        "database only; column users.extra_01 exists in the database only (+23 more)"
    )


def test_a_refusal_names_the_first_three_differences_then_how_many_more(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, *(f"ALTER TABLE users ADD COLUMN {name} integer" for name in "abcd"))
    summary = find_baseline(db, SAMPLE_SCRIPTS, ORDER).summary()
    # one line, short enough for a CloudFormation reason, the first difference first
    assert summary == (
        f"schema matches no revision; nearest {HEAD}: column users.a exists in the database "
        "only; column users.b exists in the database only; column users.c exists in the "
        "database only (+1 more)"
    )
    assert len(summary) <= baseline.SUMMARY_LIMIT


def test_an_extra_table_is_a_difference_unless_ignored(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "CREATE TABLE legacy_reports (id integer PRIMARY KEY, body text)")

    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.matched is None
    assert result.differences == (
        f"table legacy_reports exists in the database but not at revision {HEAD}",
    )

    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER, ignored_tables=["legacy_reports"])
    assert result.matched == HEAD
    assert result.ignored_tables == ("legacy_reports",)
    assert result.summary() == (
        f"schema matches revision {HEAD}; tables left out of the comparison: legacy_reports"
    )


# -- the live database is left alone -------------------------------------------------------------


def test_the_live_database_is_not_modified(db: sa.Engine) -> None:
    # GIVEN users whose display_name the backfill revision would fill in
    tables_at(db, SAMPLE_SCRIPTS, ADD_DISPLAY_NAME)
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada'), "
                "('b@example.com', '  ')")
    before = fingerprint(db)
    # WHEN the backfill is replayed in the scratch schema
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    # THEN the live rows, tables and constraints are as they were, still without history
    assert BACKFILL_DISPLAY_NAME in result.matches
    assert fingerprint(db) == before
    assert before[-1] is None  # no alembic_version
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(display_name) FROM users")).scalar() == 0


def test_a_failing_revision_raises_and_leaves_no_scratch_schema(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN tables at revision 1 of a history whose revision 3 fails
    folder, ids = synthetic(5, fail_at=3)
    tables_at(db, folder, ids[0])
    # WHEN the baseline is looked for
    with pytest.raises(BaselineError) as raised:
        find_baseline(db, folder, ids)
    # THEN the failing revision is named, with what was compared before it
    assert raised.value.revision == ids[2]
    assert raised.value.replayed == (ids[0], ids[1])
    assert str(raised.value).startswith(
        f"replaying revision {ids[2]} into a scratch schema failed, so the baseline cannot be "
        "verified: (psycopg2.errors.DivisionByZero) division by zero"
    )
    # AND the replay's inserts landed in the scratch schema, never in the live table
    with db.connect() as conn:
        assert list(conn.execute(sa.text("SELECT revision FROM applied_log")).scalars()) == [
            ids[0]
        ]
    # (no scratch schema: checked by the autouse fixture)


def test_a_failing_comparison_leaves_no_scratch_schema(
    db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    reflect = baseline._reflect
    calls = iter(range(100))

    def failing_reflect(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 2:  # the live schema, revision 1, then revision 2 fails
            raise RuntimeError("reflection broke")
        return reflect(*args, **kwargs)

    monkeypatch.setattr(baseline, "_reflect", failing_reflect)
    with pytest.raises(BaselineError, match=rf"comparing the schema after revision "
                                            rf"{ADD_DISPLAY_NAME} failed.*reflection broke"):
        find_baseline(db, SAMPLE_SCRIPTS, ORDER)


def test_a_folder_env_py_that_would_hide_the_revisions_does_not_matter(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN a folder whose env.py does not pass on_version_apply on to Alembic (the replay
    # sees each revision through that callback)
    folder, ids = synthetic(3)
    env = folder / "env.py"
    env.write_text(env.read_text().replace("on_version_apply=callbacks", ""))
    tables_at(db, folder, ids[-1])
    # WHEN the baseline is searched THEN every revision is seen: the engine replays through
    # its own environment, never the folder's env.py
    result = find_baseline(db, folder, ids)
    assert result.matched in ids
    assert result.revisions_compared >= 1


# -- longer histories and other schemas ----------------------------------------------------------


def test_a_long_data_only_history_matches_from_its_first_revision(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    folder, ids = synthetic(30)
    tables_at(db, folder, ids[-1])
    result = find_baseline(db, folder, ids)
    assert result.matched == ids[0]
    assert result.matches == tuple(ids)
    assert result.summary() == (
        f"schema matches revision {ids[0]} (also {ids[1]}, {ids[2]}, {ids[3]} and 26 more: "
        "they change no schema)"
    )


def test_a_schema_matching_nothing_replays_the_whole_history(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    folder, ids = synthetic(30)
    tables_at(db, folder, ids[-1])
    execute(db, "ALTER TABLE items ADD COLUMN price numeric(10, 2)")
    result = find_baseline(db, folder, ids)
    assert result.matched is None
    assert result.revisions_compared == 30
    # on a tie the earliest revision is the nearest
    assert result.nearest == ids[0]
    assert result.differences == (
        f"column items.price exists in the database but not at revision {ids[0]}",
    )


def test_a_revision_with_an_autocommit_block_is_replayed(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    # Such a revision commits mid-way (as CREATE INDEX CONCURRENTLY must); the scratch
    # schema's search_path is a session setting, so it still applies after that commit.
    folder, ids = synthetic(3, non_transactional_at=2)
    tables_at(db, folder, ids[-1])
    result = find_baseline(db, folder, ids)
    assert result.matches == tuple(ids)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM applied_log")).scalar() == 3


def test_another_schema_is_compared_without_its_qualification(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN a serial column, whose default names a sequence qualified by its schema
    folder, ids = synthetic(2)
    tables_at(db, folder, ids[0], schema="app")
    result = find_baseline(db, folder, ids, schema="app")
    assert result.matches == (ids[0], ids[1])


def test_drop_scratch_schemas_removes_leftovers_of_a_killed_replay(db: sa.Engine) -> None:
    execute(db, "CREATE SCHEMA migration_scratch_0badf00d",
            "CREATE TABLE migration_scratch_0badf00d.users (id integer)")
    assert drop_scratch_schemas(db) == ("migration_scratch_0badf00d",)
    assert scratch_schemas(db) == []
    assert drop_scratch_schemas(db) == ()


def test_no_candidates_gives_no_answer(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    result = find_baseline(db, SAMPLE_SCRIPTS, ())
    assert (result.matched, result.nearest, result.revisions_compared) == (None, None, 0)
    assert result.summary() == "schema matches no revision: there were no revisions to compare"


def test_the_sample_history_is_in_the_expected_order() -> None:
    # The parametrised expectations above rely on this order.
    assert ORDER[:5] == (CREATE_TABLES, ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME, INDEX_TASKS,
                         CHECK_TASK_STATUS)
    assert ORDER[-1] == HEAD



# -- what later revisions depend on: names, enums, sequences, views, extensions ---------------


@pytest.mark.parametrize(
    ("position", "matching", "schema"),
    [
        (3, (3,), "public"),  # the extensions
        (5, (5,), "public"),  # the enum's new label
        (6, (6,), "public"),  # the sequence
        (7, (7, 8), "public"),  # the view; revision 8 changes data only
        (9, (9,), "public"),
        # elsewhere than public: every name the reflection reads comes without "app."
        (9, (9,), "app"),
    ],
)
def test_each_revision_of_a_team_history_is_matched(
    db: sa.Engine, team: tuple[Path, list[str]], position: int, matching: tuple[int, ...],
    schema: str,
) -> None:
    # GIVEN tables made by a team's history up to `position`, without alembic_version
    folder, ids = team
    tables_at(db, folder, ids[position - 1], schema=None if schema == "public" else schema)
    # WHEN the baseline is looked for
    result = find_baseline(db, folder, ids, schema=schema)
    # THEN the revision is found: the extensions the database has are the ones the history
    # creates, whichever schema they are in, and their types and operator classes are found
    # although the replay's path is the scratch schema alone
    assert result.matches == tuple(ids[p - 1] for p in matching), result.summary()


def test_nearest_weighs_a_whole_table_as_all_it_holds(
    db: sa.Engine, team: tuple[Path, list[str]]
) -> None:
    # GIVEN tables at revision 2 of 9 (which creates projects), plus one column of a team's own
    folder, ids = team
    tables_at(db, folder, ids[1])
    execute(db, "ALTER TABLE projects ADD COLUMN archived boolean")
    # WHEN the baseline is looked for
    result = find_baseline(db, folder, ids)
    # THEN revision 2 is the nearest: at revision 1 "table projects exists" is one line too,
    # but it stands for the table's three columns, key, foreign key and index
    assert result.matched is None
    assert result.revisions_compared == 9
    assert result.nearest == ids[1]
    assert result.differences == (
        f"column projects.archived exists in the database but not at revision {ids[1]}",
    )
    assert (result.difference_count, result.difference_weight) == (1, 1)


def test_a_missing_table_weighs_the_same_at_every_revision(db: sa.Engine) -> None:
    # GIVEN head without tasks, a table that grows along the history (an index, a check)
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "DROP TABLE tasks")
    # THEN head is nearest, not an early revision where tasks held less
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.nearest == HEAD
    assert result.differences == ("table tasks is missing from the database",)


def test_enum_labels_are_compared_in_their_order(
    db: sa.Engine, team: tuple[Path, list[str]]
) -> None:
    # GIVEN revision 6's schema made by hand, with the enum's labels in another order
    folder, ids = team
    tables_at(db, folder, ids[3])
    execute(
        db,
        "ALTER TYPE task_status ADD VALUE 'blocked' BEFORE 'done'",
        "CREATE SEQUENCE invoice_number_seq AS bigint START 1000",
    )
    result = find_baseline(db, folder, ids)
    # THEN it matches no revision: a later ADD VALUE ... AFTER 'done' would land elsewhere
    assert result.nearest == ids[5]
    assert result.differences == (
        "enum type task_status: labels 'todo', 'blocked', 'done' in the database, 'todo', "
        f"'done', 'blocked' at revision {ids[5]}",
    )


def test_standalone_sequences_are_compared_and_owned_ones_add_no_noise(
    db: sa.Engine, team: tuple[Path, list[str]]
) -> None:
    folder, ids = team
    tables_at(db, folder, ids[-1])
    execute(
        db,
        "ALTER SEQUENCE invoice_number_seq START WITH 1",
        "CREATE SEQUENCE legacy_seq",
        # its serial column's sequence goes with the table: no line of its own
        "CREATE TABLE legacy_notes (id serial PRIMARY KEY, body text)",
    )
    result = find_baseline(db, folder, ids)
    assert result.nearest == ids[-1]
    assert result.differences == (
        f"sequence invoice_number_seq: bigint in the database, bigint start 1000 at revision "
        f"{ids[-1]}",
        f"sequence legacy_seq exists in the database but not at revision {ids[-1]}",
        f"table legacy_notes exists in the database but not at revision {ids[-1]}",
    )


def test_views_are_compared_by_definition(db: sa.Engine, team: tuple[Path, list[str]]) -> None:
    folder, ids = team
    tables_at(db, folder, ids[-1])
    execute(
        db,
        "CREATE OR REPLACE VIEW open_tasks AS SELECT id, title FROM tasks "
        "WHERE status <> 'blocked'",
        "CREATE MATERIALIZED VIEW task_counts AS SELECT count(*) AS n FROM tasks",
    )
    result = find_baseline(db, folder, ids)
    assert result.nearest == ids[-1]
    assert result.differences == (
        "view open_tasks: defined as \"…(tasks.status <> 'blocked'::task_status);\" in the "
        f"database, \"…(tasks.status <> 'done'::task_status);\" at revision {ids[-1]}",
        f"materialized view task_counts exists in the database but not at revision {ids[-1]}",
    )


def test_extensions_are_compared_by_name_across_the_database(
    db: sa.Engine, team: tuple[Path, list[str]]
) -> None:
    # GIVEN head, without the extension a revision creates and with one no revision creates
    folder, ids = team
    tables_at(db, folder, ids[-1])
    execute(db, "DROP EXTENSION pg_trgm CASCADE", "CREATE EXTENSION hstore")
    result = find_baseline(db, folder, ids)
    assert result.nearest == ids[-1]
    assert result.differences == (
        f"extension hstore exists in the database but not at revision {ids[-1]}",
        "extension pg_trgm is missing from the database",
        # the index using its operator class went with it
        "index ix_tasks_title_trgm (tasks: USING gin: title) is missing from the database",
    )
    # AND the replay's own pg_trgm went with the scratch schema
    assert extensions(db) == {"citext", "hstore", "plpgsql"}


# -- the replay never reaches the live tables ---------------------------------------------------

LIVE_SCHEMA_HISTORY = (
    """
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text), schema="public")
    """,
    # Alembic renders these ALTER statements itself, with the schema as given
    """
    op.add_column("items", sa.Column("price", sa.Integer), schema="public")
    op.alter_column("items", "name", nullable=False, schema="public")
    op.create_index("ix_items_name", "items", ["name"], schema="public")
    items = sa.Table("items", sa.MetaData(), sa.Column("name", sa.Text), schema="public")
    op.bulk_insert(items, [{"name": "seed"}])
    """,
    """op.execute("UPDATE public.items SET name = 'replayed'")""",
)


@pytest.fixture
def live_schema_history(tmp_path: Path, db: sa.Engine) -> tuple[Path, list[str]]:
    """Tables at the last revision of a history naming public, with rows of the team's own."""
    folder = tmp_path / "live_schema"
    ids = write_history(folder, *LIVE_SCHEMA_HISTORY)
    tables_at(db, folder, ids[-1])
    execute(db, "INSERT INTO items (name, price) VALUES ('live', 10), ('also live', 20)")
    return folder, ids


def test_constructs_naming_the_live_schema_are_replayed_into_the_scratch_schema(
    db: sa.Engine, live_schema_history: tuple[Path, list[str]]
) -> None:
    folder, ids = live_schema_history
    before = fingerprint(db, "items")
    # WHEN revisions that say schema="public" are replayed
    result = find_baseline(db, folder, ids[:2])
    # THEN they built the scratch schema (so the schema at revision 2 matches) and left the
    # live table, its rows and its history as they were
    assert result.matches == (ids[1],)
    assert fingerprint(db, "items") == before


def test_raw_sql_naming_the_live_schema_stops_the_replay(
    db: sa.Engine, live_schema_history: tuple[Path, list[str]]
) -> None:
    folder, ids = live_schema_history
    before = fingerprint(db, "items")
    # WHEN a revision's own SQL names public.items
    with pytest.raises(BaselineError) as raised:
        find_baseline(db, folder, ids)
    # THEN it never ran: the baseline is unverifiable rather than the live rows rewritten
    assert str(raised.value) == (
        f"revision {ids[2]} names the live schema public explicitly (UPDATE public.items SET "
        "name = 'replayed'), so the replay stopped rather than touch live tables; the baseline "
        "cannot be verified"
    )
    assert (raised.value.revision, raised.value.replayed) == (ids[2], (ids[0], ids[1]))
    assert fingerprint(db, "items") == before


def guard() -> baseline._Guard:
    """As when the live database has pg_trgm and citext in public."""
    return baseline._Guard(
        live_schema="public", scratch="migration_scratch_0000",
        installed_extensions=frozenset({"pg_trgm", "citext"}),
        extension_objects=baseline._ExtensionObjects(
            types={"citext": "public"}, functions={"similarity": "public"},
            opclasses={"gin_trgm_ops": "public"},
        ),
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.items SET name = 'x'",
        'INSERT INTO "public"."items" (name) VALUES (%(name)s)',
        "CREATE INDEX ix_items_price ON PUBLIC.items (price)",
        "DROP TABLE public.items",
        "DROP TYPE public.task_status",
        "SELECT public.recount()",
        "SELECT setval('public.items_id_seq', 10)",
        "ALTER TABLE items SET SCHEMA public",
        "SET search_path TO public",
        "DO $$ BEGIN UPDATE public.items SET name = 'x'; END $$",
        "DROP SCHEMA public CASCADE",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
        "CREATE EXTENSION IF NOT EXISTS hstore SCHEMA public",
        # installed in the database before the replay: the live tables may use it
        "DROP EXTENSION pg_trgm CASCADE",
        "ALTER EXTENSION pg_trgm UPDATE",
        # an extension's name for something else than what it is
        "DROP TABLE public.similarity",
    ],
)
def test_statements_reaching_beyond_the_scratch_schema_are_refused(statement: str) -> None:
    with pytest.raises(baseline._Refused):
        guard()._checked(statement)


@pytest.mark.parametrize(
    ("statement", "runs_as"),
    [
        ("UPDATE items SET name = 'public.items'", None),  # a value, not a name
        ("ALTER TABLE items ADD CONSTRAINT uq_public UNIQUE (public)", None),  # a column
        ("SELECT nextval('items_id_seq')", None),
        ("INSERT INTO items (name) VALUES (%(name)s)", None),
        ("CREATE EXTENSION IF NOT EXISTS pg_trgm", None),
        ("CREATE EXTENSION pg_trgm", "CREATE EXTENSION IF NOT EXISTS pg_trgm"),  # installed
        ("CREATE EXTENSION hstore", None),  # lands in the scratch schema, goes with it
        ("DROP EXTENSION IF EXISTS hstore", None),
        # the live database's extension objects are not on the replay's path: named with
        # their schema, they are found, and nothing else of that schema is reachable
        ("ALTER TABLE users ALTER COLUMN email TYPE CITEXT USING email::citext",
         "ALTER TABLE users ALTER COLUMN email TYPE public.CITEXT USING email::public.citext"),
        ("CREATE INDEX ix ON items USING gin (name gin_trgm_ops)",
         "CREATE INDEX ix ON items USING gin (name public.gin_trgm_ops)"),
        ("SELECT similarity(name, 'x') FROM items",
         "SELECT public.similarity(name, 'x') FROM items"),
        ("CREATE INDEX ix ON items USING gin (name public.gin_trgm_ops)", None),
        ("SELECT public.similarity(name, 'x'), replace(name, 'a', 'b') FROM items", None),
    ],
)
def test_statements_within_the_scratch_schema_run(statement: str, runs_as: str | None) -> None:
    assert guard()._checked(statement) == (runs_as or statement)


PRICES = {
    "eeee0001": 'op.create_table("prices", sa.Column("id", sa.Integer), '
                'sa.Column("amount", sa.Integer), sa.PrimaryKeyConstraint("id", name="pk_prices"))',
    "eeee0002": 'op.execute("UPDATE prices SET amount = amount * 100")',
    "eeee0003": 'op.add_column("prices", sa.Column("currency", sa.Text))',
}


def test_a_baseline_with_a_data_migration_between_its_candidates_is_refused(
    make_engine: Callable[..., Any], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN live tables at revision 2 of: create prices → convert to cents → add a column
    scripts = linear_history(tmp_path / "prices", PRICES)
    tables_at(db, scripts, "eeee0002")
    execute(db, "INSERT INTO prices (id, amount) VALUES (1, 199900)")
    engine = make_engine(script_location=scripts)
    # WHEN the verified baseline is asked for (dry run, then for real)
    preview = engine.dry_run(fix_history=True)
    with pytest.raises(MigrationRefused) as refused:
        engine.migrate(fix_history=True)
    # THEN both refuse, naming the candidates and the data migration between them
    message = str(refused.value)
    assert not preview.ok and "the tables match 2 revisions (eeee0001, eeee0002)" in message
    assert "between them eeee0002" in message and "--baseline REV" in message
    assert message in preview.message
    # AND nothing ran twice: the amount is as it was, and no history was stamped
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT amount FROM prices").scalar_one() == 199900
    assert "alembic_version" not in relations(db)
    # AND the operator's --baseline chooses: only what comes after it runs
    outcome = engine.migrate(baseline="eeee0002")
    assert [a.revision for a in outcome.applied] == ["eeee0003"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT amount FROM prices").scalar_one() == 199900


def test_candidates_separated_only_by_empty_revisions_stamp_the_last(
    make_engine: Callable[..., Any], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN tables matching a revision and the empty one after it (a merge does the same)
    scripts = linear_history(tmp_path / "empty", {
        "ffff0001": PRICES["eeee0001"], "ffff0002": "pass", "ffff0003": PRICES["eeee0003"]})
    tables_at(db, scripts, "ffff0002")
    # WHEN the verified baseline runs
    outcome = make_engine(script_location=scripts).migrate(fix_history=True)
    # THEN it stamps the last candidate: nothing between them had anything to run
    assert outcome.baseline is not None and outcome.baseline["matches"] == [
        "ffff0001", "ffff0002"]
    assert [a.revision for a in outcome.applied] == ["ffff0003"]
