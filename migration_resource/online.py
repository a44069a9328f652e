"""Online building blocks for revision authors: changes that never hold a long lock.

Called from a revision's ``upgrade()`` with Alembic's ``op``::

    from migration_resource.online import (
        add_constraint_not_valid, backfill, create_index_concurrently, validate_constraint)

    def upgrade() -> None:
        backfill(op, table="users", set_={"email_domain": "lower(split_part(email, '@', 2))"},
                 where="email_domain IS NULL")

- `backfill`: an UPDATE in batches of a bounded number of rows, each batch its own
  transaction (its row locks last one batch), walking the key in order with a pause between
  batches. Each batch records how far it got in `migration_backfill_progress` *in the same
  statement* (a data-modifying CTE), so a run that dies (a Lambda timeout, a terminated
  backend) loses at most the batch in flight, which PostgreSQL rolls back, and the next run
  resumes after the last committed key: every row is updated exactly once. The progress row
  is removed when the backfill completes, and the table with the last row.
- `create_index_concurrently`: `CREATE INDEX CONCURRENTLY` outside a transaction. An INVALID
  index of that name (an interrupted build) is dropped `CONCURRENTLY` and built again; a valid
  one is left alone; an index that is not valid afterwards is an error, never a success.
- `add_unique_constraint`: a UNIQUE (or PRIMARY KEY) constraint on a table with rows, without
  building its index under the table's ACCESS EXCLUSIVE lock: the index is built
  `CONCURRENTLY` first (as above), then the constraint takes it (`USING INDEX`), which only
  updates the catalogue.
- `drop_index_concurrently`, `reindex_concurrently`: `DROP INDEX` and `REINDEX` without
  blocking writes, outside the revision's transaction.
- `add_constraint_not_valid` / `validate_constraint`: a CHECK or FOREIGN KEY added `NOT VALID`
  (a brief lock; new writes are checked at once), validated by a later revision with
  `VALIDATE CONSTRAINT`, which scans under SHARE UPDATE EXCLUSIVE and blocks no reads or writes.
- `invalid_indexes` (for `status`) and `unfinished_backfills`: what an interrupted run left.

A revision whose `upgrade()` (and `downgrade()`) hold only these calls resumes where it
stopped when it runs again: the engine does not block runs after its failure (see
`migration_resource.checksums.is_resumable`). Keep one such step per revision.

Three ways a revision runs, and what each helper does in them:

- for real (an autocommit block that commits): as above;
- offline (``--sql``, the dry run's rendering): the statements are written once, with a
  comment saying how they repeat; nothing is read;
- inside a transaction that is not an autocommit block (a helper called outside one): a
  backfill runs ONE batch, so whoever rolls that transaction back does not hold every row of
  the table until then; the other helpers run as for real, inside that transaction.

The engine's trial run (the plan's preview) runs revisions for real in a scratch database,
never on the live one, so there the helpers run as for real too.

Light on purpose: SQLAlchemy and the standard library only (no AWS, no SQL parser); revision
files import it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext


class Operations(Protocol):
    """What the helpers use of Alembic's `op` (the `alembic.op` module or an Operations)."""

    def get_context(self) -> MigrationContext: ...
    def get_bind(self) -> sa.Connection: ...
    def execute(self, *args: Any, **kw: Any) -> Any: ...
    def create_index(self, *args: Any, **kw: Any) -> Any: ...
    def drop_index(self, *args: Any, **kw: Any) -> Any: ...

# The engine's log channel (migration_resource.core.ENGINE_LOGGER); not imported from there,
# which would load the whole engine into every revision file.
ENGINE_LOGGER = "migration_resource.engine"
logger = logging.getLogger(ENGINE_LOGGER)

PROGRESS_TABLE = "migration_backfill_progress"
NAME_LIMIT = 200  # a backfill's default name: its SET clause, cut to this

