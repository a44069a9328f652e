"""The destructive and locking change gate: what the SQL of pending revisions is flagged for."""

from __future__ import annotations

import pytest

from migration_resource.execution import offline_sql
from migration_resource.gate import (
    APPROVAL,
    Approval,
    ApprovalLineError,
    Finding,
    LiveTables,
    analyse,
    approvals_in,
    decide,
    join_statements,
    only_refills,
)
from tests.alembic.support import (
    CHECK_TASK_STATUS,
    CREATE_TABLES,
    DROP_USERS_NAME,
    INDEX_TASKS,
    REPO_ROOT,
)

REV = "a1b2c3d4e5f6"
NEXT = "0f9e8d7c6b5a"


def rendered(body: str, revision: str = REV, down: str = "9c8b7a6d5e4f") -> str:
    """One revision as Alembic's offline mode renders it, around the given statements."""
    return (
        f"BEGIN;\n\n-- Running upgrade {down} -> {revision}\n\n{body}\n\n"
        f"UPDATE alembic_version SET version_num='{revision}' "
        f"WHERE alembic_version.version_num = '{down}';\n\nCOMMIT;"
    )


def rules(findings: tuple[Finding, ...]) -> list[tuple[str, str, str]]:
    return [(finding.revision, finding.kind, finding.rule) for finding in findings]


# (rule, kind, statement): each statement on an existing table trips exactly that rule.
POSITIVE = [
    ("drop_table", "destructive", "DROP TABLE legacy_reports"),
    ("drop_table", "destructive", "DROP TABLE IF EXISTS archive.legacy_reports CASCADE"),
    ("drop_column", "destructive", "ALTER TABLE users DROP COLUMN name"),
    ("drop_schema", "destructive", "DROP SCHEMA reporting CASCADE"),
    ("truncate", "destructive", "TRUNCATE TABLE tasks"),
    ("alter_column_type", "destructive", "ALTER TABLE tasks ALTER COLUMN title TYPE VARCHAR(100)"),
    ("delete_without_where", "destructive", "DELETE FROM tasks"),
    ("update_overwrites", "destructive", "UPDATE users SET display_name=users.name"),
    ("delete_rows", "destructive", "DELETE FROM responses WHERE user_id IS NULL"),
    ("update_overwrites", "destructive", "UPDATE prices SET amount = amount * 100 WHERE id > 0"),
    ("update_overwrites", "destructive",
     "INSERT INTO settings (k, v) VALUES ('a', 'b') ON CONFLICT (k) DO UPDATE SET v = 'b'"),
    ("merge", "destructive",
     "MERGE INTO tasks t USING staged s ON t.id = s.id WHEN MATCHED THEN DELETE"),
    ("do_block", "destructive", "DO $$ BEGIN ALTER TABLE users DROP COLUMN name; END $$"),
    ("call_procedure", "destructive", "CALL archive_orders(30)"),
    ("execute_prepared", "destructive", "EXECUTE purge_plan"),
    ("function_call", "destructive", "SELECT purge_old_orders()"),
    ("rename", "destructive", "ALTER TABLE users RENAME COLUMN name TO full_name"),
    ("rename", "destructive", "ALTER TABLE tasks RENAME TO todo_items"),
    ("drop_type_cascade", "destructive", "DROP TYPE task_status CASCADE"),
    ("drop_domain_cascade", "destructive", "DROP DOMAIN email_address CASCADE"),
    ("drop_extension_cascade", "destructive", "DROP EXTENSION IF EXISTS citext CASCADE"),
    ("drop_collation_cascade", "destructive", "DROP COLLATION german CASCADE"),
    ("create_index_not_concurrently", "locking", "CREATE INDEX ix_tasks_title ON tasks (title)"),
    (
        "create_index_not_concurrently",
        "locking",
        "CREATE UNIQUE INDEX uq_users_name ON public.users (name)",
    ),
    (
        "add_column_not_null_without_default",
        "locking",
        "ALTER TABLE users ADD COLUMN plan VARCHAR(20) NOT NULL",
    ),
    ("set_not_null", "locking", "ALTER TABLE users ALTER COLUMN display_name SET NOT NULL"),
    (
        "foreign_key_without_not_valid",
        "locking",
        "ALTER TABLE tasks ADD CONSTRAINT fk_tasks_owner_id_users "
        "FOREIGN KEY(owner_id) REFERENCES users (id)",
    ),
    (
        "foreign_key_without_not_valid",
        "locking",
        "ALTER TABLE tasks ADD COLUMN reviewer_id BIGINT REFERENCES users (id)",
    ),
    (
        "check_without_not_valid",
        "locking",
        "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_title_length CHECK (length(title) > 0)",
    ),
    ("add_unique_constraint", "locking",
     "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)"),
    ("add_unique_constraint", "locking", "ALTER TABLE users ADD COLUMN handle TEXT UNIQUE"),
    ("add_primary_key", "locking", "ALTER TABLE audit_events ADD PRIMARY KEY (id)"),
    ("drop_index_not_concurrently", "locking", "DROP INDEX ix_tasks_assignee_id"),
    ("drop_index_not_concurrently", "locking", "DROP INDEX IF EXISTS app.ix_tasks_title"),
    ("reindex_not_concurrently", "locking", "REINDEX INDEX ix_tasks_title"),
    ("reindex_not_concurrently", "locking", "REINDEX TABLE tasks"),
    ("add_column_rewrites_table", "locking",
     "ALTER TABLE users ADD COLUMN seen_at TIMESTAMPTZ DEFAULT clock_timestamp()"),
    ("add_column_rewrites_table", "locking",
     "ALTER TABLE users ADD COLUMN public_id UUID DEFAULT gen_random_uuid()"),
    ("add_column_rewrites_table", "locking",
     "ALTER TABLE users ADD COLUMN code TEXT DEFAULT make_code()"),
    ("add_column_rewrites_table", "locking", "ALTER TABLE users ADD COLUMN seq BIGSERIAL"),
    ("add_column_rewrites_table", "locking",
     "ALTER TABLE users ADD COLUMN seq BIGINT GENERATED BY DEFAULT AS IDENTITY"),
    ("add_column_rewrites_table", "locking",
     "ALTER TABLE tasks ADD COLUMN title_lower TEXT GENERATED ALWAYS AS (lower(title)) STORED"),
    ("lock_timeout_disabled", "locking", "SET lock_timeout = 0"),
    ("lock_timeout_disabled", "locking", "SET LOCAL lock_timeout = '0s'"),
    ("lock_timeout_disabled", "locking", "RESET lock_timeout"),
    ("lock_timeout_disabled", "locking", "RESET ALL"),
    ("lock_timeout_disabled", "locking", "SELECT set_config('lock_timeout', '0', false)"),
    ("lock_timeout_disabled", "locking", "SET lock_timeout = '0.4'"),
    ("lock_timeout_disabled", "locking", "SET lock_timeout = '100us'"),
    ("lock_timeout_disabled", "locking", "DISCARD ALL"),
    ("reindex_not_concurrently", "locking", "REINDEX (CONCURRENTLY false) TABLE tasks"),
    ("session_timeout", "note", "SET statement_timeout = '24h'"),
    ("session_timeout", "note", "SET lock_timeout TO '30s'"),
]


