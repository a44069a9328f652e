"""Finding the revision an unversioned database matches, by replay into a scratch schema.

Every test builds "tables without migration history" for real: the migrations bring the
database to a revision, then alembic_version is dropped. After every test no scratch schema
may be left (see the autouse fixture).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from migration_resource import baseline
from migration_resource.baseline import BaselineError, drop_scratch_schemas, find_baseline
from migration_resource.revisions import RevisionCatalogue, alembic_config
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    BACKFILL_DISPLAY_NAME,
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    HEAD,
    INDEX_TASKS,
)
from tests.migration_resource.support import SAMPLE_SCRIPTS, execute, relations

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


def fingerprint(db: sa.Engine) -> tuple[Any, ...]:
    """Relations, columns, constraints and rows of the live schema, and no alembic_version."""
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
        users = conn.execute(sa.text("SELECT * FROM users ORDER BY id")).all()
        version_table = conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar()
    return tuple(relations(db)), tuple(columns), tuple(constraints), tuple(users), version_table


@pytest.fixture(autouse=True)
def no_scratch_schema_left(db: sa.Engine) -> Iterator[None]:
    yield
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
        f"primary key on users(id) is named users_pkey in the database, pk_users at revision {HEAD}",
        "unique constraint on users(email) is named users_email_key in the database, "
        f"uq_users_email at revision {HEAD}",
    )
    assert result.difference_weight == 4


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


def test_a_missing_table_is_one_line(db: sa.Engine) -> None:
    tables_at(db, SAMPLE_SCRIPTS, HEAD)
    execute(db, "DROP TABLE tasks")
    result = find_baseline(db, SAMPLE_SCRIPTS, ORDER)
    assert result.differences == ("table tasks is missing from the database",)


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
        "verified: (psycopg.errors.DivisionByZero) division by zero"
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


def test_an_env_py_that_hides_the_revisions_is_refused(
    db: sa.Engine, synthetic: Synthetic
) -> None:
    # GIVEN an env.py that does not pass on_version_apply on to Alembic
    folder, ids = synthetic(3)
    env = folder / "env.py"
    env.write_text(env.read_text().replace("on_version_apply=callbacks", ""))
    tables_at(db, folder, ids[-1])
    with pytest.raises(BaselineError, match=r"env\.py must pass"):
        find_baseline(db, folder, ids)


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