_PROGRESS_DDL = f"""
CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    revision text NOT NULL,
    table_name text NOT NULL,
    name text NOT NULL,
    last_key text NOT NULL,
    rows_done bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (revision, table_name, name)
)"""
_PROGRESS_ROW = (f"SELECT last_key, rows_done, batches FROM {PROGRESS_TABLE} "
                 "WHERE revision = :bf_revision AND table_name = :bf_table AND name = :bf_name")
_PROGRESS_DONE = (f"DELETE FROM {PROGRESS_TABLE} WHERE revision = :bf_revision "
                  "AND table_name = :bf_table AND name = :bf_name")
# The table goes with its last row: a finished migration leaves nothing of the helper behind
# (no table for `alembic check`, a schema dump or the verified baseline to find).
PROGRESS_DROP_WHEN_EMPTY = (
    f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM {PROGRESS_TABLE}) "
    f"THEN DROP TABLE {PROGRESS_TABLE}; END IF; END $$"
)
# Whether the key is a column with a unique index of its own, and its type (for the cast).
_KEY_INFO = """
SELECT to_regclass(:bf_relation) IS NOT NULL AS table_exists,
       (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = to_regclass(:bf_relation) AND a.attname = :bf_key
          AND a.attnum > 0 AND NOT a.attisdropped) AS key_type,
       EXISTS (SELECT FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = to_regclass(:bf_relation) AND i.indisunique
                 AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
                 AND a.attname = :bf_key) AS key_unique
"""
_INDEX_STATE = """
SELECT i.indisvalid AS valid, t.relname AS table_name,
       pg_catalog.pg_get_indexdef(i.indexrelid) AS definition
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
WHERE i.indexrelid = to_regclass(:relation)
"""
_CONSTRAINT_STATE = """
SELECT c.convalidated AS valid, pg_catalog.pg_get_constraintdef(c.oid) AS definition
FROM pg_catalog.pg_constraint c
WHERE c.conrelid = to_regclass(:relation) AND c.conname = :name
"""
# INVALID indexes beside the given one on its table, named as REINDEX CONCURRENTLY names its
# transient copies (the index's name cut to fit, then _ccnew or _ccold and maybe a number).
_REINDEX_LEFTOVERS = r"""
SELECT n.nspname, c.relname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = (SELECT indrelid FROM pg_catalog.pg_index
                    WHERE indexrelid = to_regclass(:relation))
  AND NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$'
ORDER BY c.relname
"""
_INVALID_INDEXES = """
SELECT c.relname AS name, t.relname AS table_name,
       pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
       EXISTS (SELECT FROM pg_catalog.pg_stat_progress_create_index p
               WHERE p.index_relid = i.indexrelid) AS building
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND NOT i.indisvalid
ORDER BY c.relname
"""
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_CONCURRENT_INDEX = re.compile(
    rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{_IDENTIFIER})\s+ON\s+(?:ONLY\s+)?"
    rf"(?P<table>{_IDENTIFIER}(?:\s*\.\s*{_IDENTIFIER})?)",
    re.I,
)
# A lone colon would be read as a bind parameter by sa.text(); `::` casts are left alone.
_LONE_COLON = re.compile(r"(?<!:):(?!:)")


class InvalidIndexError(RuntimeError):
    """An index is INVALID after its build: PostgreSQL does not use it, yet maintains it."""


@dataclass(frozen=True)
class InvalidIndex:
    name: str
    table: str
    definition: str
    building: bool = False  # a CREATE INDEX CONCURRENTLY is building it right now

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "table": self.table, "definition": self.definition,
                "building": "yes" if self.building else "no"}

    def describe(self) -> str:
        if self.building:
            return f"{self.name} on {self.table} (being built right now)"
        return (f"{self.name} on {self.table} (left by an interrupted CREATE INDEX "
                "CONCURRENTLY; the next run of create_index_concurrently rebuilds it, else "
                f"DROP INDEX CONCURRENTLY {self.name})")