@pytest.mark.parametrize(("rule", "kind", "statement"), POSITIVE)
def test_each_rule_reports_its_statement(rule: str, kind: str, statement: str) -> None:
    # GIVEN one revision doing a risky thing to a table that existed before the batch
    # WHEN it is analysed
    findings = analyse({REV: rendered(statement + ";")})
    # THEN exactly that rule is reported, with the statement and a message saying what to do
    assert rules(findings) == [(REV, kind, rule)]
    assert findings[0].statement == statement
    assert findings[0].message.endswith(".")
    assert ";" in findings[0].message  # what and why; then the safer alternative


NEGATIVE = [
    "ALTER TABLE users ADD COLUMN plan VARCHAR(20) DEFAULT 'free' NOT NULL",
    "ALTER TABLE users ADD COLUMN login_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN nickname VARCHAR(50)",
    # computed once, stored in the catalogue: no rewrite
    "ALTER TABLE users ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now()",
    "ALTER TABLE users ADD COLUMN settings JSONB DEFAULT '{}'::jsonb",
    "ALTER TABLE users ADD COLUMN created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
    "ALTER TABLE users ADD COLUMN expires_at TIMESTAMPTZ DEFAULT now() + interval '30 days'",
    "ALTER TABLE users ADD COLUMN seen_at TIMESTAMP DEFAULT timezone('utc', now())",
    "ALTER TABLE users ADD COLUMN seen_at TIMESTAMP DEFAULT (now() AT TIME ZONE 'utc')",
    "ALTER TABLE users ADD COLUMN epoch FLOAT DEFAULT extract(epoch from now())",
    "ALTER TABLE users ADD COLUMN tier TEXT DEFAULT CASE WHEN true THEN 'a' ELSE 'b' END",
    "ALTER TABLE users ADD COLUMN weight INT DEFAULT GREATEST(1, 2)",
    "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX uq_users_email",
    "ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY USING INDEX ux_id",
    "ALTER TABLE tasks ADD CONSTRAINT fk_tasks_owner_id_users "
    "FOREIGN KEY(owner_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE tasks VALIDATE CONSTRAINT fk_tasks_owner_id_users",
    "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_title_length CHECK (length(title) > 0) NOT VALID",
    "UPDATE users SET display_name=users.name WHERE users.display_name IS NULL",
    "ALTER TABLE users ALTER COLUMN display_name DROP NOT NULL",
    "ALTER INDEX ix_tasks_assignee_id RENAME TO ix_tasks_assignee",
    "ALTER TABLE tasks RENAME CONSTRAINT ck_tasks_status_valid TO ck_tasks_status",
    # Without CASCADE these fail while a column uses them: nothing is lost.
    "DROP TYPE task_status",
    "DROP DOMAIN email_address RESTRICT",
    "DROP EXTENSION citext",
    "DROP COLLATION german",
    "INSERT INTO users (email, name) VALUES ('a@example.com', 'A')",
    "SELECT count(*) FROM tasks",
]


@pytest.mark.parametrize("statement", NEGATIVE)
def test_the_safe_counterparts_are_not_reported(statement: str) -> None:
    assert analyse({REV: rendered(statement + ";")}) == ()


# As Alembic renders an autocommit_block(): out of the revision's transaction and back.
OUTSIDE = [
    "REINDEX SCHEMA CONCURRENTLY public",
    "CREATE INDEX CONCURRENTLY ix_tasks_title ON tasks (title)",
    "DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_assignee_id",
    "REINDEX INDEX CONCURRENTLY ix_tasks_title",
    "REINDEX (CONCURRENTLY) TABLE tasks",
]


@pytest.mark.parametrize("statement", OUTSIDE)
def test_concurrently_outside_the_transaction_is_not_reported(statement: str) -> None:
    assert analyse({REV: rendered(f"COMMIT;\n\n{statement};\n\nBEGIN;")}) == ()


@pytest.mark.parametrize("statement", OUTSIDE)
def test_concurrently_inside_the_transaction_fails_for_sure(statement: str) -> None:
    # GIVEN a CONCURRENTLY statement a revision runs without an autocommit_block()
    findings = analyse({REV: rendered(statement + ";")})
    # THEN the gate says PostgreSQL will refuse it, and where to move it
    assert [f.rule for f in findings][:1] == ["concurrently_in_transaction"]
    assert findings[0].subject.endswith(("CONCURRENTLY ix_tasks_title", "ix_tasks_assignee_id",
                                         "CONCURRENTLY tasks", "CONCURRENTLY public"))
    assert "autocommit_block()" in findings[0].message


