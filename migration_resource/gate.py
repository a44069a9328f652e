"""The destructive and locking change gate: what in the pending revisions' SQL is risky.

Pure: no database, no AWS. The engine renders each pending revision's SQL with Alembic's offline
mode (or captures what a trial run in a scratch database executed) and passes it here;
`analyse` parses it with pglast (PostgreSQL's own parser) and reports two kinds of findings,
after the rules squawk and strong_migrations enforce:

- destructive: loses data or breaks the code still running during the deploy (DROP TABLE,
  DROP COLUMN, DROP SCHEMA, TRUNCATE, column type changes, renames, DROP TYPE/DOMAIN/
  EXTENSION/COLLATION with CASCADE, which drops every column using it); a DELETE of rows from
  before the deploy whatever its WHERE; an UPDATE or an upsert's DO UPDATE that overwrites a
  column from before the deploy (filling a column the same deploy added, or only rows where
  it IS NULL, is a backfill); MERGE; and, failing closed, what the gate cannot see into: DO
  blocks, CALL, EXECUTE, a SELECT calling a function that may do anything, and SQL the parser
  cannot read. In production these block the deploy unless approved.
- locking: holds a lock that blocks the application, or fails on existing rows (CREATE INDEX,
  DROP INDEX and REINDEX without CONCURRENTLY, ADD CONSTRAINT UNIQUE/PRIMARY KEY without USING
  INDEX, a new column whose value is computed per row (a volatile default, serial, identity,
  stored generated), NOT NULL without a default, SET NOT NULL, FOREIGN KEY/CHECK without NOT
  VALID, lock_timeout set to wait forever), or fails for sure (CONCURRENTLY inside a
  transaction block), or does not do what it says (CREATE TABLE IF NOT EXISTS of a table the
  database holds). These only warn, each naming the safe pattern.
- note: a revision that sets its own statement_timeout or lock_timeout: it keeps them for
  itself only (the apply restores the engine's before the next revision).

A change to a table created earlier in the same batch is not reported: the table holds no rows
from before the deploy and no running code uses it yet (this is what lets a fresh database replay
the whole history). Likewise for a type, domain, collation or extension created earlier in the
batch, unless with IF NOT EXISTS, which may have found one from before. Alembic's own bookkeeping
on alembic_version, and the backfill helper's on its progress table, is never reported.

A destructive finding is approved by the deploy (AllowDestructive / --allow-destructive) or by
a line in its revision file naming it and why:

    # migration-approve: drop_column users.name -- unused since v41

(`Approval`; the refusal prints the line to add). Nothing else approves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pglast import ast
from pglast.enums import (
    A_Expr_Kind,
    AlterTableType,
    BoolExprType,
    ConstrType,
    DiscardMode,
    DropBehavior,
    NullTestType,
    ObjectType,
    OnConflictAction,
    ReindexObjectType,
    TransactionStmtKind,
    VariableSetKind,
)
from pglast.parser import ParseError, parse_sql, scan, split
from pglast.visitors import Visitor

from migration_resource.online import PROGRESS_DROP_WHEN_EMPTY, PROGRESS_TABLE

DESTRUCTIVE = "destructive"
LOCKING = "locking"
NOTE = "note"
STAGES = ("production", "development")
APPROVAL = "# migration-approve:"
STATEMENT_LIMIT = 200
REFUSAL_LIMIT = 200
PARSER_MESSAGE_LIMIT = 120

_APPROVAL_LINE = re.compile(r"^[ \t]*#[ \t]*migration-approve[ \t]*:(?P<body>[^\n]*)$",
                            re.I | re.M)
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_LINE_COMMENT = re.compile(r"--[^\n]*")
_RENAMED_OBJECTS = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_COLUMN,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_FOREIGN_TABLE,
    }
)
_NOT_NULL_KINDS = frozenset({ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY})
# Any of these gives existing rows a value, so NOT NULL holds at once.
_VALUE_KINDS = frozenset(
    {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED}
)
# Their CASCADE drops every table column declared with them, data and all. (A function's
# CASCADE drops triggers, defaults and generated columns, whose data can be computed again.)
_CASCADE_RULES = {
    ObjectType.OBJECT_TYPE: "drop_type_cascade",
    ObjectType.OBJECT_DOMAIN: "drop_domain_cascade",
    ObjectType.OBJECT_EXTENSION: "drop_extension_cascade",
    ObjectType.OBJECT_COLLATION: "drop_collation_cascade",
}
# Constraints that build an index under ACCESS EXCLUSIVE unless given one (USING INDEX).
_INDEX_RULES = {ConstrType.CONSTR_UNIQUE: "add_unique_constraint",
                ConstrType.CONSTR_PRIMARY: "add_primary_key"}
# Domains are types: one namespace, so CREATE DOMAIN d and DROP TYPE d CASCADE meet.
_NAMESPACE = {ObjectType.OBJECT_DOMAIN: ObjectType.OBJECT_TYPE}
# Built-ins a migration calls in a SELECT of no table, which read or set sequence, session
# or lock state and change no row: everything else called that way is opaque.
_READING_FUNCTIONS = frozenset({
    "setval", "nextval", "currval", "lastval", "set_config", "current_setting",
    "pg_advisory_lock", "pg_advisory_unlock", "pg_advisory_xact_lock", "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock", "pg_advisory_unlock_all", "pg_sleep", "now",
    "clock_timestamp", "statement_timestamp", "transaction_timestamp", "version",
    "current_database", "current_schema", "current_user", "session_user", "txid_current",
    "pg_current_xact_id", "to_regclass", "to_regtype", "has_table_privilege",
    "pg_get_serial_sequence", "pg_backend_pid", "gen_random_uuid", "random",
    # scalar and set-returning built-ins that compute values and change nothing
    "lower", "upper", "md5", "to_char", "to_date", "to_timestamp", "to_number", "concat",
    "concat_ws", "length", "format", "replace", "substring", "substr", "trim", "btrim",
    "ltrim", "rtrim", "split_part", "left", "right", "round", "abs", "ceil", "floor",
    "date_trunc", "date_part", "age", "make_date", "jsonb_build_object", "json_build_object",
    "jsonb_build_array", "json_build_array", "array_length", "cardinality", "generate_series",
    "unnest", "jsonb_array_elements", "json_array_elements", "jsonb_each", "json_each",
    "regexp_replace", "regexp_split_to_table", "string_to_array", "uuid_generate_v4",
})
# The body of the one DO block the product sends itself (`online.backfill`'s clean-up).
_HELPER_CLEANUP_BODY = " ".join(PROGRESS_DROP_WHEN_EMPTY.split("$$")[1].split())
# Functions a column DEFAULT may call without rewriting the table when the column is added:
# PostgreSQL computes a stable or immutable default once and stores it in the catalogue. Any
# other function (clock_timestamp, random, gen_random_uuid, nextval, one of the application's)
# is taken to be volatile: every row gets its own value, written by a rewrite of the table.
_NON_VOLATILE_FUNCTIONS = frozenset({
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "version",
    "current_database", "current_schema", "lower", "upper", "md5", "to_char", "to_date",
    "to_timestamp", "to_number", "concat", "concat_ws", "length", "format", "replace",
    "substring", "substr", "trim", "btrim", "ltrim", "rtrim", "split_part", "left", "right",
    "round", "abs", "ceil", "floor", "date_trunc", "date_part", "make_date", "make_interval",
    "jsonb_build_object", "json_build_object", "jsonb_build_array", "json_build_array",
    "to_jsonb", "to_json", "array_length", "cardinality", "timezone", "extract",
    "position", "overlay", "localtimestamp", "current_date", "coalesce", "nullif",
    "greatest", "least", "make_timestamp", "make_timestamptz", "date", "int4", "int8",
    "numeric", "text", "jsonb", "json",
})
# Expression nodes a default may hold and stay computed once (with the functions above).
_CONSTANT_NODES = (ast.A_Const, ast.TypeCast, ast.TypeName, ast.String, ast.Integer, ast.Float,
                   ast.Boolean, ast.BitString, ast.A_Expr, ast.BoolExpr, ast.A_ArrayExpr,
                   ast.SQLValueFunction, ast.FuncCall, ast.CoalesceExpr, ast.NullTest,
                   ast.CaseExpr, ast.CaseWhen, ast.MinMaxExpr, ast.CollateClause,
                   ast.A_Indirection, ast.A_Indices, ast.BooleanTest)
# Column types that are a sequence's nextval() default: added to a table, a rewrite.
_SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4",
                           "serial8"})
# A duration setting's value, and its unit in milliseconds (PostgreSQL's, no unit: ms).
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>us|ms|s|min|h|d|)", re.I)
_MILLISECONDS = {"us": 0.001, "ms": 1.0, "": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0,
                 "d": 86400000.0}
# The session's guards the engine sets; a revision that changes them has them for itself.
_GUARDS = ("lock_timeout", "statement_timeout")
# ON DELETE CASCADE, SET NULL, SET DEFAULT: a delete in the referenced table changes rows here.
_CHANGING_ACTIONS = frozenset({"c", "n", "d"})
# A comparison's value when both sides are the same constant.
_WHEN_EQUAL = {"=": True, "<=": True, ">=": True, "<>": False, "<": False, ">": False}

_KIND_OF_RULE = {
    "drop_table": DESTRUCTIVE,
    "drop_column": DESTRUCTIVE,
    "drop_schema": DESTRUCTIVE,
    "truncate": DESTRUCTIVE,
    "alter_column_type": DESTRUCTIVE,
    "delete_without_where": DESTRUCTIVE,
    "delete_rows": DESTRUCTIVE,
    "update_overwrites": DESTRUCTIVE,
    "rename": DESTRUCTIVE,
    # What the gate cannot see into: it may do anything, so it is judged as if it did.
    "do_block": DESTRUCTIVE,
    "call_procedure": DESTRUCTIVE,
    "execute_prepared": DESTRUCTIVE,
    "function_call": DESTRUCTIVE,
    "merge": DESTRUCTIVE,
    "drop_owned": DESTRUCTIVE,
    "create_rule": DESTRUCTIVE,
    "trigger": DESTRUCTIVE,
    "unparsed": DESTRUCTIVE,
    "not_previewed": DESTRUCTIVE,
    "drop_type_cascade": DESTRUCTIVE,
    "drop_domain_cascade": DESTRUCTIVE,
    "drop_extension_cascade": DESTRUCTIVE,
    "drop_collation_cascade": DESTRUCTIVE,
    "create_index_not_concurrently": LOCKING,
    "add_column_not_null_without_default": LOCKING,
    "set_not_null": LOCKING,
    "foreign_key_without_not_valid": LOCKING,
    "check_without_not_valid": LOCKING,
    "add_unique_constraint": LOCKING,
    "add_primary_key": LOCKING,
    "drop_index_not_concurrently": LOCKING,
    "reindex_not_concurrently": LOCKING,
    "add_column_rewrites_table": LOCKING,
    "concurrently_in_transaction": LOCKING,
    "create_table_exists": LOCKING,
    "lock_timeout_disabled": LOCKING,
    "validate_in_same_transaction": LOCKING,
    "session_timeout": NOTE,
}

_MESSAGES = {
    "drop_table": "DROP TABLE {0} deletes it with every row, recoverable only from a snapshot; "
    "stop using it in code first and drop it in a later release.",
    "drop_column": "Dropping column {0} deletes its data and breaks code still reading it; "
    "stop using the column in code first and drop it in a later release.",
    "drop_table_cascade": "DROP TABLE {0} CASCADE deletes it with every row, and also the views "
    "and foreign keys that depend on it, recoverable only from a snapshot; stop using it in code "
    "first, and in a later release drop what depends on it, then the table without CASCADE.",
    "drop_schema": "DROP SCHEMA {0} deletes the schema and everything in it; make sure nothing "
    "uses it, and drop its objects one by one in a later release.",
    "drop_schema_cascade": "DROP SCHEMA {0} CASCADE deletes the schema and everything in it, and "
    "also what depends on it elsewhere (views, foreign keys, columns of its types); make sure "
    "nothing uses it, and drop its objects one by one in a later release.",
    "truncate": "TRUNCATE {0} deletes every row under an exclusive lock; delete only the rows "
    "you mean with DELETE ... WHERE, in batches.",
    "alter_column_type": "Changing the type of {0} can fail on or lose existing values, may "
    "rewrite the table under an exclusive lock and breaks running code; add a new column, "
    "backfill it, then switch.",
    "delete_without_where": "DELETE FROM {0} without WHERE deletes every row; add a WHERE "
    "clause naming the rows to delete.",
    "delete_where_always_true": "DELETE FROM {0} with a WHERE that is always true deletes every "
    "row; make the WHERE clause name the rows to delete.",
    "delete_rows": "DELETE FROM {0} deletes rows that existed before this deploy, recoverable "
    "only from a snapshot; approve it once you know which rows and why.",
    "update_overwrites": "UPDATE overwrites values of {0}, a column that existed before this "
    "deploy, recoverable only from a snapshot; fill a new column instead, or only rows where "
    "it IS NULL, or approve it once you know which values and why.",
    "rename": "Renaming {0} breaks the code still running with the old name during the deploy; "
    "add the new name alongside, move the code, then drop the old name in a later release.",
    "drop_type_cascade": "DROP TYPE {0} CASCADE also drops every column of that type, with its "
    "data, recoverable only from a snapshot; drop or convert those columns in their own reviewed "
    "statements first, then drop the type without CASCADE, which fails while anything uses it.",
    "drop_domain_cascade": "DROP DOMAIN {0} CASCADE also drops every column of that domain, with "
    "its data, recoverable only from a snapshot; convert those columns to the domain's base type "
    "first (ALTER COLUMN ... TYPE), then drop the domain without CASCADE, which fails while "
    "anything uses it.",
    "drop_extension_cascade": "DROP EXTENSION {0} CASCADE also drops everything using it, "
    "including every column of its types (e.g. citext) with its data, recoverable only from a "
    "snapshot; convert or drop those columns and objects in their own reviewed statements "
    "first, then drop the extension without CASCADE, which fails while anything uses it.",
    "drop_collation_cascade": "DROP COLLATION {0} CASCADE also drops every column using it, "
    "with its data, recoverable only from a snapshot; move those columns to another collation "
    "first (ALTER COLUMN ... TYPE ... COLLATE), then drop the collation without CASCADE, which "
    "fails while anything uses it.",
    "create_index_not_concurrently": "CREATE INDEX on existing table {0} blocks writes to it "
    "while the index builds; use CREATE INDEX CONCURRENTLY (postgresql_concurrently=True "
    "inside an autocommit_block()).",
    "add_column_not_null_without_default": "Adding NOT NULL column {0} without a DEFAULT fails "
    "when the table has rows; add a DEFAULT, or add it nullable, backfill, then set NOT NULL.",
    "set_not_null": "SET NOT NULL on {0} scans the whole table under an ACCESS EXCLUSIVE lock; "
    "add a CHECK (... IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL.",
    "foreign_key_without_not_valid": "Adding foreign key {0} checks every row while blocking "
    "writes to both tables; add it NOT VALID (postgresql_not_valid=True), then VALIDATE "
    "CONSTRAINT in a later step.",
    "check_without_not_valid": "Adding CHECK constraint {0} scans every row under an ACCESS "
    "EXCLUSIVE lock; add it NOT VALID (postgresql_not_valid=True), then VALIDATE CONSTRAINT "
    "in a later step.",
    "add_unique_constraint": "ADD CONSTRAINT {0} UNIQUE builds its index on an existing table "
    "under an ACCESS EXCLUSIVE lock, blocking reads and writes until it is built; build the "
    "index first with CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING "
    "INDEX (migration_resource.online.add_unique_constraint does both).",
    "add_primary_key": "ADD PRIMARY KEY {0} builds its index on an existing table under an "
    "ACCESS EXCLUSIVE lock, blocking reads and writes until it is built (and scans it to set "
    "its columns NOT NULL, when they are not); make the columns NOT NULL first (a CHECK ... "
    "IS NOT NULL NOT VALID, VALIDATE, SET NOT NULL), build the index with CREATE UNIQUE INDEX "
    "CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX "
    "(migration_resource.online.add_unique_constraint(..., primary_key=True)).",
    "drop_index_not_concurrently": "DROP INDEX {0} takes an ACCESS EXCLUSIVE lock on its "
    "table: it waits behind every running query on it, and every new query waits behind it; "
    "use DROP INDEX CONCURRENTLY (migration_resource.online.drop_index_concurrently).",
    "reindex_not_concurrently": "REINDEX {0} blocks writes to the table, and reads that use "
    "the index, while it rebuilds; use REINDEX ... CONCURRENTLY outside the revision's "
    "transaction (migration_resource.online.reindex_concurrently).",
    "add_column_rewrites_table": "Adding column {0} gives each row its own value (a volatile "
    "DEFAULT such as clock_timestamp() or gen_random_uuid(), serial, identity or a stored "
    "generated column), so PostgreSQL rewrites the whole table under an ACCESS EXCLUSIVE lock "
    "that blocks reads and writes; add it without a default or with a constant one, fill it "
    "in batches (migration_resource.online.backfill), then set the default for new rows.",
    "concurrently_in_transaction": "{0} cannot run inside a transaction block: PostgreSQL "
    "refuses it and the deploy fails at this revision; run it inside `with "
    "op.get_context().autocommit_block():` (the online helpers do).",
    "create_table_exists": "CREATE TABLE IF NOT EXISTS {0} finds the table from before this "
    "deploy and does nothing: its columns may not be the ones this revision declares, and "
    "what the deploy does to it next acts on its rows; drop IF NOT EXISTS, or stamp past this "
    "revision if the table is already right.",
    "lock_timeout_disabled": "{0} makes this revision's statements wait for table locks "
    "without limit: behind one long transaction an ALTER TABLE queues, and every query on "
    "that table queues behind it; leave lock_timeout to the engine (MIGRATION_LOCK_TIMEOUT), "
    "or set a bounded one.",
    "validate_in_same_transaction": "VALIDATE CONSTRAINT {0} in the transaction that added it "
    "NOT VALID scans every row while that ADD's ACCESS EXCLUSIVE lock is still held, blocking "
    "reads and writes; validate it in a later revision "
    "(migration_resource.online.validate_constraint).",
    "session_timeout": "{0} holds for this revision only; the engine sets its own "
    "statement_timeout (MIGRATION_TIMEOUT) and lock_timeout (MIGRATION_LOCK_TIMEOUT) again "
    "before the next revision.",
    "unparsed": "The SQL parser could not read this ({0}); it may do anything, so it counts "
    "as destructive: check it by hand and approve it.",
    "do_block": "A DO block runs code the gate cannot see into{0}; it may drop or overwrite "
    "anything, so it counts as destructive: check it by hand and approve it, or write its "
    "statements out.",
    "call_procedure": "CALL {0} runs a procedure the gate cannot see into; it may drop or "
    "overwrite anything, so it counts as destructive: check it by hand and approve it.",
    "execute_prepared": "EXECUTE {0} runs a prepared statement the gate cannot see; it counts "
    "as destructive: check it by hand and approve it, or write the statement out.",
    "function_call": "SELECT calls {0}, a function the gate cannot see into (it may run DDL or "
    "change rows); it counts as destructive: check it by hand and approve it.",
    "merge": "MERGE INTO {0} may update and delete rows that existed before this deploy; it "
    "counts as destructive: check it by hand and approve it.",
    "drop_owned": "DROP OWNED drops every object the role owns, tables and data included; "
    "drop what you mean one by one.",
    "create_rule": "A rule on {0} rewrites every later statement on it (DO INSTEAD ... can "
    "delete or overwrite anything); it counts as destructive: check it by hand and approve it.",
    "trigger": "This data change on {0} fires a trigger the same deploy created, whose "
    "function the gate cannot see into; it counts as destructive: check it and approve it.",
}

# A message variant reported under its rule: the rule names what happens, the message how.
_RULE_OF_VARIANT = {
    "drop_table_cascade": "drop_table",
    "drop_schema_cascade": "drop_schema",
    "delete_where_always_true": "delete_without_where",
}

# (schema, table): unqualified names are taken to be in public, Alembic's default search_path.
_Table = tuple[str, str]


@dataclass(frozen=True)
class Finding:
    revision: str
    kind: str  # "destructive" or "locking"
    rule: str
    statement: str  # whitespace-collapsed, cut to about STATEMENT_LIMIT characters
    message: str
    # what it acts on, as an approval line names it: `orders`, `users.name`, `a, b`, or ""
    subject: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "revision": self.revision,
            "kind": self.kind,
            "rule": self.rule,
            "subject": self.subject,
            "statement": self.statement,
            "message": self.message,
        }



@dataclass(frozen=True)
class GateDecision:
    findings: tuple[Finding, ...]
    blocking: tuple[Finding, ...]  # destructive findings not allowed in this stage
    warnings: tuple[Finding, ...]  # everything else that was found

    def refusal(self) -> str | None:
        """What blocks, in a few words (`r2: drop_column (+1 more) blocked in production`),
        or None when nothing does; `next_step` says how to approve it."""
        if not self.blocking:
            return None
        first = self.blocking[0]
        more = len(self.blocking) - 1
        also = f" (+{more} more)" if more else ""
        tail = " blocked in production"
        # Revision ids are free text in Alembic: cut a long one.
        room = REFUSAL_LIMIT - len(tail) - len(also) - len(first.rule) - 2
        revision = first.revision if len(first.revision) <= room else first.revision[: room - 3]
        if revision != first.revision:
            revision += "..."
        return f"{revision}: {first.rule}{also}{tail}"

    def next_step(self) -> str:
        """How to approve the first blocking finding: the deploy's flag, or the exact line."""
        first = self.blocking[0]
        # Never cut: pasted into the revision file, the line must name the whole subject.
        line = f"{APPROVAL} {first.rule} {first.subject}".rstrip() + " -- <why>"
        return f"Approve: AllowDestructive (--allow-destructive), or `{line}` in its file"