@dataclass(frozen=True)
class UnfinishedBackfill:
    revision: str
    table: str
    name: str
    last_key: str
    rows_done: int
    updated_at: str

    def describe(self) -> str:
        return (f"backfill of {self.table} ({self.name}) by revision {self.revision or '?'} "
                f"stopped after {self.rows_done} rows (last key {self.last_key}, "
                f"{self.updated_at}); the next run resumes after it")


@dataclass(frozen=True)
class BackfillResult:
    table: str
    name: str
    rows: int  # rows updated by this call
    batches: int  # batches run by this call
    seconds: float
    rows_before: int = 0  # rows updated by earlier, interrupted runs of the same backfill
    resumed_after: str | None = None  # the key this call started after, when it resumed
    longest_batch_seconds: float = 0.0  # the longest batch on the server: its row locks
    complete: bool = True  # False offline and in a trial run (one batch)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


# -- the batched backfill ---------------------------------------------------------------------
def backfill(
    op: Operations,
    *,
    table: str,
    set_: str | Mapping[str, str],
    where: str | None = None,
    key: str = "id",
    batch_rows: int = 1000,
    pause_seconds: float = 0.1,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    schema: str | None = None,
    revision: str | None = None,
    log_every: int = 100,
) -> BackfillResult:
    """UPDATE `table` SET `set_` WHERE `where`, `batch_rows` rows per transaction.

    `set_` is a SET clause (``"a = lower(b)"``) or a mapping of column → SQL expression;
    `where` (SQL, optional) says which rows still need it, and is checked again by each
    UPDATE, so a row the application changed meanwhile is left alone. Both may use bind
    parameters (``:name``) given in `params`. `key` must be a column with a unique index of
    its own (the primary key): batches walk it in order, and a rerun resumes after the last
    committed value. `name` tells apart two backfills of one table in one revision (default:
    the SET clause); `revision` is taken from the calling revision file. Progress is logged
    every `log_every` batches.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    if pause_seconds < 0:
        raise ValueError(f"pause_seconds must not be negative, not {pause_seconds}")
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    assignments = _set_clause(set_, quote)
    job = _Backfill(
        relation=_relation(table, schema, quote), label=table if schema is None
        else f"{schema}.{table}", key=quote(key), key_name=key,
        assignments=assignments, where=where, batch_rows=batch_rows,
        name=name or _cut(" ".join(assignments.split()), NAME_LIMIT),
        revision=revision if revision is not None else _calling_revision(),
        params=dict(params or {}),
    )
    with _outside_transaction(context):
        if context.as_sql:
            return job.render_offline(op, pause_seconds)
        bind = op.get_bind()
        return job.run(bind, committing=_commits_each_statement(bind),
                       pause_seconds=pause_seconds, log_every=max(1, log_every))


@dataclass(frozen=True)
class _Backfill:
    relation: str  # quoted, schema-qualified when a schema was given
    label: str  # as the author wrote it, for the log and the progress row
    key: str  # quoted
    key_name: str
    assignments: str
    where: str | None
    batch_rows: int
    name: str
    revision: str
    params: dict[str, Any]

    def batch_sql(self, *, after: str | None) -> str:
        """One batch in one statement: pick the next keys, update them, record the progress.

        `after` is the key's SQL type when the batch starts after a key (`:bf_last`), None for
        the first batch. The progress row is written only when the batch found rows; the
        statement then returns it, with how many rows it picked and updated and how long its
        transaction (and so the row locks) had lasted on the server.
        """
        picked_where = [f"({self.where})"] if self.where else []
        if after is not None:
            picked_where.append(f"{self.key} > CAST(:bf_last AS {after})")
        where_sql = f" WHERE {' AND '.join(picked_where)}" if picked_where else ""
        recheck = f" AND ({self.where})" if self.where else ""
        return (
            f"WITH picked AS (SELECT {self.key} AS k FROM {self.relation}{where_sql} "
            f"ORDER BY {self.key} LIMIT :bf_rows), "
            f"updated AS (UPDATE {self.relation} SET {self.assignments} "
            f"WHERE {self.key} IN (SELECT k FROM picked){recheck} RETURNING 1) "
            f"INSERT INTO {PROGRESS_TABLE} AS p "
            "(revision, table_name, name, last_key, rows_done, batches) "
            "SELECT :bf_revision, :bf_table, :bf_name, "
            "(SELECT CAST(picked.k AS text) FROM picked ORDER BY picked.k DESC LIMIT 1), "
            "(SELECT count(*) FROM updated), 1 WHERE EXISTS (SELECT FROM picked) "
            "ON CONFLICT (revision, table_name, name) DO UPDATE SET "
            "last_key = EXCLUDED.last_key, rows_done = p.rows_done + EXCLUDED.rows_done, "
            "batches = p.batches + 1, updated_at = clock_timestamp() "
            "RETURNING p.last_key, p.rows_done, (SELECT count(*) FROM picked) AS picked, "
            "(SELECT count(*) FROM updated) AS updated, "
            "CAST(EXTRACT(epoch FROM clock_timestamp() - transaction_timestamp()) "
            "AS double precision) AS seconds"
        )

    @property
    def keys(self) -> dict[str, Any]:
        return {"bf_revision": self.revision, "bf_table": self.label, "bf_name": self.name}

    def render_offline(self, op: Operations, pause_seconds: float) -> BackfillResult:
        context = op.get_context()
        impl = context.impl
        impl.static_output(
            f"-- backfill of {self.label} in batches of {self.batch_rows} rows by {self.key} "
            f"(each batch commits on its own, {pause_seconds:g} s apart; progress in "
            f"{PROGRESS_TABLE}, so a rerun resumes after the last committed batch)")
        op.execute(sa.text(_PROGRESS_DDL))
        op.execute(sa.text(self.batch_sql(after=None)).bindparams(
            bf_rows=self.batch_rows, **self.keys, **self.params))
        impl.static_output(
            f"-- ... repeated with AND {self.key} > (the last key of the previous batch), "
            "until a batch finds no row")
        op.execute(sa.text(_PROGRESS_DONE).bindparams(**self.keys))
        op.execute(sa.text(PROGRESS_DROP_WHEN_EMPTY))
        return BackfillResult(self.label, self.name, rows=0, batches=0, seconds=0.0,
                              complete=False)

    def run(
        self, bind: sa.Connection, *, committing: bool, pause_seconds: float, log_every: int
    ) -> BackfillResult:
        started = time.perf_counter()
        bind.execute(sa.text(_PROGRESS_DDL))
        key_type = self._key_type(bind)
        found = bind.execute(sa.text(_PROGRESS_ROW), self.keys).one_or_none()
        last: str | None = None if found is None else str(found.last_key)
        rows_before = 0 if found is None else int(found.rows_done)
        if last is not None:
            logger.info("Backfill of %s (%s): resuming after %s %s (%d rows done by an "
                        "earlier run)", self.label, self.name, self.key_name, last, rows_before)
        rows = batches = 0
        longest = 0.0
        first_sql, next_sql = sa.text(self.batch_sql(after=None)), sa.text(
            self.batch_sql(after=key_type))
        while True:
            values = {"bf_rows": self.batch_rows, **self.keys, **self.params}
            if last is not None:
                values["bf_last"] = last
            row = bind.execute(first_sql if last is None else next_sql, values).one_or_none()
            if row is None:
                break
            batches += 1
            rows += int(row.updated)
            last = str(row.last_key)
            longest = max(longest, float(row.seconds))
            if not committing:
                logger.info(
                    "Backfill of %s (%s): one batch of %d rows tried inside this run's "
                    "transaction (not an autocommit block); a run in one updates every row, "
                    "%d per transaction", self.label, self.name, int(row.picked), self.batch_rows)
                return BackfillResult(self.label, self.name, rows, batches,
                                      time.perf_counter() - started, rows_before,
                                      None if found is None else str(found.last_key),
                                      longest, complete=False)
            if batches % log_every == 0:
                self._log_progress(rows, rows_before, batches, started, last)
            if int(row.picked) < self.batch_rows:
                break
            if pause_seconds:
                time.sleep(pause_seconds)
        if committing:
            bind.execute(sa.text(_PROGRESS_DONE), self.keys)
            bind.execute(sa.text(PROGRESS_DROP_WHEN_EMPTY))
        seconds = time.perf_counter() - started
        logger.info(
            "Backfill of %s (%s) complete: %d rows in %d batches in %.1f s (%.0f rows/s); the "
            "longest batch held its row locks %.3f s%s", self.label, self.name, rows, batches,
            seconds, rows / seconds if seconds > 0 else 0.0, longest,
            f"; {rows_before} rows were done by an earlier run" if rows_before else "")
        return BackfillResult(self.label, self.name, rows, batches, seconds, rows_before,
                              None if found is None else str(found.last_key), longest)

    def _key_type(self, bind: sa.Connection) -> str:
        info = bind.execute(sa.text(_KEY_INFO), {"bf_relation": self.relation,
                                                "bf_key": self.key_name}).one()
        if not info.table_exists:
            raise ValueError(f"backfill: table {self.label} does not exist")
        if info.key_type is None:
            raise ValueError(f"backfill: {self.label} has no column {self.key_name!r}")
        if not info.key_unique:
            raise ValueError(
                f"backfill: the key {self.label}.{self.key_name} has no unique index of its "
                "own; batches walk the key in order and would skip rows sharing a value: "
                "use the primary key (key=...)")
        return str(info.key_type)

    def _log_progress(
        self, rows: int, rows_before: int, batches: int, started: float, last: str
    ) -> None:
        seconds = time.perf_counter() - started
        logger.info("Backfill of %s (%s): %d rows in %d batches, %.0f rows/s, up to %s %s%s",
                    self.label, self.name, rows, batches, rows / seconds if seconds else 0.0,
                    self.key_name, last,
                    f" ({rows + rows_before} with the earlier run)" if rows_before else "")


def unfinished_backfills(connection: sa.Connection) -> list[UnfinishedBackfill]:
    """Backfills an interrupted run left part-way (the next run resumes them)."""
    exists = connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": PROGRESS_TABLE}).scalar()
    if not exists:
        return []
    rows = connection.execute(sa.text(
        f"SELECT revision, table_name, name, last_key, rows_done, updated_at "
        f"FROM {PROGRESS_TABLE} ORDER BY updated_at"))
    return [UnfinishedBackfill(r.revision, r.table_name, r.name, r.last_key, int(r.rows_done),
                               r.updated_at.isoformat(timespec="seconds")) for r in rows]


# -- concurrent indexes ----------------------------------------------------------------------
def create_index_concurrently(
    op: Operations,
    name: str,
    table: str,
    columns: Sequence[str | sa.TextClause],
    *,
    unique: bool = False,
    where: str | None = None,
    schema: str | None = None,
    **kw: Any,
) -> None:
    """`CREATE INDEX CONCURRENTLY`, outside the revision's transaction; safe to run again.

    An index of that name that is INVALID (left by a build that was interrupted or failed) is
    dropped `CONCURRENTLY` first and built again; a valid one is kept as it is. A build that
    fails drops the INVALID index it leaves, when the session is still there to do it, and
    raises; an index that is not valid afterwards raises `InvalidIndexError`. `where` makes a
    partial index; other keywords go to `op.create_index` (``postgresql_using="gin"``, ...).
    """
    context = op.get_context()
    relation = _relation(name, schema, context.dialect.identifier_preparer.quote)

    def build() -> None:
        op.create_index(name, table, list(columns), unique=unique, schema=schema,
                        postgresql_concurrently=True,
                        postgresql_where=sa.text(where) if where else None, **kw)

    with _outside_transaction(context):
        if context.as_sql:
            context.impl.static_output(
                f"-- an INVALID index {name} left by an interrupted build is dropped first "
                f"(DROP INDEX CONCURRENTLY); a valid one is kept and nothing is built")
            build()
            return
        bind = op.get_bind()
        found = _index_state(bind, relation)
        if found is not None and found.valid:
            if found.table_name != table:
                raise ValueError(f"create_index_concurrently: an index named {name} exists "
                                 f"on table {found.table_name}, not {table}")
            logger.info("Index %s exists and is valid (%s); nothing to build", name,
                        found.definition)
            return
        if found is not None:
            logger.warning("Index %s is INVALID (an interrupted CREATE INDEX CONCURRENTLY): "
                           "dropping it concurrently and building it again", name)
            op.drop_index(name, table_name=table, schema=schema, postgresql_concurrently=True)
        started = time.perf_counter()
        try:
            build()
        except Exception:
            _drop_if_invalid(op, bind, name, table, schema, relation)
            raise
        after = _index_state(bind, relation)
        if after is None or not after.valid:
            raise InvalidIndexError(
                f"index {name} on {table} is not valid after CREATE INDEX CONCURRENTLY; it "
                "is not used by queries but slows writes: the next run drops and rebuilds it")
        logger.info("Index %s built concurrently in %.1f s", name, time.perf_counter() - started)


def drop_index_concurrently(
    op: Operations, name: str, *, table: str | None = None, schema: str | None = None
) -> None:
    """`DROP INDEX CONCURRENTLY IF EXISTS`, outside the revision's transaction (downgrades)."""
    with _outside_transaction(op.get_context()):
        op.drop_index(name, table_name=table, schema=schema, postgresql_concurrently=True,
                      if_exists=True)