def test_each_lock_rule_names_the_safe_pattern() -> None:
    said = {rule: analyse({REV: rendered(statement + ";")})[0].message
            for rule, kind, statement in POSITIVE if kind == "locking"}
    assert "CREATE UNIQUE INDEX CONCURRENTLY" in said["add_unique_constraint"]
    assert "USING INDEX" in said["add_primary_key"]
    assert "DROP INDEX CONCURRENTLY" in said["drop_index_not_concurrently"]
    assert "REINDEX ... CONCURRENTLY" in said["reindex_not_concurrently"]
    assert "online.backfill" in said["add_column_rewrites_table"]
    assert "MIGRATION_LOCK_TIMEOUT" in said["lock_timeout_disabled"]


def test_what_the_same_deploy_builds_may_be_rebuilt_and_dropped_at_once() -> None:
    sql = rendered("CREATE TABLE invoices (id BIGINT PRIMARY KEY, number TEXT);\n"
                   "CREATE INDEX ix_invoices_number ON invoices (number);\n"
                   "REINDEX INDEX ix_invoices_number;\nREINDEX TABLE invoices;\n"
                   "ALTER TABLE invoices ADD CONSTRAINT uq_invoices_number UNIQUE (number);\n"
                   "ALTER TABLE invoices ADD COLUMN public_id UUID DEFAULT gen_random_uuid();\n"
                   "DROP INDEX ix_invoices_number;")
    assert analyse({REV: sql}) == ()


def test_a_session_setting_is_shown_as_written() -> None:
    findings = analyse({REV: rendered("SET statement_timeout = '24h';\nSET lock_timeout = 0;")})
    assert [(f.rule, f.subject) for f in findings] == [
        ("session_timeout", "statement_timeout"), ("lock_timeout_disabled", "lock_timeout")]
    assert findings[0].message.startswith("SET statement_timeout = '24h' holds for this "
                                          "revision only")
    assert findings[1].message.startswith("SET lock_timeout = 0 makes this revision's")


def test_create_table_if_not_exists_is_judged_by_what_the_database_holds() -> None:
    body = ("CREATE TABLE IF NOT EXISTS webhooks (id BIGINT PRIMARY KEY, url TEXT);\n"
            "CREATE INDEX ix_webhooks_url ON webhooks (url);\nDELETE FROM webhooks WHERE url = '';")
    # GIVEN the database held the table: the statement finds it and does nothing, and what
    # follows acts on its rows
    live = LiveTables(frozenset({("public", "users"), ("public", "webhooks")}))
    assert [f.rule for f in analyse({REV: rendered(body)}, live=live)] == [
        "create_table_exists", "create_index_not_concurrently", "delete_rows"]
    # GIVEN the database is known not to have held it: a new table, nothing to report
    live = LiveTables(frozenset({("public", "users")}))
    assert analyse({REV: rendered(body)}, live=live) == ()
    # GIVEN nothing is known of the database (not read, or unqualified names resolve to
    # another schema than public): fail closed
    assert [f.rule for f in analyse({REV: rendered(body)})] == [
        "create_index_not_concurrently", "delete_rows"]
    other = LiveTables(frozenset({("app", "users")}), current_schema="app")
    assert [f.rule for f in analyse({REV: rendered(body)}, live=other)] == [
        "create_index_not_concurrently", "delete_rows"]
    # A temporary table is always new; CREATE TABLE AS IF NOT EXISTS finds what is there
    live = LiveTables(frozenset({("public", "webhooks")}))
    assert analyse({REV: rendered("CREATE TEMP TABLE IF NOT EXISTS webhooks (id int);\n"
                                  "DELETE FROM webhooks;")}, live=live) == ()
    assert [f.rule for f in analyse({REV: rendered(
        "CREATE TABLE IF NOT EXISTS webhooks AS SELECT 1 AS id;")}, live=live)] == [
        "create_table_exists"]


# WHERE clauses that hold for every row: PostgreSQL reads 't' and ' Yes ' as true.
ALWAYS_TRUE = [
    "true",
    "TRUE",
    "1=1",
    "'t'",
    "' Yes '",
    "NOT false",
    "true AND (true)",
    "1 = 1 OR tasks.status = 'todo'",
    "'t'::boolean",
    "true::boolean",
    "CAST(1 AS bool)",
    "NOT 1 <> 1",
    "'a' = 'a' AND 2 >= 2.0",
]


@pytest.mark.parametrize("where", ALWAYS_TRUE)
def test_a_where_that_is_always_true_is_as_destructive_as_none(where: str) -> None:
    sql = rendered(f"DELETE FROM tasks WHERE {where};\nUPDATE tasks SET title='x' WHERE {where};")
    findings = analyse({REV: sql})
    assert rules(findings) == [
        (REV, "destructive", "delete_without_where"),
        (REV, "destructive", "update_overwrites"),
    ]
    assert findings[0].message.startswith("DELETE FROM tasks with a WHERE that is always true")
    assert findings[1].message.startswith("UPDATE overwrites values of tasks.title")


# Some row may fail these, or a column decides: not constant true.
NOT_ALWAYS_TRUE = [
    "false",
    "'f'",
    "NULL",
    "NULL::boolean",
    "NOT true",
    "1 = 2",
    "true AND tasks.archived",
    "false OR tasks.archived",
    "tasks.id = tasks.id",
    "tasks.archived::boolean",
]


@pytest.mark.parametrize("where", NOT_ALWAYS_TRUE)
def test_a_where_that_may_be_false_still_deletes_and_overwrites_existing_rows(where: str) -> None:
    # Data changes are judged by what they destroy: whatever the WHERE keeps, the rows it
    # matches existed before the deploy.
    sql = rendered(f"DELETE FROM tasks WHERE {where};\nUPDATE tasks SET title='x' WHERE {where};")
    assert rules(analyse({REV: sql})) == [
        (REV, "destructive", "delete_rows"),
        (REV, "destructive", "update_overwrites"),
    ]