class ApprovalLineError(ValueError):
    """A revision file's approval line cannot be read; the message says how to write it."""


@dataclass(frozen=True)
class Approval:
    """One `# migration-approve: <what> [<subject>] -- <why>` line of a revision file.

    `what` is a finding's rule (`drop_column`, `do_block`) or the word it starts with (`drop`,
    `delete`, `update`, `alter`); `subject` is what the finding names (`orders`,
    `users.name`), left out for what names nothing (`do_block`, `not_previewed`)."""

    what: str
    subject: str
    why: str

    def approves(self, finding: Finding) -> bool:
        rule = finding.rule
        return (finding.kind == DESTRUCTIVE
                and (rule == self.what or rule.startswith(self.what + "_"))
                and _subjects(finding.subject) <= _subjects(self.subject))


def approvals_in(revision: str, file_text: str) -> tuple[Approval, ...]:
    """The approval lines of a revision file; ApprovalLineError for one without a reason."""
    found: list[Approval] = []
    for match in _APPROVAL_LINE.finditer(file_text):
        body, _, why = match["body"].partition(" --")
        words = body.split(None, 1)
        if not words or not why.strip():
            raise ApprovalLineError(
                f"revision {revision}: its `{APPROVAL}` line must name what it approves and "
                f"why, e.g. `{APPROVAL} drop_column users.name -- unused since v41`")
        found.append(Approval(what=words[0].lower(),
                              subject=words[1].strip() if len(words) > 1 else "",
                              why=why.strip()))
    return tuple(found)