def reindex_concurrently(op: Operations, name: str, *, schema: str | None = None) -> None:
    """`REINDEX INDEX CONCURRENTLY`, outside the revision's transaction: the index is rebuilt
    beside the old one, and reads and writes go on. What interrupted rebuilds left (INVALID
    `..._ccnew`, `..._ccnew1`, `..._ccold` indexes on the same table: PostgreSQL's names,
    cut to fit) is dropped first; safe to run again."""
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    relation = _relation(name, schema, quote)
    with _outside_transaction(context):
        if not context.as_sql:
            leftovers = op.get_bind().execute(sa.text(_REINDEX_LEFTOVERS),
                                              {"relation": relation}).all()
            for leftover_schema, leftover in leftovers:
                logger.warning("Index %s is what an interrupted REINDEX CONCURRENTLY of %s "
                               "left: dropping it concurrently first", leftover, name)
                op.execute(sa.text("DROP INDEX CONCURRENTLY IF EXISTS "
                                   f"{quote(leftover_schema)}.{quote(leftover)}"))
        started = time.perf_counter()
        op.execute(sa.text(f"REINDEX INDEX CONCURRENTLY {relation}"))
        if not context.as_sql:
            logger.info("Index %s rebuilt concurrently in %.1f s", name,
                        time.perf_counter() - started)