def test_a_cascade_says_what_else_it_drops() -> None:
    sql = rendered(
        "DROP TABLE legacy_reports;\nDROP TABLE archive.reports, audit CASCADE;\n"
        "DROP EXTENSION citext, hstore CASCADE;"
    )
    findings = analyse({REV: sql})
    assert [finding.rule for finding in findings] == [
        "drop_table",
        "drop_table",
        "drop_extension_cascade",
    ]
    assert "CASCADE" not in findings[0].message
    assert findings[1].message.startswith("DROP TABLE archive.reports, audit CASCADE deletes")
    assert "views and foreign keys" in findings[1].message
    assert findings[2].message.startswith("DROP EXTENSION citext, hstore CASCADE also drops")
    assert "every column of its types" in findings[2].message


# (created earlier in the batch, dropped later, how the finding starts if any): what the batch
# created holds no data from before, unless IF NOT EXISTS found it already there.
CREATED_THEN_DROPPED = [
    ("CREATE TYPE mood AS ENUM ('ok', 'sad')", "DROP TYPE public.mood CASCADE", ""),
    ("CREATE TYPE pair AS (x INT, y INT)", "DROP TYPE pair CASCADE", ""),
    ("CREATE TYPE span AS RANGE (subtype = INT)", "DROP TYPE span CASCADE", ""),
    ("CREATE DOMAIN email_address AS TEXT", "DROP DOMAIN email_address CASCADE", ""),
    ("CREATE DOMAIN email_address AS TEXT", "DROP TYPE email_address CASCADE", ""),
    ("CREATE EXTENSION citext", "DROP EXTENSION citext CASCADE", ""),
    ('CREATE COLLATION german FROM "C"', "DROP COLLATION german CASCADE", ""),
    ("CREATE SCHEMA reporting", "DROP TYPE reporting.mood CASCADE", ""),
    (
        "CREATE EXTENSION IF NOT EXISTS citext",
        "DROP EXTENSION citext CASCADE",
        "DROP EXTENSION citext CASCADE",
    ),
    (
        "CREATE COLLATION IF NOT EXISTS german (provider = icu, locale = 'de')",
        "DROP COLLATION german CASCADE",
        "DROP COLLATION german CASCADE",
    ),
    ("CREATE TYPE audit.mood AS ENUM ('ok')", "DROP TYPE mood CASCADE", "DROP TYPE mood CASCADE"),
    (
        "CREATE TYPE mood AS ENUM ('ok')",
        "DROP TYPE mood, reporting.size CASCADE",
        "DROP TYPE reporting.size CASCADE",
    ),
]


@pytest.mark.parametrize(("create", "drop", "reported"), CREATED_THEN_DROPPED)
def test_a_cascade_drop_of_what_the_batch_created_is_not_reported(
    create: str, drop: str, reported: str
) -> None:
    later = rendered(drop + ";", revision=NEXT, down=REV)
    findings = analyse({REV: rendered(create + ";"), NEXT: later})
    assert [finding.message[: len(reported)] for finding in findings] == (
        [reported] if reported else []
    )


def test_changes_to_a_table_created_in_the_same_batch_are_not_reported() -> None:
    # GIVEN a table created in one revision and changed in the same and a later one
    create = rendered(
        "CREATE TABLE invoices (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY, \n"
        "    user_id BIGINT, \n    CONSTRAINT pk_invoices PRIMARY KEY (id)\n);\n\n"
        "CREATE INDEX ix_invoices_user_id ON invoices (user_id);"
    )
    change = rendered(
        "CREATE INDEX ix_invoices_id_user_id ON public.invoices (id, user_id);\n"
        "ALTER TABLE invoices ADD CONSTRAINT fk_invoices_user_id_users "
        "FOREIGN KEY(user_id) REFERENCES users (id);\n"
        "ALTER TABLE invoices ADD CONSTRAINT ck_invoices_id CHECK (id > 0);\n"
        "ALTER TABLE invoices ALTER COLUMN user_id SET NOT NULL;\n"
        "ALTER TABLE invoices ADD COLUMN total NUMERIC NOT NULL;\n"
        "UPDATE invoices SET total=0;\n"
        "ALTER TABLE invoices RENAME TO bills;\n"
        "CREATE INDEX ix_bills_total ON bills (total);\n"
        "ALTER TABLE bills DROP COLUMN total;",
        revision=NEXT,
        down=REV,
    )
    # WHEN both are analysed as one batch
    # THEN nothing is reported: the table has no rows from before and no running code uses it
    assert analyse({REV: create, NEXT: change}) == ()
    # ... but on its own the later revision changes an existing table (filling the column it
    # added itself is a backfill, not an overwrite)
    assert [f.rule for f in analyse({NEXT: change})] == [
        "create_index_not_concurrently", "foreign_key_without_not_valid",
        "check_without_not_valid", "set_not_null", "add_column_not_null_without_default",
        "rename", "create_index_not_concurrently", "drop_column"]


def test_a_table_in_a_schema_created_in_the_batch_is_new_too() -> None:
    sql = rendered(
        "CREATE SCHEMA reporting;\nCREATE TABLE reporting.daily (day DATE);\n"
        "CREATE INDEX ix_daily_day ON reporting.daily (day);\nDROP SCHEMA reporting CASCADE;"
    )
    assert analyse({REV: sql}) == ()


def test_a_table_of_the_same_name_in_another_schema_is_not_new() -> None:
    sql = rendered("CREATE TABLE audit.users (id BIGINT);\nCREATE INDEX ix_users_id ON users (id);")
    assert rules(analyse({REV: sql})) == [(REV, "locking", "create_index_not_concurrently")]