def _subjects(subject: str) -> frozenset[str]:
    """`public.orders, Users.name` → {orders, Users.name}: the names an approval compares, as
    PostgreSQL does (a quoted "Users" is not users)."""
    names = (part.strip() for part in subject.split(","))
    return frozenset(name.removeprefix("public.") for name in names if name)


def _finding(revision: str, message: str, statement: str, subject: str,
             shown: str | None = None) -> Finding:
    """`subject` is what an approval names; `shown` what the message says, when not that."""
    rule = _RULE_OF_VARIANT.get(message, message)
    return Finding(
        revision=revision,
        kind=_KIND_OF_RULE[rule],
        rule=rule,
        statement=statement,
        message=_MESSAGES[message].format(subject if shown is None else shown),
        subject=subject,
    )


@dataclass
class _Created:
    """What was created earlier in the batch: no rows or running code depend on it."""

    tables: set[_Table] = field(default_factory=set)
    schemas: set[str] = field(default_factory=set)
    # (kind, schema, name) of types, domains, collations; extensions have no schema.
    objects: set[tuple[ObjectType, str, str]] = field(default_factory=set)
    # (schema, table, column) added to a table from before: it holds no values to overwrite
    columns: set[tuple[str, str, str]] = field(default_factory=set)
    # (schema, name) of functions and procedures: what calling one does is not known before
    functions: set[_Table] = field(default_factory=set)
    # tables given a trigger by this deploy: a data change there runs its function
    triggers: set[_Table] = field(default_factory=set)
    # (schema, name) of indexes built on a table of this deploy: dropping one locks nothing
    indexes: set[_Table] = field(default_factory=set)

    def is_new_column(self, table: _Table, column: str) -> bool:
        return self.has(table) or (*table, column) in self.columns

    def has(self, table: _Table) -> bool:
        return table in self.tables or table[0] in self.schemas

    def has_object(self, kind: ObjectType, name: _Table) -> bool:
        return (_NAMESPACE.get(kind, kind), *name) in self.objects or name[0] in self.schemas

    def _add(self, kind: ObjectType, names: object) -> None:
        self.objects.add((_NAMESPACE.get(kind, kind), *_object_name(kind, names)))

    def record(self, stmt: ast.Node, live: LiveTables | None = None) -> None:
        table = _new_table(stmt, live)
        if table is not None:
            self.tables.add(table)
        elif isinstance(stmt, ast.CreateSchemaStmt) and stmt.schemaname:
            if not stmt.if_not_exists:
                self.schemas.add(stmt.schemaname)
        elif (
            isinstance(stmt, ast.RenameStmt)
            and stmt.renameType == ObjectType.OBJECT_TABLE
            and stmt.relation is not None
            and stmt.newname
            and self.has(_table(stmt.relation))
        ):
            self.tables.add((_table(stmt.relation)[0], stmt.newname))
        elif isinstance(stmt, ast.CreateEnumStmt | ast.CreateRangeStmt):
            self._add(ObjectType.OBJECT_TYPE, stmt.typeName)
        elif isinstance(stmt, ast.CompositeTypeStmt) and stmt.typevar is not None:
            self.objects.add((ObjectType.OBJECT_TYPE, *_table(stmt.typevar)))
        elif isinstance(stmt, ast.CreateDomainStmt):
            self._add(ObjectType.OBJECT_DOMAIN, stmt.domainname)
        elif (
            isinstance(stmt, ast.DefineStmt)
            and stmt.kind in (ObjectType.OBJECT_TYPE, ObjectType.OBJECT_COLLATION)
            and not stmt.if_not_exists
        ):
            self._add(stmt.kind, stmt.defnames)
        elif isinstance(stmt, ast.CreateExtensionStmt) and not stmt.if_not_exists:
            self.objects.add((ObjectType.OBJECT_EXTENSION, "", stmt.extname or ""))
        else:
            self._record_columns_and_functions(stmt)

    def _record_columns_and_functions(self, stmt: ast.Node) -> None:
        if isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
            table = _table(stmt.relation)
            for cmd in stmt.cmds or ():
                if isinstance(cmd, ast.AlterTableCmd):
                    self._record_alter(table, cmd)
        elif isinstance(stmt, ast.CreateFunctionStmt):
            self.functions.add(_dropped_table(tuple(stmt.funcname or ())))
        elif isinstance(stmt, ast.CreateTrigStmt) and stmt.relation is not None:
            self.triggers.add(_table(stmt.relation))
        elif isinstance(stmt, ast.IndexStmt) and stmt.relation is not None and stmt.idxname:
            table = _table(stmt.relation)
            if self.has(table):
                self.indexes.add((table[0], stmt.idxname))
        elif isinstance(stmt, ast.AlterObjectSchemaStmt) and stmt.relation is not None and (
                stmt.newschema):
            table = _table(stmt.relation)
            # the schema now holds a table from before: dropping it loses rows
            self.schemas.discard(stmt.newschema)
            if table in self.tables:
                self.tables.add((stmt.newschema, table[1]))

    def _record_alter(self, table: _Table, cmd: ast.AlterTableCmd) -> None:
        """What an ALTER TABLE changes in what counts as new: a column it adds, and a new
        table that rows from before are now reached through (a parent by INHERIT or ATTACH
        PARTITION, a table whose deletes now cascade to them)."""
        if (cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef)
                and cmd.def_.colname and not cmd.missing_ok):  # IF NOT EXISTS: may have values
            self.columns.add((*table, cmd.def_.colname))
        elif cmd.subtype == AlterTableType.AT_AddInherit and isinstance(cmd.def_, ast.RangeVar):
            if not self.has(table):
                self.tables.discard(_table(cmd.def_))
        elif cmd.subtype == AlterTableType.AT_AttachPartition and isinstance(
                cmd.def_, ast.PartitionCmd) and isinstance(cmd.def_.name, ast.RangeVar):
            if not self.has(_table(cmd.def_.name)):
                self.tables.discard(table)
        elif (cmd.subtype == AlterTableType.AT_AddConstraint
              and isinstance(cmd.def_, ast.Constraint)
              and cmd.def_.contype == ConstrType.CONSTR_FOREIGN
              and cmd.def_.fk_del_action in _CHANGING_ACTIONS
              and isinstance(cmd.def_.pktable, ast.RangeVar) and not self.has(table)):
            self.tables.discard(_table(cmd.def_.pktable))