def add_unique_constraint(
    op: Operations,
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    primary_key: bool = False,
    schema: str | None = None,
) -> None:
    """A UNIQUE constraint (or, with `primary_key`, the table's PRIMARY KEY) named `name` on
    `columns`, for a table with rows: its unique index, also named `name`, is built with
    `create_index_concurrently`, then `ADD CONSTRAINT ... USING INDEX` turns it into the
    constraint under a brief lock. Safe to run again: a valid index is kept, a constraint of
    that name that exists already is left alone.

    For a primary key the columns must be NOT NULL already: otherwise PostgreSQL sets them
    NOT NULL itself, scanning the table under the lock (add a CHECK (col IS NOT NULL) NOT
    VALID, validate it, then SET NOT NULL, first).
    """
    if not columns:
        raise ValueError("add_unique_constraint: name the columns, e.g. columns=['email']")
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    relation = _relation(table, schema, quote)
    if not context.as_sql:
        found = _constraint_state(op.get_bind(), relation, name)
        if found is not None:
            logger.info("Constraint %s on %s exists already (%s); nothing to add", name, table,
                        found.definition)
            return
    create_index_concurrently(op, name, table, list(columns), unique=True, schema=schema)
    kind = "PRIMARY KEY" if primary_key else "UNIQUE"
    op.execute(sa.text(
        f"ALTER TABLE {relation} ADD CONSTRAINT {quote(name)} {kind} USING INDEX {quote(name)}"))


