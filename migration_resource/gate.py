"""The destructive and locking change gate: what in the pending revisions' SQL is risky.

Pure: no database, no AWS. The engine renders each pending revision's SQL with Alembic's offline
mode and passes it here; `analyse` parses it with pglast (PostgreSQL's own parser) and reports
two kinds of findings, after the rules squawk and strong_migrations enforce:

- destructive: loses data or breaks the code still running during the deploy (DROP TABLE,
  DROP COLUMN, DROP SCHEMA, TRUNCATE, column type changes, DELETE/UPDATE without WHERE, renames).
  In production these block the deploy unless explicitly allowed.
- locking: holds a lock that blocks the application, or fails on existing rows (CREATE INDEX
  without CONCURRENTLY, NOT NULL without a default, SET NOT NULL, FOREIGN KEY/CHECK without
  NOT VALID), plus SQL the parser cannot read. These only warn.

A change to a table created earlier in the same batch is not reported: the table holds no rows
from before the deploy and no running code uses it yet (this is what lets a fresh database replay
the whole history). Alembic's own bookkeeping on alembic_version is never reported.

A revision whose destructive change is intended says so in its file with a line

    # migration-gate: allow-destructive

at the start of a line (indentation allowed; case and the spaces after `#` and `:` do not
matter); a reason may follow, e.g. `# migration-gate: allow-destructive -- unused since v41`.
The stage-wide alternative is the AllowDestructive property / --allow-destructive flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError, parse_sql, scan, split

DESTRUCTIVE = "destructive"
LOCKING = "locking"
STAGES = ("production", "development")
MARKER = "# migration-gate: allow-destructive"
STATEMENT_LIMIT = 200
REFUSAL_LIMIT = 200
PARSER_MESSAGE_LIMIT = 120

_MARKER_LINE = re.compile(
    r"^[ \t]*#[ \t]*migration-gate:[ \t]*allow-destructive(?![\w-])", re.I | re.M
)
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

_KIND_OF_RULE = {
    "drop_table": DESTRUCTIVE,
    "drop_column": DESTRUCTIVE,
    "drop_schema": DESTRUCTIVE,
    "truncate": DESTRUCTIVE,
    "alter_column_type": DESTRUCTIVE,
    "delete_without_where": DESTRUCTIVE,
    "update_without_where": DESTRUCTIVE,
    "rename": DESTRUCTIVE,
    "create_index_not_concurrently": LOCKING,
    "add_column_not_null_without_default": LOCKING,
    "set_not_null": LOCKING,
    "foreign_key_without_not_valid": LOCKING,
    "check_without_not_valid": LOCKING,
    "unparsed": LOCKING,
}

_MESSAGES = {
    "drop_table": "DROP TABLE {0} deletes it with every row, recoverable only from a snapshot; "
    "stop using it in code first and drop it in a later release.",
    "drop_column": "Dropping column {0} deletes its data and breaks code still reading it; "
    "stop using the column in code first and drop it in a later release.",
    "drop_schema": "DROP SCHEMA {0} deletes the schema and everything in it; make sure nothing "
    "uses it, and drop its objects one by one in a later release.",
    "truncate": "TRUNCATE {0} deletes every row under an exclusive lock; delete only the rows "
    "you mean with DELETE ... WHERE, in batches.",
    "alter_column_type": "Changing the type of {0} can fail on or lose existing values, may "
    "rewrite the table under an exclusive lock and breaks running code; add a new column, "
    "backfill it, then switch.",
    "delete_without_where": "DELETE FROM {0} without WHERE deletes every row; add a WHERE "
    "clause naming the rows to delete.",
    "update_without_where": "UPDATE {0} without WHERE overwrites every row and locks them all; "
    "add a WHERE clause (e.g. only rows still NULL) and batch large tables.",
    "rename": "Renaming {0} breaks the code still running with the old name during the deploy; "
    "add the new name alongside, move the code, then drop the old name in a later release.",
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
    "unparsed": "The SQL parser could not read this ({0}); a reviewer must check it by hand "
    "for destructive or locking changes.",
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

    def as_dict(self) -> dict[str, str]:
        return {
            "revision": self.revision,
            "kind": self.kind,
            "rule": self.rule,
            "statement": self.statement,
            "message": self.message,
        }


@dataclass(frozen=True)
class GateDecision:
    findings: tuple[Finding, ...]
    blocking: tuple[Finding, ...]  # destructive findings not allowed in this stage
    warnings: tuple[Finding, ...]  # everything else that was found

    def refusal(self) -> str | None:
        """One short reason for the operator, or None when nothing blocks."""
        if not self.blocking:
            return None
        first = self.blocking[0]
        more = len(self.blocking) - 1
        also = f" (+{more} more)" if more else ""
        tail = (
            f" blocked in production; allow it with AllowDestructive / --allow-destructive "
            f"or `{MARKER}` in the revision file"
        )
        # Revision ids are free text in Alembic: cut a long one rather than the next step.
        room = REFUSAL_LIMIT - len(tail) - len(also) - len(first.rule) - 2
        revision = first.revision if len(first.revision) <= room else first.revision[: room - 3]
        if revision != first.revision:
            revision += "..."
        return f"{revision}: {first.rule}{also}{tail}"


def _finding(revision: str, rule: str, statement: str, subject: str) -> Finding:
    return Finding(
        revision=revision,
        kind=_KIND_OF_RULE[rule],
        rule=rule,
        statement=statement,
        message=_MESSAGES[rule].format(subject),
    )


def analyse(
    sql_by_revision: Mapping[str, str], *, version_table: str = "alembic_version"
) -> tuple[Finding, ...]:
    """Findings in revision order, then statement order, for the SQL each revision would run."""
    created = _Created(tables=set(), schemas=set())
    findings: list[Finding] = []
    for revision, sql in sql_by_revision.items():
        for text, parsed in _statements(sql):
            shown = _display(text)
            if isinstance(parsed, ParseError):
                reason = _cut(" ".join(str(parsed).split()), PARSER_MESSAGE_LIMIT)
                findings.append(_finding(revision, "unparsed", shown, reason))
                continue
            for raw in parsed:
                if raw.stmt is None or _is_bookkeeping(raw.stmt, version_table):
                    continue
                for rule, subject in _check(raw.stmt, created):
                    findings.append(_finding(revision, rule, shown, subject))
                created.record(raw.stmt)
    return tuple(findings)


def allowed_by_marker(revision_file_text: str) -> bool:
    """True when the revision file carries the `# migration-gate: allow-destructive` line."""
    return _MARKER_LINE.search(revision_file_text) is not None


def decide(
    findings: Sequence[Finding],
    *,
    stage: str,
    allow_destructive: bool,
    allowed_revisions: frozenset[str],
) -> GateDecision:
    """Split findings into what blocks this stage's deploy and what only warns."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")

    def blocks(finding: Finding) -> bool:
        return (
            finding.kind == DESTRUCTIVE
            and stage == "production"
            and not allow_destructive
            and finding.revision not in allowed_revisions
        )

    return GateDecision(
        findings=tuple(findings),
        blocking=tuple(finding for finding in findings if blocks(finding)),
        warnings=tuple(finding for finding in findings if not blocks(finding)),
    )