def test_alembic_version_bookkeeping_is_never_reported() -> None:
    # GIVEN everything Alembic writes about alembic_version, upgrade and downgrade alike
    sql = (
        "BEGIN;\n\nCREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL, \n"
        "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n);\n\n"
        f"-- Running upgrade  -> {REV}\n\n"
        f"INSERT INTO alembic_version (version_num) VALUES ('{REV}') "
        "RETURNING alembic_version.version_num;\n\n"
        f"UPDATE alembic_version SET version_num='{NEXT}';\n\n"
        "ALTER TABLE alembic_version ALTER COLUMN version_num TYPE VARCHAR(64);\n\n"
        "CREATE INDEX ix_version ON alembic_version (version_num);\n\n"
        f"DELETE FROM alembic_version WHERE alembic_version.version_num = '{REV}';\n\n"
        "DELETE FROM alembic_version;\n\nTRUNCATE alembic_version;\n\n"
        "DROP TABLE alembic_version;\n\nCOMMIT;"
    )
    # THEN none of it is a finding, and alembic_version does not count as created in the batch
    assert analyse({REV: sql}) == ()


def test_findings_come_in_revision_then_statement_order() -> None:
    first = rendered(
        "ALTER TABLE users DROP COLUMN name, ALTER COLUMN email TYPE TEXT;\n"
        "CREATE INDEX ix_users_email ON users (email);"
    )
    second = rendered("TRUNCATE tasks;\nDELETE FROM projects;", revision=NEXT, down=REV)
    assert rules(analyse({REV: first, NEXT: second})) == [
        (REV, "destructive", "drop_column"),
        (REV, "destructive", "alter_column_type"),
        (REV, "locking", "create_index_not_concurrently"),
        (NEXT, "destructive", "truncate"),
        (NEXT, "destructive", "delete_without_where"),
    ]


def test_a_delete_without_where_inside_a_with_query_is_reported() -> None:
    sql = rendered("WITH gone AS (DELETE FROM tasks RETURNING tasks.id) SELECT count(*) FROM gone;")
    assert rules(analyse({REV: sql})) == [(REV, "destructive", "delete_without_where")]


def test_the_statements_a_trial_run_captured_are_read_like_rendered_sql() -> None:
    # GIVEN what a revision really executed, joined with ";\n" and no final semicolon: the
    # transaction and savepoints around it, reads, and literals where parameters were
    captured = ";\n".join(
        [
            "BEGIN",
            "SET LOCAL lock_timeout = '5s'",
            "SAVEPOINT sa_savepoint_1",
            "SELECT users.id, users.email FROM users WHERE users.email = 'a@example.com'",
            "INSERT INTO tasks (title, owner_id, status) "
            "VALUES ('Plan; then write', 1, 'todo') RETURNING tasks.id",
            "UPDATE tasks SET status='done' WHERE tasks.id IN (1, 2, 3)",
            "RELEASE SAVEPOINT sa_savepoint_1",
            "SAVEPOINT sa_savepoint_2",
            "ROLLBACK TO SAVEPOINT sa_savepoint_2",
            "DELETE FROM tasks WHERE 1 = 1",
            f"UPDATE alembic_version SET version_num='{REV}' "
            "WHERE alembic_version.version_num = '9c8b7a6d5e4f'",
            "COMMIT",
        ]
    )
    # WHEN it is analysed
    findings = analyse({REV: captured})
    # THEN the UPDATE of existing rows and the DELETE of every row are the findings (and a
    # note that its own lock_timeout holds for it alone)
    assert rules(findings) == [(REV, "note", "session_timeout"),
                               (REV, "destructive", "update_overwrites"),
                               (REV, "destructive", "delete_without_where")]
    assert findings[2].statement == "DELETE FROM tasks WHERE 1 = 1"


def test_join_statements_keeps_a_trailing_comment_from_swallowing_the_next_one() -> None:
    statements = ["UPDATE tasks SET title='x' WHERE tasks.id = 2 -- the typo", "DROP TABLE legacy"]
    # A plain ";\n" join comments out the semicolon: two statements read as one broken one
    assert rules(analyse({REV: ";\n".join(statements)})) == [(REV, "destructive", "unparsed")]
    joined = join_statements([*statements, "SELECT 1;", "DROP TABLE audit"])
    assert [finding.statement for finding in analyse({REV: joined})] == [
        "UPDATE tasks SET title='x' WHERE tasks.id = 2",
        "DROP TABLE legacy",
        "DROP TABLE audit",
    ]


def test_the_statement_is_shown_on_one_line_without_comments_and_cut() -> None:
    long_list = ", ".join(f"column_{number} INTEGER" for number in range(40))
    sql = rendered(
        "ALTER TABLE users /* old */ DROP COLUMN name; -- unused since v2\n"
        f"UPDATE users SET display_name = -- fill it\n    'x';\n"
        f"ALTER TABLE users ADD COLUMN a INTEGER NOT NULL, DROP COLUMN b, ADD COLUMN {long_list};"
    )
    findings = analyse({REV: sql})
    assert [finding.statement for finding in findings[:2]] == [
        "ALTER TABLE users DROP COLUMN name",
        "UPDATE users SET display_name = 'x'",
    ]
    assert len(findings[2].statement) == 200
    assert findings[2].statement.endswith("...")
    assert "\n" not in findings[2].statement


def test_sql_the_parser_cannot_read_is_reported_not_ignored() -> None:
    # GIVEN a revision with one broken statement between two others
    sql = rendered("SELEC 1;\nDROP TABLE legacy_reports;\nALTER TABLE users ADD COLUMN;")
    # WHEN it is analysed
    findings = analyse({REV: sql})
    # THEN each bad statement is an "unparsed" finding with the parser's reason, and the good
    # statements around them are still analysed
    assert rules(findings) == [
        (REV, "destructive", "unparsed"),
        (REV, "destructive", "drop_table"),
        (REV, "destructive", "unparsed"),
    ]
    assert findings[0].statement == "SELEC 1"
    assert 'syntax error at or near "SELEC"' in findings[0].message
    assert "counts as destructive" in findings[0].message