def _drop_if_invalid(  # noqa: PLR0917 - private
    op: Operations, bind: sa.Connection, name: str, table: str, schema: str | None,
    relation: str,
) -> None:
    """After a failed build: drop what it left, if this session can still do so."""
    if not _commits_each_statement(bind):
        return  # an enclosing transaction: it is rolled back with everything else
    try:
        left = _index_state(bind, relation)
        if left is not None and not left.valid:
            op.drop_index(name, table_name=table, schema=schema, postgresql_concurrently=True)
            logger.warning("The build of index %s failed; the INVALID index it left was "
                           "dropped", name)
    except sa.exc.SQLAlchemyError:
        logger.warning("The build of index %s failed and its INVALID index could not be "
                       "dropped now; the next run drops and rebuilds it", name)


def invalid_indexes(connection: sa.Connection, schema: str = "public") -> list[InvalidIndex]:
    """INVALID indexes in `schema`: interrupted concurrent builds, or builds running now."""
    rows = connection.execute(sa.text(_INVALID_INDEXES), {"schema": schema})
    return [InvalidIndex(r.name, r.table_name, r.definition, bool(r.building)) for r in rows]


def concurrently_built_index(statement: str) -> tuple[str, str] | None:
    """(index name, table as written) of a `CREATE INDEX CONCURRENTLY` statement, else None."""
    found = _CONCURRENT_INDEX.match(statement)
    if found is None:
        return None
    return _unquote(found.group("name")), found.group("table")