@dataclass(frozen=True)
class LiveTables:
    """Every relation the database held before the deploy (tables, views, sequences, indexes,
    foreign tables: CREATE TABLE IF NOT EXISTS skips on any of them), as (schema, name), and
    the schema unqualified names resolve to: what tells a CREATE TABLE IF NOT EXISTS that
    creates a table from one that finds a relation from before, with its rows."""

    relations: frozenset[tuple[str, str]]
    current_schema: str = "public"

    def exists(self, table: _Table) -> bool | None:
        """Whether a relation of that name was there; None when unknown: the gate reads an
        unqualified name as public's, which it is only when public comes first."""
        if table[0] == "public" and self.current_schema != "public":
            return None
        return table in self.relations


def _new_table(stmt: ast.Node, live: LiveTables | None = None) -> _Table | None:
    """The table a statement creates; with IF NOT EXISTS only when the database is known not
    to have held it (`live`): else it may have found one from before, with its rows."""
    if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
        made = _table(stmt.relation)
        # a temporary table is always a new one, and it hides a table of that name
        temporary = stmt.relation.relpersistence == "t"
        return made if temporary or _creates(bool(stmt.if_not_exists), made, live) else None
    if isinstance(stmt, ast.CreateTableAsStmt) and stmt.into and stmt.into.rel:
        made = _table(stmt.into.rel)
        return made if _creates(bool(stmt.if_not_exists), made, live) else None
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause and stmt.intoClause.rel:
        return _table(stmt.intoClause.rel)  # SELECT ... INTO new_table
    return None


def _creates(if_not_exists: bool, table: _Table, live: LiveTables | None) -> bool:
    return not if_not_exists or (live is not None and live.exists(table) is False)


def analyse(
    sql_by_revision: Mapping[str, str], *, version_table: str = "alembic_version",
    live: LiveTables | None = None,
) -> tuple[Finding, ...]:
    """Findings in revision order, then statement order, for the SQL each revision would run
    (`live`: the tables the database holds, when read)."""
    judge = StatementJudge(version_table, live=live)
    return tuple(finding for revision, sql in sql_by_revision.items()
                 for finding in judge.findings(revision, sql))


@dataclass
class StatementJudge:
    """The gate's rules over statements in the order they run, remembering what was created.

    `analyse` feeds it a plan's SQL; the real apply feeds it each statement before sending it
    (`migration_resource.statement_guard`).
    """

    version_table: str = "alembic_version"
    created: _Created = field(default_factory=_Created)
    live: LiveTables | None = None
    # Inside BEGIN ... COMMIT of the SQL judged (offline SQL writes them out; the apply's
    # driver does not send its BEGIN, so there PostgreSQL itself refuses CONCURRENTLY).
    in_transaction: bool = False
    # (schema, table, constraint) added NOT VALID in the transaction running now, and whose
    not_valid: set[tuple[str, str, str]] = field(default_factory=set)
    revision: str = ""

    def findings(self, revision: str, sql: str) -> list[Finding]:
        found: list[Finding] = []
        if revision != self.revision:  # each revision runs in a transaction of its own
            self.revision, self.not_valid = revision, set()
        for text, parsed in _statements(sql):
            if isinstance(parsed, ParseError):
                reason = _cut(" ".join(str(parsed).split()), PARSER_MESSAGE_LIMIT)
                found.append(_finding(revision, "unparsed", _display(text), "", shown=reason))
                continue
            for raw in parsed:
                if raw.stmt is None:
                    continue
                for rule, subject, shown in self._judged(raw.stmt):
                    found.append(_finding(revision, rule, _display(text), subject, shown))
                self.created.record(raw.stmt, self.live)
        return found

    def _judged(self, stmt: ast.Node) -> Iterator[tuple[str, str, str | None]]:
        """(rule, subject, what the message shows when not the subject) for one statement."""
        if isinstance(stmt, ast.TransactionStmt):
            self.in_transaction = _opens_transaction(stmt, self.in_transaction)
            self.not_valid = set()
            return
        if isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
            yield from self._validated_at_once(stmt)
        if self.in_transaction:
            refused = _outside_transaction_only(stmt)
            if refused is not None:
                yield "concurrently_in_transaction", refused, None
        if isinstance(stmt, ast.VariableSetStmt):
            yield from _check_guard(stmt)
            return
        if isinstance(stmt, ast.DiscardStmt) and stmt.target == DiscardMode.DISCARD_ALL:
            yield "lock_timeout_disabled", "lock_timeout", "DISCARD ALL"
            return
        if isinstance(stmt, ast.SelectStmt):
            yield from _guard_calls(stmt)
        found = self._found_by_if_not_exists(stmt)
        if found is not None:
            yield "create_table_exists", _name(found), None
        checked = (_check_ctes(stmt, self.created)
                   if _is_bookkeeping(stmt, self.version_table) else _check(stmt, self.created))
        for rule, subject in checked:
            yield rule, subject, None


    def _found_by_if_not_exists(self, stmt: ast.Node) -> _Table | None:
        """The relation from before the deploy that a CREATE TABLE [AS] IF NOT EXISTS finds."""
        relation = None
        if isinstance(stmt, ast.CreateStmt) and stmt.if_not_exists:
            relation = stmt.relation
        elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.if_not_exists and stmt.into:
            relation = stmt.into.rel
        if relation is None or relation.relpersistence == "t" or self.live is None:
            return None
        table = _table(relation)
        return table if self.live.exists(table) and not self.created.has(table) else None

    def _validated_at_once(self, stmt: ast.AlterTableStmt) -> Iterator[tuple[str, str, None]]:
        """VALIDATE CONSTRAINT of one added NOT VALID in the same transaction."""
        assert stmt.relation is not None
        table = _table(stmt.relation)
        for cmd in stmt.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            if (cmd.subtype == AlterTableType.AT_AddConstraint
                    and isinstance(cmd.def_, ast.Constraint) and cmd.def_.skip_validation
                    and cmd.def_.conname):
                self.not_valid.add((*table, cmd.def_.conname))
            elif (cmd.subtype == AlterTableType.AT_ValidateConstraint and cmd.name
                  and (*table, cmd.name) in self.not_valid and not self.created.has(table)):
                yield "validate_in_same_transaction", cmd.name, None