def test_sql_the_scanner_cannot_read_is_one_unparsed_finding() -> None:
    findings = analyse({REV: "BEGIN;\nDROP TABLE legacy_reports;\nSELECT 'unterminated;\n"})
    assert rules(findings) == [(REV, "destructive", "unparsed")]
    assert "unterminated quoted string" in findings[0].message
    assert findings[0].statement.startswith("BEGIN; DROP TABLE legacy_reports;")


def test_the_sample_migrations_from_base_report_nothing() -> None:
    # From an empty database every table is created in the batch: no rows to lose or lock yet,
    # so even the revision dropping users.name does not refuse a fresh database's first deploy.
    assert analyse(offline_sql(REPO_ROOT / "alembic", "base", "head")) == ()


def test_the_sample_migrations_on_existing_tables_report_the_index_and_the_check() -> None:
    # GIVEN a database where the tables already exist
    sql = offline_sql(REPO_ROOT / "alembic", CREATE_TABLES, CHECK_TASK_STATUS)
    # WHEN the following revisions are analysed
    findings = analyse(sql)
    # THEN the plain CREATE INDEX and the validating CHECK are the only findings
    assert findings == (
        Finding(
            revision=INDEX_TASKS,
            kind="locking",
            rule="create_index_not_concurrently",
            statement="CREATE INDEX ix_tasks_project_id_status ON tasks (project_id, status)",
            message=findings[0].message,
            subject="tasks",
        ),
        Finding(
            revision=CHECK_TASK_STATUS,
            kind="locking",
            rule="check_without_not_valid",
            statement="ALTER TABLE tasks ADD CONSTRAINT ck_tasks_status_valid "
            "CHECK (status IN ('todo', 'in_progress', 'done'))",
            message=findings[1].message,
            subject="ck_tasks_status_valid",
        ),
    )
    assert "CONCURRENTLY" in findings[0].message
    assert "NOT VALID" in findings[1].message
    # ... and neither blocks a production deploy
    decision = decide(
        findings, stage="production", allow_destructive=False, approvals={}
    )
    assert decision.blocking == ()
    assert decision.refusal() is None


def test_the_sample_drop_of_users_name_blocks_production_on_existing_tables() -> None:
    # GIVEN a database with the tables and everything up to the CHECK constraint
    sql = offline_sql(REPO_ROOT / "alembic", CHECK_TASK_STATUS, "head")
    # WHEN the dropping revision is analysed and decided for production
    findings = analyse(sql)
    decision = decide(
        findings, stage="production", allow_destructive=False, approvals={}
    )
    # THEN it is the one destructive finding, and the refusal names it and the way out
    assert rules(findings) == [(DROP_USERS_NAME, "destructive", "drop_column")]
    assert findings[0].statement == "ALTER TABLE users DROP COLUMN name"
    assert decision.blocking == findings
    refusal = decision.refusal()
    assert refusal is not None
    assert refusal.startswith(f"{DROP_USERS_NAME}: drop_column blocked in production")
    # ... the revision's own approval line names exactly this drop, and lets it through
    (script,) = (REPO_ROOT / "alembic" / "versions").glob(f"*_{DROP_USERS_NAME}_*.py")
    (approval,) = approvals_in(DROP_USERS_NAME, script.read_text())
    assert (approval.what, approval.subject) == ("drop_column", "users.name")
    assert decide(findings, stage="production", allow_destructive=False,
                  approvals={DROP_USERS_NAME: (approval,)}).blocking == ()
    allowed = decide(
        findings, stage="production", allow_destructive=True, approvals={}
    )
    assert allowed.blocking == ()


def destructive(revision: str, rule: str = "drop_column", subject: str = "users.name") -> Finding:
    return Finding(revision, "destructive", rule, "ALTER TABLE users DROP COLUMN name", "m.",
                   subject)


def locking(revision: str) -> Finding:
    return Finding(revision, "locking", "set_not_null", "ALTER TABLE ...", "m.")


FINDINGS = (destructive(REV), locking(REV), destructive(NEXT, "drop_table", "legacy"))


def test_production_blocks_destructive_findings_and_warns_about_locking_ones() -> None:
    decision = decide(
        FINDINGS, stage="production", allow_destructive=False, approvals={}
    )
    assert decision.findings == FINDINGS
    assert decision.blocking == (FINDINGS[0], FINDINGS[2])
    assert decision.warnings == (FINDINGS[1],)


def test_the_allow_flag_lets_every_destructive_finding_through() -> None:
    decision = decide(
        FINDINGS, stage="production", allow_destructive=True, approvals={}
    )
    assert decision.blocking == ()
    assert decision.warnings == FINDINGS
    assert decision.refusal() is None


def test_an_approval_line_lets_only_the_finding_it_names_through() -> None:
    approval = Approval("drop_column", "users.name", "unused since v41")
    decision = decide(
        FINDINGS, stage="production", allow_destructive=False, approvals={REV: (approval,)}
    )
    assert decision.blocking == (FINDINGS[2],)
    assert decision.warnings == (FINDINGS[0], FINDINGS[1])


def test_development_blocks_nothing() -> None:
    decision = decide(
        FINDINGS, stage="development", allow_destructive=False, approvals={}
    )
    assert decision.blocking == ()
    assert decision.warnings == FINDINGS
    assert decision.refusal() is None


def test_an_unknown_stage_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"production, development.*'staging'"):
        decide(FINDINGS, stage="staging", allow_destructive=False, approvals={})


def test_the_refusal_names_the_first_blocker_how_many_more_and_the_next_step() -> None:
    decision = decide(
        FINDINGS, stage="production", allow_destructive=False, approvals={}
    )
    refusal = decision.refusal()
    assert refusal == f"{REV}: drop_column (+1 more) blocked in production"
    step = decision.next_step()
    assert "AllowDestructive" in step
    assert "--allow-destructive" in step
    assert step.endswith(f"`{APPROVAL} drop_column users.name -- <why>` in its file")


