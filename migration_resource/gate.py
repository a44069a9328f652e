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
- locking: holds a lock that blocks the application, or fails on existing rows (CREATE INDEX
  without CONCURRENTLY, NOT NULL without a default, SET NOT NULL, FOREIGN KEY/CHECK without
  NOT VALID). These only warn.

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
    DropBehavior,
    NullTestType,
    ObjectType,
    OnConflictAction,
)
from pglast.parser import ParseError, parse_sql, scan, split
from pglast.visitors import Visitor

from migration_resource.online import PROGRESS_DROP_WHEN_EMPTY, PROGRESS_TABLE

DESTRUCTIVE = "destructive"
LOCKING = "locking"
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

    def is_new_column(self, table: _Table, column: str) -> bool:
        return self.has(table) or (*table, column) in self.columns

    def has(self, table: _Table) -> bool:
        return table in self.tables or table[0] in self.schemas

    def has_object(self, kind: ObjectType, name: _Table) -> bool:
        return (_NAMESPACE.get(kind, kind), *name) in self.objects or name[0] in self.schemas

    def _add(self, kind: ObjectType, names: object) -> None:
        self.objects.add((_NAMESPACE.get(kind, kind), *_object_name(kind, names)))

    def record(self, stmt: ast.Node) -> None:
        table = _new_table(stmt)
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


def _new_table(stmt: ast.Node) -> _Table | None:
    """The table a statement creates; not one made with IF NOT EXISTS, which may have found
    one from before, with its rows."""
    if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
        return None if stmt.if_not_exists else _table(stmt.relation)
    if isinstance(stmt, ast.CreateTableAsStmt) and stmt.into and stmt.into.rel:
        return None if stmt.if_not_exists else _table(stmt.into.rel)
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause and stmt.intoClause.rel:
        return _table(stmt.intoClause.rel)  # SELECT ... INTO new_table
    return None


def analyse(
    sql_by_revision: Mapping[str, str], *, version_table: str = "alembic_version"
) -> tuple[Finding, ...]:
    """Findings in revision order, then statement order, for the SQL each revision would run."""
    judge = StatementJudge(version_table)
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

    def findings(self, revision: str, sql: str) -> list[Finding]:
        found: list[Finding] = []
        for text, parsed in _statements(sql):
            if isinstance(parsed, ParseError):
                reason = _cut(" ".join(str(parsed).split()), PARSER_MESSAGE_LIMIT)
                found.append(_finding(revision, "unparsed", _display(text), "", shown=reason))
                continue
            for raw in parsed:
                if raw.stmt is None:
                    continue
                checked = (_check_ctes(raw.stmt, self.created)
                           if _is_bookkeeping(raw.stmt, self.version_table)
                           else _check(raw.stmt, self.created))
                for rule, subject in checked:
                    found.append(_finding(revision, rule, _display(text), subject))
                self.created.record(raw.stmt)
        return found


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
    elif isinstance(stmt, ast.IndexStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if not stmt.concurrent and not created.has(table):
            yield "create_index_not_concurrently", _name(table)
    elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if stmt.renameType in _RENAMED_OBJECTS and not created.has(table):
            renamed = f"{_name(table)}.{stmt.subname}" if stmt.subname else _name(table)
            yield "rename", renamed
    else:
        yield from _check_dml(stmt, created)


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


def _check_new_column(column: ast.ColumnDef, table: str) -> Iterator[tuple[str, str]]:
    name = f"{table}.{column.colname}"
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {constraint.contype for constraint in constraints}
    if (column.is_not_null or kinds & _NOT_NULL_KINDS) and not kinds & _VALUE_KINDS:
        yield "add_column_not_null_without_default", name
    # A column constraint cannot be NOT VALID: REFERENCES or CHECK here always validates.
    if ConstrType.CONSTR_FOREIGN in kinds:
        yield "foreign_key_without_not_valid", name
    if ConstrType.CONSTR_CHECK in kinds:
        yield "check_without_not_valid", name


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