def _opens_transaction(stmt: ast.TransactionStmt, now: bool) -> bool:
    """Whether a transaction block is open after BEGIN, COMMIT, ROLLBACK or a SAVEPOINT."""
    kind = TransactionStmtKind
    if stmt.kind in (kind.TRANS_STMT_BEGIN, kind.TRANS_STMT_START):
        return True
    if stmt.kind in (kind.TRANS_STMT_COMMIT, kind.TRANS_STMT_ROLLBACK,
                     kind.TRANS_STMT_PREPARE):
        return False
    return now


def _outside_transaction_only(stmt: ast.Node) -> str | None:
    """What PostgreSQL refuses to run inside a transaction block, as the message names it."""
    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent:
        return f"CREATE INDEX CONCURRENTLY {stmt.idxname or ''}".rstrip()
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        names = ", ".join(_name(_dropped_table(obj)) for obj in stmt.objects or ())
        return f"DROP INDEX CONCURRENTLY {names}"
    if isinstance(stmt, ast.ReindexStmt) and (_concurrent_reindex(stmt) or stmt.kind in (
            ReindexObjectType.REINDEX_OBJECT_SCHEMA, ReindexObjectType.REINDEX_OBJECT_SYSTEM,
            ReindexObjectType.REINDEX_OBJECT_DATABASE)):
        concurrently = " CONCURRENTLY" if _concurrent_reindex(stmt) else ""
        kind = ReindexObjectType(stmt.kind or 0).name.removeprefix("REINDEX_OBJECT_")
        return f"REINDEX {kind}{concurrently} {_reindexed(stmt)}"
    if isinstance(stmt, ast.AlterTableStmt) and any(
            isinstance(cmd, ast.AlterTableCmd) and isinstance(cmd.def_, ast.PartitionCmd)
            and cmd.def_.concurrent for cmd in stmt.cmds or ()):
        return "DETACH PARTITION CONCURRENTLY"
    if isinstance(stmt, ast.VacuumStmt):
        return "VACUUM" if stmt.is_vacuumcmd else None
    return None


def _check_guard(stmt: ast.VariableSetStmt) -> Iterator[tuple[str, str, str | None]]:
    """SET, RESET of the engine's guards: lock_timeout 0 (or the server's default, 0 unless
    configured) waits forever; anything else holds for the revision alone."""
    shown = _setting_shown(stmt)
    if stmt.kind == VariableSetKind.VAR_RESET_ALL:
        yield "lock_timeout_disabled", "lock_timeout", shown
        return
    if stmt.name not in _GUARDS:
        return
    zero = stmt.kind in (VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_RESET) or (
        stmt.kind == VariableSetKind.VAR_SET_VALUE and _is_zero(stmt.args))
    if stmt.name == "lock_timeout" and zero:
        yield "lock_timeout_disabled", "lock_timeout", shown
    else:
        yield "session_timeout", stmt.name, shown


def _guard_calls(stmt: ast.SelectStmt) -> Iterator[tuple[str, str, str | None]]:
    """`SELECT set_config('lock_timeout', '0', false)`: a SET by another name."""
    found: list[tuple[str, str, str | None]] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
            name = _qualified_names(tuple(node.funcname or ()))
            args = node.args or ()
            if not name or name[-1].lower() != "set_config" or len(args) < 2:
                return
            setting = _constant(args[0])
            if not isinstance(setting, str) or setting.lower() not in _GUARDS:
                return
            shown = f"set_config('{setting}', ...)"
            value = _constant(args[1])
            zero = isinstance(value, str | Decimal) and _zero_text(str(value))
            if setting.lower() == "lock_timeout" and (zero or value is None):
                found.append(("lock_timeout_disabled", "lock_timeout", shown))
            else:
                found.append(("session_timeout", setting.lower(), shown))

    Calls()(stmt)
    yield from found


def _setting_shown(stmt: ast.VariableSetStmt) -> str:
    local = "LOCAL " if stmt.is_local else ""
    if stmt.kind == VariableSetKind.VAR_RESET_ALL:
        return "RESET ALL"
    if stmt.kind == VariableSetKind.VAR_RESET:
        return f"RESET {stmt.name}"
    if stmt.kind == VariableSetKind.VAR_SET_DEFAULT:
        return f"SET {local}{stmt.name} TO DEFAULT"
    values = [f"'{v}'" if isinstance(v, str) else str(v)
              for v in map(_constant, stmt.args or ()) if v is not None]
    return f"SET {local}{stmt.name} = {', '.join(values) or '...'}"


def _is_zero(args: tuple[object, ...] | None) -> bool:
    values = [_constant(arg) for arg in args or ()]
    return len(values) == 1 and isinstance(values[0], str | Decimal) and _zero_text(
        str(values[0]))


def _zero_text(value: str) -> bool:
    """A timeout PostgreSQL stores as 0, no limit: '0', '0s', '0.4', '100us' (it rounds to
    whole milliseconds). A value it cannot read is taken as 0 (the SET fails anyway)."""
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        return True
    milliseconds = float(found["number"]) * _MILLISECONDS[found["unit"].lower()]
    return milliseconds <= 0.5


def _concurrent_reindex(stmt: ast.ReindexStmt) -> bool:
    return any(isinstance(p, ast.DefElem) and p.defname == "concurrently" and _option_on(p.arg)
               for p in stmt.params or ())


def _option_on(arg: object) -> bool:
    """An option's value as PostgreSQL reads a boolean option: absent is on."""
    if arg is None:
        return True
    if isinstance(arg, ast.A_Const):
        arg = arg.val
    if isinstance(arg, ast.Integer):
        return (arg.ival or 0) != 0
    return _boolean(arg) is not False


def _reindexed(stmt: ast.ReindexStmt) -> str:
    if stmt.relation is not None:
        return _name(_table(stmt.relation))
    return stmt.name or ""


def only_refills(sql: str, *, version_table: str = "alembic_version") -> bool:
    """True when every statement is an UPDATE that writes only rows where each column it sets
    IS NULL: run again, it changes nothing it changed before (a backfill). Anything else, or
    SQL the parser cannot read, is False."""
    for _, parsed in _statements(sql):
        if isinstance(parsed, ParseError):
            return False
        for raw in parsed:
            stmt = raw.stmt
            if stmt is None or isinstance(stmt, ast.TransactionStmt):
                continue
            if _is_bookkeeping(stmt, version_table):
                # the backfill helper's batch: its UPDATE is a query of its WITH
                if not all(_refills(query) for query in _cte_writes(stmt)):
                    return False
                continue
            if getattr(stmt, "withClause", None) is not None or not _refills(stmt):
                return False
    return True


def _refills(stmt: ast.Node) -> bool:
    """An UPDATE that writes only rows where each column it sets IS NULL."""
    if not isinstance(stmt, ast.UpdateStmt) or stmt.relation is None:
        return False
    columns = {t.name for t in stmt.targetList or () if isinstance(t, ast.ResTarget) and t.name}
    guarded = _null_only(stmt.whereClause, _names_of(stmt.relation),
                         joined=bool(stmt.fromClause))
    return bool(columns) and columns <= guarded


def _cte_writes(stmt: ast.Node) -> list[ast.Node]:
    """The data-modifying queries of a statement's WITH."""
    with_clause = getattr(stmt, "withClause", None)
    if not isinstance(with_clause, ast.WithClause):
        return []
    return [cte.ctequery for cte in with_clause.ctes or ()
            if isinstance(cte, ast.CommonTableExpr) and isinstance(
                cte.ctequery, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt)]