def test_a_single_blocker_says_no_more_and_a_long_revision_id_is_cut() -> None:
    single = decide(
        (destructive(REV),),
        stage="production",
        allow_destructive=False,
        approvals={},
    ).refusal()
    assert single is not None
    assert single.startswith(f"{REV}: drop_column blocked in production")
    assert "more" not in single

    long_id = "add_the_reporting_tables_for_the_quarterly_finance_export_" * 3
    cut = decide(
        (destructive(long_id),),
        stage="production",
        allow_destructive=False,
        approvals={},
    ).refusal()
    assert cut is not None
    assert len(cut) <= 200
    assert cut.startswith(long_id[:20])
    assert cut.endswith("...: drop_column blocked in production")


def test_as_dict_names_every_field() -> None:
    assert destructive(REV).as_dict() == {
        "revision": REV,
        "kind": "destructive",
        "rule": "drop_column",
        "subject": "users.name",
        "statement": "ALTER TABLE users DROP COLUMN name",
        "message": "m.",
    }


@pytest.mark.parametrize(
    ("line", "finding"),
    [
        ("# migration-approve: drop_column users.name -- unused since v41\n", destructive(REV)),
        ("    # Migration-Approve: drop users.name -- unused\n", destructive(REV)),
        ("# migration-approve: delete orders -- test rows from the import\n",
         destructive(REV, "delete_rows", "orders")),
        ("# migration-approve: delete public.orders, carts -- both emptied\n",
         destructive(REV, "delete_without_where", "orders, carts")),
        ("# migration-approve: do_block -- reviewed in #123\n", destructive(REV, "do_block", "")),
        ("# migration-approve: update prices.amount -- cents, checked by finance\n",
         destructive(REV, "update_overwrites", "prices.amount")),
    ],
)
def test_an_approval_line_approves_the_finding_it_names(line: str, finding: Finding) -> None:
    (approval,) = approvals_in(REV, line)
    assert approval.approves(finding)
    assert decide((finding,), stage="production", allow_destructive=False,
                  approvals={REV: (approval,)}).blocking == ()


@pytest.mark.parametrize(
    ("line", "finding"),
    [
        # another column, another table, another kind of change
        ("# migration-approve: drop_column users.email -- unused\n", destructive(REV)),
        ("# migration-approve: delete orders -- old rows\n",
         destructive(REV, "delete_rows", "orders, carts")),
        ("# migration-approve: truncate users -- wrong verb\n", destructive(REV)),
        ("# migration-approve: drop users -- a table, not its column\n", destructive(REV)),
        # another case is another name in PostgreSQL (a quoted "Users")
        ("# migration-approve: drop_column Users.name -- quoted elsewhere\n", destructive(REV)),
        # a word that only starts a rule's word
        ("# migration-approve: dro users.name -- typo\n", destructive(REV)),
        # the blanket line of old approves nothing
        ("# migration-gate: allow-destructive\n", destructive(REV)),
        # not a comment line
        ('note = "# migration-approve: drop_column users.name -- x"\n', destructive(REV)),
    ],
)
def test_an_approval_line_approves_nothing_else(line: str, finding: Finding) -> None:
    approvals = approvals_in(REV, line) if "--" in line or "approve" not in line else ()
    assert not any(approval.approves(finding) for approval in approvals)
    assert decide((finding,), stage="production", allow_destructive=False,
                  approvals={REV: approvals}).blocking == (finding,)


@pytest.mark.parametrize("line", [
    "# migration-approve: drop_column users.name\n",
    "# migration-approve: drop_column users.name --   \n",
    "# migration-approve:  -- no subject or rule\n",
])
def test_an_approval_line_without_what_or_why_is_an_error(line: str) -> None:
    with pytest.raises(ApprovalLineError, match="must name what it approves and why"):
        approvals_in(REV, line)


def test_a_table_made_by_select_into_is_new_to_the_batch() -> None:
    # SELECT ... INTO makes a table as CREATE TABLE AS does: dropping it later drops no data
    # from before the deploy
    assert analyse({"r1": "SELECT 1 AS id INTO legacy", "r2": "DROP TABLE legacy"}) == ()


# (statements, the findings' rules): data changes are judged by what they destroy.
BACKFILLS_AND_OVERWRITES = [
    # filling a column the batch added, or rows still NULL, destroys nothing
    ("ALTER TABLE users ADD COLUMN plan TEXT;\nUPDATE users SET plan = 'free'", []),
    ("UPDATE users SET display_name = users.name WHERE users.display_name IS NULL", []),
    ("UPDATE users SET a = 1, b = 2 WHERE a IS NULL AND b IS NULL AND id > 3", []),
    ("INSERT INTO users (id, plan) VALUES (1, 'x') ON CONFLICT (id) DO NOTHING", []),
    # one column from before written where it may hold a value
    ("UPDATE users SET a = 1, b = 2 WHERE a IS NULL", ["update_overwrites"]),
    ("UPDATE users SET a = 1 WHERE a IS NULL OR id = 3", ["update_overwrites"]),
    ("ALTER TABLE users ADD COLUMN IF NOT EXISTS plan TEXT;\nUPDATE users SET plan = 'x'",
     ["update_overwrites"]),  # IF NOT EXISTS may have found a column with values
    ("WITH moved AS (UPDATE orders SET state = 'x' WHERE id < 9 RETURNING id) "
     "SELECT count(*) FROM moved", ["update_overwrites"]),
    ("DELETE FROM responses WHERE user_id IS NULL", ["delete_rows"]),
]


@pytest.mark.parametrize(("sql", "expected"), BACKFILLS_AND_OVERWRITES)
def test_a_backfill_is_not_an_overwrite(sql: str, expected: list[str]) -> None:
    findings = analyse({REV: rendered(sql + ";")})
    assert [finding.rule for finding in findings] == expected
    assert all(finding.kind == "destructive" for finding in findings)