def invalid_among(connection: sa.Connection, built: Sequence[tuple[str, str]]) -> list[str]:
    """Which of the indexes built (name, table as written) are INVALID now."""
    invalid = []
    for name, table in built:
        state = connection.execute(sa.text(
            "SELECT NOT i.indisvalid FROM pg_catalog.pg_index i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:table) AND c.relname = :name"
        ), {"table": table, "name": name}).scalar()
        if state:
            invalid.append(f"{name} on {table}")
    return invalid


# -- constraints added NOT VALID, validated later --------------------------------------------
def add_constraint_not_valid(
    op: Operations,
    name: str,
    table: str,
    *,
    check: str | None = None,
    columns: Sequence[str] = (),
    references: str | None = None,
    referred_columns: Sequence[str] = ("id",),
    ondelete: str | None = None,
    schema: str | None = None,
) -> None:
    """A CHECK (`check`) or a FOREIGN KEY (`columns` → `references`) added NOT VALID.

    Only a brief lock: existing rows are not checked (`validate_constraint` does that in a
    later revision), new and updated rows are, at once. `name` is the constraint's name as
    the database holds it (no naming convention applied). Nothing is done when a constraint
    of that name exists already on the table.
    """
    if (check is None) == (references is None):
        raise ValueError("add_constraint_not_valid: give either check=... or references=...")
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    relation = _relation(table, schema, quote)
    if check is not None:
        definition = f"CHECK ({check})"
    else:
        if not columns:
            raise ValueError("add_constraint_not_valid: a foreign key needs columns=[...]")
        local = ", ".join(quote(c) for c in columns)
        remote = ", ".join(quote(c) for c in referred_columns)
        definition = (
            f"FOREIGN KEY ({local}) REFERENCES {_qualified(str(references), quote)} ({remote})"
            + (f" ON DELETE {ondelete}" if ondelete else "")
        )
    if not context.as_sql:
        found = _constraint_state(op.get_bind(), relation, name)
        if found is not None:
            logger.info("Constraint %s on %s exists already (%s%s); nothing to add", name,
                        table, found.definition, "" if found.valid else ", NOT VALID")
            return
    op.execute(sa.text(_escape_colons(
        f"ALTER TABLE {relation} ADD CONSTRAINT {quote(name)} {definition} NOT VALID")))