@dataclass
class _Created:
    """Tables and schemas created earlier in the batch: no rows or running code depend on them."""

    tables: set[_Table]
    schemas: set[str]

    def has(self, table: _Table) -> bool:
        return table in self.tables or table[0] in self.schemas

    def record(self, stmt: ast.Node) -> None:
        if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
            self.tables.add(_table(stmt.relation))
        elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.into and stmt.into.rel:
            self.tables.add(_table(stmt.into.rel))
        elif isinstance(stmt, ast.CreateSchemaStmt) and stmt.schemaname:
            self.schemas.add(stmt.schemaname)
        elif (
            isinstance(stmt, ast.RenameStmt)
            and stmt.renameType == ObjectType.OBJECT_TABLE
            and stmt.relation is not None
            and stmt.newname
            and self.has(_table(stmt.relation))
        ):
            self.tables.add((_table(stmt.relation)[0], stmt.newname))


def _statements(sql: str) -> Iterator[tuple[str, tuple[ast.RawStmt, ...] | ParseError]]:
    """Each statement's text with its parse, or the parser's error for that statement.

    The parser splits exactly; when it fails, the statements are cut at the scanner's `;` tokens
    and parsed one by one, so one bad statement is reported without hiding the others. When even
    the scanner fails (e.g. an unterminated string), the whole text is one unparsed statement.
    """
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
    return table[1] if table[0] == "public" else f"{table[0]}.{table[1]}"


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


def _is_bookkeeping(stmt: ast.Node, version_table: str) -> bool:
    relation = getattr(stmt, "relation", None)
    if isinstance(relation, ast.RangeVar):
        return relation.relname == version_table
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
        return all(_dropped_table(obj)[1] == version_table for obj in stmt.objects or ())
    if isinstance(stmt, ast.TruncateStmt):
        relations = [rel for rel in stmt.relations or () if isinstance(rel, ast.RangeVar)]
        return all(rel.relname == version_table for rel in relations)
    return False


def _check(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """(rule, subject) for each risky thing the statement does."""
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
            yield "rename", f"{renamed} to {stmt.newname}"
    else:
        yield from _check_dml(stmt, created)


def _check_drop(stmt: ast.DropStmt, created: _Created) -> Iterator[tuple[str, str]]:
    if stmt.removeType == ObjectType.OBJECT_TABLE:
        tables = [t for t in map(_dropped_table, stmt.objects or ()) if not created.has(t)]
        if tables:
            yield "drop_table", ", ".join(_name(table) for table in tables)
    elif stmt.removeType == ObjectType.OBJECT_SCHEMA:
        schemas = [".".join(_qualified_names(obj)) for obj in stmt.objects or ()]
        existing = [schema for schema in schemas if schema not in created.schemas]
        if existing:
            yield "drop_schema", ", ".join(existing)


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


def _check_dml(stmt: ast.Node, created: _Created) -> Iterator[tuple[str, str]]:
    """DELETE/UPDATE without WHERE, at top level or as a data-modifying WITH query."""
    if isinstance(stmt, ast.DeleteStmt | ast.UpdateStmt) and stmt.relation is not None:
        table = _table(stmt.relation)
        if stmt.whereClause is None and not created.has(table):
            verb = "delete" if isinstance(stmt, ast.DeleteStmt) else "update"
            yield f"{verb}_without_where", _name(table)
    with_clause = getattr(stmt, "withClause", None)
    if isinstance(with_clause, ast.WithClause):
        for cte in with_clause.ctes or ():
            if isinstance(cte, ast.CommonTableExpr) and cte.ctequery is not None:
                yield from _check_dml(cte.ctequery, created)