# (statements, the findings' rules): what runs code the gate cannot read fails closed.
OPAQUE = [
    ("SELECT lower(email) FROM users", []),
    ("SELECT setval('users_id_seq', (SELECT max(id) FROM users))", []),
    ("SELECT pg_catalog.format_type(23, -1)", []),
    ("SELECT (SELECT purge_orders())", ["function_call"]),
    ("SELECT app.purge_orders(30)", ["function_call"]),
    ("CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1';\n"
     "SELECT wipe() FROM users", ["function_call"]),
    ("CALL app.archive(30)", ["call_procedure"]),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$", ["do_block"]),
]


@pytest.mark.parametrize(("sql", "expected"), OPAQUE)
def test_what_the_gate_cannot_see_into_counts_as_destructive(
    sql: str, expected: list[str]
) -> None:
    findings = analyse({REV: rendered(sql + ";")})
    assert [(finding.kind, finding.rule) for finding in findings] == [
        ("destructive", rule) for rule in expected]
    blocked = decide(findings, stage="production", allow_destructive=False, approvals={})
    assert len(blocked.blocking) == len(expected)


def test_the_backfill_helpers_own_statements_are_bookkeeping() -> None:
    from migration_resource.online import PROGRESS_DROP_WHEN_EMPTY, PROGRESS_TABLE  # noqa: PLC0415

    sql = (f"DELETE FROM {PROGRESS_TABLE} WHERE revision = 'r1';\n{PROGRESS_DROP_WHEN_EMPTY};\n"
           "DO $$ BEGIN DROP TABLE orders; END $$;")
    assert [finding.rule for finding in analyse({REV: rendered(sql)})] == ["do_block"]


# Evasions found by review: each must still be a destructive finding.
EVASIONS = [
    ("WITH gone AS (DELETE FROM users RETURNING 1) "
     "UPDATE alembic_version SET version_num = version_num", "delete_without_where"),
    ("CREATE TABLE IF NOT EXISTS users (id int);\nDELETE FROM users", "delete_without_where"),
    ("CREATE SCHEMA IF NOT EXISTS public;\nDROP TABLE users", "drop_table"),
    ("CREATE SCHEMA trash;\nALTER TABLE users SET SCHEMA trash", "rename"),
    ("CREATE TABLE newt (id int);\nALTER TABLE users INHERIT newt;\nDELETE FROM newt",
     "delete_without_where"),
    ("CREATE TABLE p (id int) PARTITION BY RANGE (id);\n"
     "ALTER TABLE p ATTACH PARTITION users FOR VALUES FROM (0) TO (10);\nTRUNCATE p", "truncate"),
    ("CREATE TABLE tenants (id int primary key);\nALTER TABLE users ADD CONSTRAINT fk FOREIGN "
     "KEY (tenant_id) REFERENCES tenants ON DELETE CASCADE NOT VALID;\nDELETE FROM tenants",
     "delete_without_where"),
    ("EXPLAIN ANALYZE DELETE FROM users", "delete_without_where"),
    ("CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM users RETURNING 1';\n"
     "INSERT INTO log SELECT wipe()", "function_call"),
    ("CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
     "UPDATE users SET plan = wipe() WHERE plan IS NULL", "function_call"),
    ("SELECT * FROM purge_old_orders()", "function_call"),
    ("CREATE TABLE t (id int);\nCREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW "
     "EXECUTE FUNCTION wipe_users();\nINSERT INTO t VALUES (1)", "trigger"),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM users", "create_rule"),
    ("UPDATE users SET name = 'x' FROM accounts a WHERE a.name IS NULL", "update_overwrites"),
    ("DROP OWNED BY CURRENT_USER", "drop_owned"),
]


@pytest.mark.parametrize(("sql", "rule"), EVASIONS)
def test_known_evasions_are_destructive_findings(sql: str, rule: str) -> None:
    findings = analyse({REV: rendered(sql + ";")})
    assert (("destructive", rule) in [(f.kind, f.rule) for f in findings]), findings


def test_a_backfill_helper_batch_without_a_null_guard_overwrites() -> None:
    from migration_resource.online import PROGRESS_TABLE  # noqa: PLC0415

    batch = (f"WITH done AS (UPDATE prices SET amount = amount * 100 WHERE id <= 10 "
             f"RETURNING id) INSERT INTO {PROGRESS_TABLE} (revision, table_name, name, last_key) "
             "SELECT 'r', 'prices', 'amount', max(id)::text FROM done")
    assert [f.rule for f in analyse({REV: rendered(batch + ";")})] == ["update_overwrites"]
    assert not only_refills(batch)


def test_a_backfill_helper_batch_guarded_by_is_null_refills() -> None:
    from migration_resource.online import PROGRESS_TABLE  # noqa: PLC0415

    batch = ("WITH picked AS (SELECT id AS k FROM users WHERE (email_domain IS NULL) LIMIT 10), "
             "updated AS (UPDATE users SET email_domain = 'x' WHERE id IN (SELECT k FROM picked) "
             f"AND (email_domain IS NULL) RETURNING 1) INSERT INTO {PROGRESS_TABLE} AS p "
             "(revision, table_name, name, last_key) SELECT 'r', 'users', 'd', 'k'")
    assert only_refills(batch)
    assert analyse({REV: rendered(batch + ";")}) == ()


def test_validating_in_the_transaction_that_added_it_not_valid_holds_the_lock() -> None:
    added = ("ALTER TABLE orders ADD CONSTRAINT ck_orders_total CHECK (total >= 0) NOT VALID;\n")
    validated = "ALTER TABLE orders VALIDATE CONSTRAINT ck_orders_total;"
    # GIVEN both in one revision (one transaction): the scan runs under the ADD's lock
    findings = analyse({REV: rendered(added + validated)})
    assert [(f.rule, f.subject) for f in findings] == [
        ("validate_in_same_transaction", "ck_orders_total")]
    assert "later revision" in findings[0].message
    # GIVEN the validation in the next revision: nothing to report
    assert analyse({REV: rendered(added), "b2c3d4e5f6a7": rendered(
        validated, revision="b2c3d4e5f6a7", down=REV)}) == ()