def validate_constraint(
    op: Operations, name: str, table: str, *, schema: str | None = None
) -> None:
    """`ALTER TABLE ... VALIDATE CONSTRAINT`: checks the existing rows under SHARE UPDATE
    EXCLUSIVE (reads and writes go on); a row that violates it fails the revision."""
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    relation = _relation(table, schema, quote)
    started = time.perf_counter()
    op.execute(sa.text(f"ALTER TABLE {relation} VALIDATE CONSTRAINT {quote(name)}"))
    if not context.as_sql:
        logger.info("Constraint %s on %s validated in %.1f s", name, table,
                    time.perf_counter() - started)


# -- helpers ---------------------------------------------------------------------------------
@contextmanager
def _outside_transaction(context: MigrationContext) -> Iterator[None]:
    """Alembic's autocommit_block(), raising what its body raised.

    The block commits in a `finally`; after an error in the body (a terminated session,
    a failed build) that commit fails too, with PendingRollbackError, which would hide the
    error that matters from the operator.
    """
    try:
        with context.autocommit_block():
            yield
    except sa.exc.PendingRollbackError as masking:
        hidden = masking.__context__
        if isinstance(hidden, Exception) and not isinstance(hidden, sa.exc.PendingRollbackError):
            raise hidden from None
        raise


@dataclass(frozen=True)
class _State:
    valid: bool
    definition: str
    table_name: str = ""


def _index_state(bind: sa.Connection, relation: str) -> _State | None:
    row = bind.execute(sa.text(_INDEX_STATE), {"relation": relation}).one_or_none()
    return None if row is None else _State(bool(row.valid), str(row.definition),
                                           str(row.table_name))


def _constraint_state(bind: sa.Connection, relation: str, name: str) -> _State | None:
    row = bind.execute(sa.text(_CONSTRAINT_STATE),
                       {"relation": relation, "name": name}).one_or_none()
    return None if row is None else _State(bool(row.valid), str(row.definition))


def _commits_each_statement(bind: sa.Connection) -> bool:
    """True inside a real autocommit block; False inside an enclosing transaction."""
    return bind.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def _set_clause(set_: str | Mapping[str, str], quote: Any) -> str:
    if isinstance(set_, str):
        if not set_.strip():
            raise ValueError("backfill: set_ is empty")
        return set_.strip()
    if not set_:
        raise ValueError("backfill: set_ names no column")
    return ", ".join(f"{quote(column)} = {expression}" for column, expression in set_.items())


def _relation(name: str, schema: str | None, quote: Any) -> str:
    return quote(name) if schema is None else f"{quote(schema)}.{quote(name)}"


def _qualified(dotted: str, quote: Any) -> str:
    return ".".join(quote(part) for part in dotted.split("."))


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def _escape_colons(sql: str) -> str:
    return _LONE_COLON.sub(r"\\:", sql)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _calling_revision() -> str:
    """The `revision` of the revision file whose upgrade() called the helper."""
    frame = sys._getframe(2)
    value = frame.f_globals.get("revision")
    return value if isinstance(value, str) else ""