def join_statements(statements: Iterable[str]) -> str:
    """The statements a revision executed as one text for `analyse`, none merged into another.

    Each `;` goes on a line of its own: a statement ending in a `--` comment would otherwise
    swallow it, and the next statement (say a DROP TABLE) would be read as part of this one.
    """
    return "\n;\n".join(statements)


def decide(
    findings: Sequence[Finding],
    *,
    stage: str,
    allow_destructive: bool,
    approvals: Mapping[str, Sequence[Approval]],
) -> GateDecision:
    """Split findings into what blocks this stage's deploy and what only warns.

    In production a destructive finding blocks unless the deploy allows destructive changes
    or its revision's file approves that very finding (`approvals`: revision → its lines).
    Nothing else approves: not a release, not a deferral, not an earlier refusal."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")

    def blocks(finding: Finding) -> bool:
        return (
            finding.kind == DESTRUCTIVE
            and stage == "production"
            and not allow_destructive
            and not any(a.approves(finding) for a in approvals.get(finding.revision, ()))
        )

    return GateDecision(
        findings=tuple(findings),
        blocking=tuple(finding for finding in findings if blocks(finding)),
        warnings=tuple(finding for finding in findings if not blocks(finding)),
    )


def _statements(sql: str) -> Iterator[tuple[str, tuple[ast.RawStmt, ...] | ParseError]]:
    """Each statement's text with its parse, or the parser's error for that statement.

    The parser splits exactly; when it fails, the statements are cut at the scanner's `;` tokens
    and parsed one by one, so one bad statement is reported without hiding the others. When even
    the scanner fails (e.g. an unterminated string), the whole text is one unparsed statement.
    """
    if sql.isascii():
        # One parse when it succeeds (the apply judges every statement it sends): the
        # parser's statement locations are byte offsets, the same as characters in ASCII.
        try:
            parsed = parse_sql(sql)
        except ParseError:
            pass
        else:
            for raw in parsed:
                start = raw.stmt_location or 0
                end = start + raw.stmt_len if raw.stmt_len else len(sql)
                yield sql[start:end], (raw,)
            return
    try:
        slices = split(sql, with_parser=True, only_slices=True)
    except ParseError:
        try:
            slices = _split_on_semicolons(sql)
        except ParseError as error:
            yield sql, error
            return
    for piece in slices:
        text = sql[piece]
        try:
            yield text, parse_sql(text)
        except ParseError as error:
            yield text, error


def _split_on_semicolons(sql: str) -> tuple[slice, ...]:
    """Statement slices from the scanner's tokens, dropping nothing but comments and whitespace.

    Not pglast's scanner `split`: it silently leaves out a statement that does not start with a
    keyword (e.g. a typo like `SELEC 1`), and nothing may be ignored here.
    """
    slices: list[slice] = []
    start: int | None = None
    end = 0
    for token in scan(sql):
        if token.name in _COMMENT_TOKENS:
            continue
        if token.name == "ASCII_59":  # ';'
            if start is not None:
                slices.append(slice(start, end))
            start = None
            continue
        if start is None:
            start = token.start
        end = token.end + 1  # Token.end is inclusive
    if start is not None:
        slices.append(slice(start, end))
    return tuple(slices)


def _display(text: str) -> str:
    """The statement on one line without comments: a `--` comment would swallow the rest."""
    try:
        comments = [(t.start, t.end + 1) for t in scan(text) if t.name in _COMMENT_TOKENS]
    except ParseError:
        # Unscannable text is only shown, never analysed: dropping `--` lines is close enough.
        text = _LINE_COMMENT.sub(" ", text)
        comments = []
    kept: list[str] = []
    position = 0
    for start, end in comments:
        kept.append(text[position:start])
        position = end
    kept.append(text[position:])
    return _cut(" ".join("".join(kept).split()), STATEMENT_LIMIT)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(relation: ast.RangeVar) -> _Table:
    return (relation.schemaname or "public", relation.relname or "")


def _name(table: _Table) -> str:
    return table[1] if table[0] in ("public", "") else f"{table[0]}.{table[1]}"


def _qualified_names(obj: object) -> tuple[str, ...]:
    """DropStmt.objects holds a tuple of String per dotted name, or a bare String for schemas."""
    if isinstance(obj, ast.String):
        return (obj.sval or "",)
    if isinstance(obj, tuple):
        return tuple(part.sval or "" for part in obj if isinstance(part, ast.String))
    return ()


def _dropped_table(obj: object) -> _Table:
    names = _qualified_names(obj)
    return (names[-2] if len(names) > 1 else "public", names[-1] if names else "")


def _object_name(kind: ObjectType, obj: object) -> _Table:
    """(schema, name) of a type, domain or collation; ("", name) of an extension."""
    if isinstance(obj, ast.TypeName):
        obj = obj.names
    if kind == ObjectType.OBJECT_EXTENSION:
        return ("", ".".join(_qualified_names(obj)))
    return _dropped_table(obj)


def _is_bookkeeping(stmt: ast.Node, version_table: str) -> bool:
    """Alembic's writes to alembic_version, and the backfill helper's to its progress table
    (the product's own rows, never application data), its DO block that drops the table once
    empty included."""
    relation = getattr(stmt, "relation", None)
    if isinstance(relation, ast.RangeVar):
        return relation.relname in (version_table, PROGRESS_TABLE)
    if isinstance(stmt, ast.DoStmt):
        bodies = [" ".join(str(a.arg.sval).split()) for a in stmt.args or ()
                  if isinstance(a, ast.DefElem) and a.defname == "as"
                  and isinstance(a.arg, ast.String)]
        return bodies == [_HELPER_CLEANUP_BODY]
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
        return all(_dropped_table(obj)[1] == version_table for obj in stmt.objects or ())
    if isinstance(stmt, ast.TruncateStmt):
        relations = [rel for rel in stmt.relations or () if isinstance(rel, ast.RangeVar)]
        return all(rel.relname == version_table for rel in relations)
    return False


def _check(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """(rule, subject) for each risky thing the statement does."""
    if isinstance(stmt, ast.ExplainStmt) and stmt.query is not None:
        yield from _check(stmt.query, created)  # EXPLAIN ANALYZE runs it
        return
    if not isinstance(stmt, ast.CreateFunctionStmt):
        for name in _created_calls(stmt, created):
            yield "function_call", name
    for triggered in _triggered(stmt, created):
        yield "trigger", triggered
    if isinstance(stmt, ast.DoStmt | ast.CallStmt | ast.ExecuteStmt | ast.SelectStmt
                  | ast.DropOwnedStmt | ast.RuleStmt):
        yield from _check_opaque(stmt, created)
    elif isinstance(stmt, ast.AlterObjectSchemaStmt) and stmt.relation is not None and (
            stmt.objectType == ObjectType.OBJECT_TABLE):
        table = _table(stmt.relation)
        if not created.has(table):
            yield "rename", f"{_name(table)} to schema {stmt.newschema}"
    else:
        yield from _check_schema_change(stmt, created)


def _check_schema_change(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    if isinstance(stmt, ast.DropStmt):
        yield from _check_drop(stmt, created)
    elif isinstance(stmt, ast.TruncateStmt):
        tables = [_table(rel) for rel in stmt.relations or () if isinstance(rel, ast.RangeVar)]
        existing = [table for table in tables if not created.has(table)]
        if existing:
            yield "truncate", ", ".join(_name(table) for table in existing)
    elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if not created.has(table):
            for cmd in stmt.cmds or ():
                if isinstance(cmd, ast.AlterTableCmd):
                    yield from _check_alter(cmd, _name(table))
    elif isinstance(stmt, ast.IndexStmt | ast.ReindexStmt):
        yield from _check_index(stmt, created)
    elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if stmt.renameType in _RENAMED_OBJECTS and not created.has(table):
            renamed = f"{_name(table)}.{stmt.subname}" if stmt.subname else _name(table)
            yield "rename", renamed
    else:
        yield from _check_dml(stmt, created)


def _check_index(stmt: ast.IndexStmt | ast.ReindexStmt,
                 created: _Created) -> Iterator[tuple[str, str]]:
    """An index built, or rebuilt, without CONCURRENTLY on a table from before the deploy."""
    if isinstance(stmt, ast.IndexStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if not stmt.concurrent and not created.has(table):
            yield "create_index_not_concurrently", _name(table)
    elif (isinstance(stmt, ast.ReindexStmt) and not _concurrent_reindex(stmt)
          and not _reindexes_new(stmt, created)):
        yield "reindex_not_concurrently", _reindexed(stmt)


def _check_opaque(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """What runs code the gate cannot read: it may do anything."""
    if isinstance(stmt, ast.DoStmt):
        yield "do_block", ""
    elif isinstance(stmt, ast.CallStmt):
        called = stmt.funccall.funcname if stmt.funccall is not None else None
        yield "call_procedure", ".".join(_qualified_names(tuple(called or ())))
    elif isinstance(stmt, ast.ExecuteStmt):
        yield "execute_prepared", stmt.name or ""
    elif isinstance(stmt, ast.DropOwnedStmt):
        yield "drop_owned", ""
    elif isinstance(stmt, ast.RuleStmt) and stmt.relation is not None:
        yield "create_rule", _name(_table(stmt.relation))
    elif isinstance(stmt, ast.SelectStmt) and stmt.intoClause is None:
        for name in _opaque_calls(stmt):
            yield "function_call", name
    if isinstance(stmt, ast.SelectStmt):
        yield from _check_dml(stmt, created)  # its WITH may hold a DELETE or an UPDATE


def _check_drop(stmt: ast.DropStmt, created: _Created) -> Iterator[tuple[str, str]]:
    """DROP TABLE/SCHEMA; DROP TYPE/DOMAIN/EXTENSION/COLLATION only with CASCADE.

    Without CASCADE the latter fail while any column uses them, so nothing is lost.
    """
    cascade = stmt.behavior == DropBehavior.DROP_CASCADE
    suffix = "_cascade" if cascade else ""
    if stmt.removeType == ObjectType.OBJECT_TABLE:
        tables = [t for t in map(_dropped_table, stmt.objects or ()) if not created.has(t)]
        if tables:
            yield "drop_table" + suffix, ", ".join(_name(table) for table in tables)
    elif stmt.removeType == ObjectType.OBJECT_SCHEMA:
        schemas = [".".join(_qualified_names(obj)) for obj in stmt.objects or ()]
        existing = [schema for schema in schemas if schema not in created.schemas]
        if existing:
            yield "drop_schema" + suffix, ", ".join(existing)
    elif stmt.removeType == ObjectType.OBJECT_INDEX and not stmt.concurrent:
        indexes = [i for i in map(_dropped_table, stmt.objects or ())
                   if i not in created.indexes and i[0] not in created.schemas]
        if indexes:
            yield "drop_index_not_concurrently", ", ".join(_name(index) for index in indexes)
    elif cascade and stmt.removeType in _CASCADE_RULES:
        kind = ObjectType(stmt.removeType)
        dropped = [_object_name(kind, obj) for obj in stmt.objects or ()]
        kept = [name for name in dropped if not created.has_object(kind, name)]
        if kept:
            yield _CASCADE_RULES[kind], ", ".join(_name(name) for name in kept)


def _check_alter(cmd: ast.AlterTableCmd, table: str) -> Iterator[tuple[str, str]]:
    column = f"{table}.{cmd.name}"
    if cmd.subtype == AlterTableType.AT_DropColumn:
        yield "drop_column", column
    elif cmd.subtype == AlterTableType.AT_AlterColumnType:
        yield "alter_column_type", column
    elif cmd.subtype == AlterTableType.AT_SetNotNull:
        yield "set_not_null", column
    elif cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        yield from _check_new_column(cmd.def_, table)
    elif cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        constraint = cmd.def_
        if constraint.skip_validation:
            return
        named = constraint.conname or f"on {table}"
        if constraint.contype == ConstrType.CONSTR_FOREIGN:
            yield "foreign_key_without_not_valid", named
        elif constraint.contype == ConstrType.CONSTR_CHECK:
            yield "check_without_not_valid", named
        elif constraint.contype == ConstrType.CONSTR_NOTNULL:
            # PostgreSQL 18 spelling: ADD CONSTRAINT name NOT NULL column.
            yield "set_not_null", named
        elif constraint.contype in _INDEX_RULES and not constraint.indexname:
            yield _INDEX_RULES[ConstrType(constraint.contype)], named


def _check_new_column(column: ast.ColumnDef, table: str) -> Iterator[tuple[str, str]]:
    name = f"{table}.{column.colname}"
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {constraint.contype for constraint in constraints}
    if ((column.is_not_null or kinds & _NOT_NULL_KINDS) and not kinds & _VALUE_KINDS
            and not _is_serial(column)):
        yield "add_column_not_null_without_default", name
    # A column constraint cannot be NOT VALID: REFERENCES or CHECK here always validates.
    if ConstrType.CONSTR_FOREIGN in kinds:
        yield "foreign_key_without_not_valid", name
    if ConstrType.CONSTR_CHECK in kinds:
        yield "check_without_not_valid", name
    for kind, rule in _INDEX_RULES.items():
        if kind in kinds:  # nor can it name an index to use
            yield rule, name
    if _rewrites_table(column, constraints):
        yield "add_column_rewrites_table", name


def _rewrites_table(column: ast.ColumnDef, constraints: list[ast.Constraint]) -> bool:
    """A new column whose value is computed per row: PostgreSQL writes every row again."""
    if _is_serial(column):
        return True
    for constraint in constraints:
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            return True
        # PostgreSQL 18's virtual generated columns ('v') are computed when read
        if constraint.contype == ConstrType.CONSTR_GENERATED and constraint.generated_kind != "v":
            return True
        if constraint.contype == ConstrType.CONSTR_DEFAULT and _may_be_volatile(
                constraint.raw_expr):
            return True
    return False


def _is_serial(column: ast.ColumnDef) -> bool:
    type_name = _qualified_names(column.typeName.names) if column.typeName else ()
    return bool(type_name) and type_name[-1].lower() in _SERIAL_TYPES


def _may_be_volatile(expression: object) -> bool:
    """Whether a DEFAULT may give each row its own value. Only constants, operators, casts
    and the stable or immutable built-ins of `_NON_VOLATILE_FUNCTIONS` are known not to:
    anything else (a volatile or unknown function, a subquery) is taken to."""
    if not isinstance(expression, ast.Node):
        return expression is not None
    volatile = False

    class Nodes(Visitor):
        def visit(self, ancestors: Any, node: ast.Node) -> None:
            nonlocal volatile
            if not isinstance(node, _CONSTANT_NODES):
                volatile = True
            elif isinstance(node, ast.FuncCall):
                name = tuple(n.lower() for n in _qualified_names(tuple(node.funcname or ())))
                if name[:-1] not in ((), ("pg_catalog",)) or (
                        name[-1:] and name[-1] not in _NON_VOLATILE_FUNCTIONS):
                    volatile = True

    Nodes()(expression)
    return volatile


def _reindexes_new(stmt: ast.ReindexStmt, created: _Created) -> bool:
    """REINDEX of a table, or an index on a table, made by this deploy."""
    if stmt.relation is None:
        return False
    target = _table(stmt.relation)
    if stmt.kind == ReindexObjectType.REINDEX_OBJECT_TABLE:
        return created.has(target)
    return stmt.kind == ReindexObjectType.REINDEX_OBJECT_INDEX and (
        target in created.indexes or target[0] in created.schemas)


def _check_ctes(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """The data-modifying WITH queries of a statement whose own target is bookkeeping."""
    with_clause = getattr(stmt, "withClause", None)
    if isinstance(with_clause, ast.WithClause):
        for cte in with_clause.ctes or ():
            if isinstance(cte, ast.CommonTableExpr) and cte.ctequery is not None:
                yield from _check_dml(cte.ctequery, created)


def _check_dml(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """Data changes judged by what they destroy, at top level or as a data-modifying WITH
    query: a DELETE of rows from before the deploy whatever its WHERE, an UPDATE (or an
    upsert's DO UPDATE) overwriting a column from before the deploy, a MERGE. Filling a
    column the same deploy added, or only rows where it IS NULL, is a backfill."""
    if isinstance(stmt, ast.DeleteStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if not created.has(table):
            if stmt.whereClause is None:
                yield "delete_without_where", _name(table)
            elif _truth(stmt.whereClause) is True:
                yield "delete_where_always_true", _name(table)
            else:
                yield "delete_rows", _name(table)
    elif isinstance(stmt, ast.UpdateStmt) and stmt.relation is not None:
        yield from _overwrites(_table(stmt.relation), stmt.targetList,
                               _null_only(stmt.whereClause, _names_of(stmt.relation),
                                          joined=bool(stmt.fromClause)), created)
    elif (isinstance(stmt, ast.InsertStmt) and stmt.relation is not None
          and isinstance(stmt.onConflictClause, ast.OnConflictClause)
          and stmt.onConflictClause.action == OnConflictAction.ONCONFLICT_UPDATE):
        clause = stmt.onConflictClause
        # In DO UPDATE an unqualified column is the existing row's: EXCLUDED is the new one.
        yield from _overwrites(_table(stmt.relation), clause.targetList,
                               _null_only(clause.whereClause, _names_of(stmt.relation),
                                          joined=False), created)
    elif isinstance(stmt, ast.MergeStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if not created.has(table):
            yield "merge", _name(table)
    with_clause = getattr(stmt, "withClause", None)
    if isinstance(with_clause, ast.WithClause):
        for cte in with_clause.ctes or ():
            if isinstance(cte, ast.CommonTableExpr) and cte.ctequery is not None:
                yield from _check_dml(cte.ctequery, created)


def _overwrites(
    table: _Table, targets: tuple[object, ...] | None, filled_only: set[str],
    created: _Created,
) -> Iterator[tuple[str, str]]:
    """`update_overwrites` naming the columns from before the deploy that the SET list writes
    in rows where they may hold a value (every row, unless the WHERE says IS NULL for it:
    `filled_only`)."""
    columns = [t.name for t in targets or () if isinstance(t, ast.ResTarget) and t.name]
    kept = [c for c in dict.fromkeys(columns)
            if not created.is_new_column(table, c) and c not in filled_only]
    if kept:
        yield "update_overwrites", ", ".join(f"{_name(table)}.{c}" for c in kept)


def _names_of(relation: ast.RangeVar) -> frozenset[str]:
    """What a column of the target table may be qualified with: its name, or its alias."""
    alias = relation.alias.aliasname if isinstance(relation.alias, ast.Alias) else None
    return frozenset(n for n in (relation.relname, alias) if n)


def _null_only(where: object, target: frozenset[str] = frozenset(), *,
               joined: bool = False) -> set[str]:
    """Columns of the target table that the WHERE clause restricts to NULL (`col IS NULL`,
    alone or ANDed). With other tables joined (UPDATE ... FROM), only a column qualified with
    the target's name or alias counts: `a.name IS NULL` may be another table's."""
    parts = [where]
    if isinstance(where, ast.BoolExpr) and where.boolop == BoolExprType.AND_EXPR:
        parts = list(where.args or ())
    found: set[str] = set()
    for part in parts:
        if not (isinstance(part, ast.NullTest) and part.nulltesttype == NullTestType.IS_NULL
                and isinstance(part.arg, ast.ColumnRef) and part.arg.fields):
            continue
        names = [str(f.sval) for f in part.arg.fields if isinstance(f, ast.String) and f.sval]
        if len(names) != len(part.arg.fields) or not names:
            continue
        qualifier = names[-2] if len(names) > 1 else None
        if qualifier is None and joined:
            continue
        if qualifier is not None and target and qualifier not in target:
            continue
        found.add(names[-1])
    return found


def _called(stmt: ast.Node) -> list[tuple[tuple[str, ...], bool]]:
    """Every function a statement calls, lowercased, with whether it is applied to rows read
    from a table (a function in FROM, `SELECT * FROM f()`, runs once for its effect)."""
    found: list[tuple[tuple[str, ...], bool]] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
            name = tuple(n.lower() for n in _qualified_names(tuple(node.funcname or ())))
            if not name:
                return
            chain = _up(ancestors)
            in_from = any(isinstance(a, ast.RangeFunction) for a in chain)
            select = next((a for a in chain if isinstance(a, ast.SelectStmt)), None)
            found.append((name, select is not None and bool(select.fromClause) and not in_from))

    Calls()(stmt)
    return found


def _up(ancestors: Any) -> list[object]:
    """The nodes above a visited one, nearest first, up to the statement the visit began at."""
    nodes: list[object] = []
    link = ancestors
    while link is not None and getattr(link, "node", None) is not None:
        nodes.append(link.node)
        link = link.parent
    return nodes


def _function(name: tuple[str, ...]) -> _Table:
    return (name[-2] if len(name) > 1 else "public", name[-1])


def _created_calls(stmt: ast.Node, created: _Created) -> list[str]:
    """Functions the same deploy created, called anywhere in the statement: what they do was
    not judged (an INSERT ... SELECT wipe(), a DEFAULT, an UPDATE SET col = wipe())."""
    if not created.functions:
        return []
    return list(dict.fromkeys(".".join(name) for name, _ in _called(stmt)
                              if _function(name) in created.functions))


def _opaque_calls(stmt: ast.SelectStmt) -> list[str]:
    """Functions a SELECT runs for their effect: in a SELECT reading no table (or in its
    FROM), any but the built-ins that compute values or touch sequence, session or lock state
    (or any in pg_catalog, the system's own). A function applied to rows is a read."""
    opaque = []
    for name, reads_rows in _called(stmt):
        built_in = name[0] == "pg_catalog" or (len(name) == 1 and name[0] in _READING_FUNCTIONS)
        if not (reads_rows or built_in):
            opaque.append(".".join(name))
    return list(dict.fromkeys(opaque))


def _triggered(stmt: ast.Node, created: _Created) -> list[str]:
    """Tables a data change reaches that got a trigger in this deploy: the trigger's code
    runs, unseen."""
    if not created.triggers or not isinstance(
            stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt | ast.CopyStmt
            | ast.TruncateStmt):
        return []
    relations = [stmt.relation] if not isinstance(stmt, ast.TruncateStmt) else list(
        stmt.relations or ())
    return [_name(_table(r)) for r in relations
            if isinstance(r, ast.RangeVar) and _table(r) in created.triggers]


def _truth(node: object) -> bool | None:
    """A WHERE clause's value when it is a constant, else None. Not an evaluator: only the forms
    written to mean every row (true, 't', 1 = 1, NOT false, AND/OR of such, 't'::boolean).
    Anything naming a column or calling a function is None, and so is NULL.
    """
    if isinstance(node, ast.A_Const):
        return _boolean(node.val) if not node.isnull else None
    if isinstance(node, ast.TypeCast) and _is_boolean(node.typeName):
        return _cast_truth(node.arg)
    if isinstance(node, ast.BoolExpr):
        return _logic(node)
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP:
        return _comparison(node)
    return None


def _cast_truth(arg: object) -> bool | None:
    """The value of `constant::boolean`: an integer is true unless 0, the rest as in WHERE."""
    if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.Integer) and not arg.isnull:
        return (arg.val.ival or 0) != 0
    return _truth(arg) if isinstance(arg, ast.A_Const) else None


def _logic(expr: ast.BoolExpr) -> bool | None:
    """NOT, AND, OR in SQL's three-valued logic, None standing for unknown."""
    parts = [_truth(arg) for arg in expr.args or ()]
    if expr.boolop == BoolExprType.NOT_EXPR:
        return None if not parts or parts[0] is None else not parts[0]
    # One true part makes OR true, one false part makes AND false; else all must agree.
    decisive = expr.boolop == BoolExprType.OR_EXPR
    if decisive in parts:
        return decisive
    return not decisive if all(part is (not decisive) for part in parts) else None


def _comparison(expr: ast.A_Expr) -> bool | None:
    """The value of `constant op constant` for equality and order operators, when decidable."""
    operator = _qualified_names(expr.name)
    left, right = _constant(expr.lexpr), _constant(expr.rexpr)
    if len(operator) != 1 or operator[0] not in _WHEN_EQUAL or left is None or right is None:
        return None
    if type(left) is not type(right):  # '1' = 1 takes PostgreSQL's type rules: leave it
        return None
    if left == right:
        return _WHEN_EQUAL[operator[0]]
    return {"=": False, "<>": True}.get(operator[0])


def _constant(node: object) -> Decimal | str | bool | None:
    if not isinstance(node, ast.A_Const) or node.isnull:
        return None
    value = node.val
    if isinstance(value, ast.Boolean):
        return bool(value.boolval)
    if isinstance(value, ast.String):
        return value.sval or ""
    number = (value.ival or 0) if isinstance(value, ast.Integer) else getattr(value, "fval", None)
    try:
        return None if number is None else Decimal(number)
    except InvalidOperation:  # e.g. a large 0x... literal, which Decimal does not read
        return None


def _boolean(value: object) -> bool | None:
    """A boolean or string constant read as PostgreSQL reads a boolean."""
    if isinstance(value, ast.Boolean):
        return bool(value.boolval)
    if not isinstance(value, ast.String):
        return None
    # boolin: any unique prefix of true/yes/false/no, on/off (two letters at least), 1/0.
    word = (value.sval or "").strip().lower()
    if not word:
        return None
    for spelling, meaning in (("true", True), ("yes", True), ("false", False), ("no", False)):
        if spelling.startswith(word):
            return meaning
    return {"on": True, "1": True, "of": False, "off": False, "0": False}.get(word)


def _is_boolean(type_name: ast.TypeName | None) -> bool:
    if type_name is None or type_name.arrayBounds:
        return False
    return _qualified_names(type_name.names) in (("bool",), ("pg_catalog", "bool"))
