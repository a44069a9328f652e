"""The audit trail: every action on the schema, with the checksum of the file that did it.

Table `migration_audit` (owned by this product, created on the first change, never by a
read-only path). One row per revision applied, reverted, baselined or repaired. A row is
written as `running` and committed *before* its revision starts, so a run that dies leaves
evidence; the next run (holding the lock) settles such rows: applied → `succeeded`, rolled
back by PostgreSQL → `failed`, and a non-transactional revision (an `autocommit_block`) →
`failed` that blocks every run until an operator resolves it with `repair`.

Each applied revision's row also records what it stands on (`parents`: its down revisions
and `depends_on`, comma-separated) and whether the change gate found it destructive. After a
code rollback the database holds revisions the deployed scripts do not define; their recorded
parents are what lets the engine see that they descend from the scripts' head (`ahead`)
instead of calling the database `inconsistent`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

AUDIT_TABLE = "migration_audit"
T = TypeVar("T")
logger = logging.getLogger("migration_resource.engine")  # core.ENGINE_LOGGER
ACTORS = ("deploy", "admin", "auto-migrate")

_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    revision text,
    direction text,
    checksum char(64),
    transactional boolean NOT NULL DEFAULT true,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    duration_seconds double precision,
    outcome text NOT NULL,
    resolved boolean NOT NULL DEFAULT false,
    snapshot_id text,
    history_digest char(64),
    detail text,
    parents text,
    destructive boolean
)
"""
# Tables made before a column existed get it on the engine's next write (under the lock).
_NEW_COLUMNS = "ADD COLUMN IF NOT EXISTS parents text, ADD COLUMN IF NOT EXISTS destructive boolean"
# Trails made before revision ids longer than Alembic's 32 characters were recorded (a team
# that widened alembic_version): text is binary-compatible, so no rewrite of the trail.
_WIDE_REVISION = "ALTER COLUMN revision TYPE text"


@dataclass(frozen=True)
class RunContext:
    """Who acts and why: recorded on every audit row."""

    actor: str = "admin"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    snapshot_id: str | None = None

    def __post_init__(self) -> None:
        if self.actor not in ACTORS:
            raise ValueError(f"actor must be one of {', '.join(ACTORS)}, not {self.actor!r}")


@dataclass(frozen=True)
class BlockingFailure:
    """A failed non-transactional revision nobody has resolved yet."""

    id: int
    revision: str
    outcome: str  # "failed", or "running" when its run died (or still runs)
    started_at: datetime
    detail: str


@dataclass(frozen=True)
class AuditState:
    """What the classification needs from the trail; empty when there is no trail yet."""

    exists: bool = False
    blocking: tuple[BlockingFailure, ...] = ()
    last_digest: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)  # revision → last recorded
    # The last verified-baseline attempt found no matching revision (its difference summary).
    failed_baseline: str | None = None
    # revision → what it stands on, as recorded when it was applied (full reads only)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    destructive: frozenset[str] = frozenset()  # applied revisions the gate found destructive


@functools.lru_cache(maxsize=32)
def _row_type(columns: tuple[str, ...]) -> Any:
    return collections.namedtuple("AuditRow", columns)


def _table(connection: sa.Connection, schema: str) -> str:
    return audit_table(connection.dialect, schema)


def audit_table(dialect: sa.Dialect, schema: str) -> str:
    """The trail's table, schema-qualified and quoted for SQL."""
    quote = dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(AUDIT_TABLE)}"


def read_audit(
    connection: sa.Connection, schema: str, *, exists: bool, with_checksums: bool
) -> AuditState:
    if not exists:
        return AuditState()
    table = _table(connection, schema)
    blocking = tuple(
        BlockingFailure(id=row.id, revision=row.revision, outcome=row.outcome,
                        started_at=row.started_at, detail=row.detail or "")
        for row in connection.execute(sa.text(
            f"SELECT id, revision, outcome, started_at, detail FROM {table} "
            "WHERE outcome IN ('failed', 'running') AND NOT transactional AND NOT resolved "
            "ORDER BY id"
        ))
    )
    digest = connection.execute(sa.text(
        f"SELECT history_digest FROM {table} WHERE history_digest IS NOT NULL "
        "ORDER BY id DESC LIMIT 1"
    )).scalar()
    last_baseline = connection.execute(sa.text(
        f"SELECT outcome, detail FROM {table} WHERE action = 'baseline' ORDER BY id DESC LIMIT 1"
    )).first()
    failed_baseline = (
        str(last_baseline.detail or "") if last_baseline and last_baseline.outcome == "failed"
        else None
    )
    checksums: dict[str, str] = {}
    parents: dict[str, tuple[str, ...]] = {}
    destructive: set[str] = set()
    if with_checksums:
        parents, destructive = _recorded_ancestry(connection, table)
        # The latest checksum recorded per revision by anything that vouched for the file.
        for row in connection.execute(sa.text(
            f"SELECT DISTINCT ON (revision) revision, checksum FROM {table} "
            "WHERE checksum IS NOT NULL AND outcome = 'succeeded' "
            "AND action IN ('upgrade', 'baseline', 'adopt', 'repair') "
            "ORDER BY revision, id DESC"
        )):
            checksums[row.revision] = row.checksum
    return AuditState(exists=True, blocking=blocking, last_digest=digest, checksums=checksums,
                      failed_baseline=failed_baseline, parents=parents,
                      destructive=frozenset(destructive))


def _recorded_ancestry(
    connection: sa.Connection, table: str
) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    has_columns = connection.execute(sa.text(
        "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = CAST(:table AS regclass) "
        "AND attname IN ('parents', 'destructive') AND NOT attisdropped"
    ), {"table": table}).scalar_one()
    if has_columns < 2:
        return {}, set()  # a trail written before ancestry was recorded
    parents: dict[str, tuple[str, ...]] = {}
    destructive: set[str] = set()
    for row in connection.execute(sa.text(
        f"SELECT DISTINCT ON (revision) revision, parents, destructive FROM {table} "
        "WHERE parents IS NOT NULL AND outcome = 'succeeded' "
        "AND action IN ('upgrade', 'baseline', 'adopt', 'repair') ORDER BY revision, id DESC"
    )):
        parents[row.revision] = tuple(p for p in row.parents.split(",") if p)
        if row.destructive:
            destructive.add(row.revision)
    return parents, destructive


# A FROM item that makes the statement's own commit not wait for the disk (is_local: for this
# statement's transaction only). For the rows of each revision a run applies: what such a row
# witnesses (the revision's own commits) is written to the WAL after it and waits for the disk
# itself, which makes the row durable too; a server crash right after the last revision can
# lose its `succeeded`, and the next run settles that row from alembic_version. It halves the
# commits a long run waits for.
UNHURRIED = "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unhurried"


@dataclass(frozen=True)
class NewRow:
    """What a `running` row says about the work it stands for."""

    action: str
    revision: str | None
    direction: str | None = None
    checksum: str | None = None
    transactional: bool = True
    detail: str | None = None
    parents: tuple[str, ...] | None = None
    destructive: bool | None = None
    durable: bool = True


class AuditTrail:
    """Writes rows on a connection of its own, in autocommit: each write commits at once.

    Everything is sent by one writer thread, in the order asked, so its connection is opened
    (`open_connection`) while the caller goes on with its own work. A write whose connection
    died (terminated, closed by a parameter group's idle_session_timeout, the server
    restarted) is tried once more on a new one: the trail must not be the reason a revision
    fails.
    """

    def __init__(
        self, open_connection: Callable[[], sa.Connection], table: str, context: RunContext,
    ) -> None:
        self.table = table
        self.context = context
        self._reconnect = open_connection
        self._writer: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="migration-audit")
        self._sent: list[Future[Any]] = []
        self.connection: sa.Connection | None = None
        # The table is made by the first write that needs it, never for a refusal: a refused
        # run leaves a database without a trail as it found it.
        self._table_ensured = False

        def connect() -> None:
            self.connection = open_connection()
        self._in_background(connect, needs_table=False)

    def close(self) -> None:
        """Wait for what the writer thread still has to send, then close the connection."""
        try:
            self.flush()
        except Exception as error:  # never hide what the run itself raised
            logger.warning("An audit row could not be written; the next run settles what it "
                           "finds unfinished: %s", " ".join(str(error).split())[:300])
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            self._close_connection()

    def _close_connection(self) -> None:
        if self.connection is None:
            return
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a dead one has nothing to close
            self.connection.close()

    # -- sending: in the caller's thread, or in order by the writer thread -------------------
    def _execute(self, statement: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run one statement and wait for it, behind whatever the writer thread has queued; an
        earlier write's failure (the connection could not be opened, say) is raised first."""
        sent = self._in_background(lambda: self._write(statement, parameters))
        self.flush()
        return sent.result()

    def _in_background(self, write: Callable[[], T], *, needs_table: bool = True) -> Future[T]:
        if self._writer is None:
            raise RuntimeError("the audit trail is closed")
        if needs_table and not self._table_ensured:
            self.ensure_table_in_background()
        sent = self._writer.submit(write)
        self._sent = [f for f in self._sent if not f.done() or f.exception() is not None]
        self._sent.append(sent)
        return sent

    def flush(self) -> None:
        """Wait until every row sent in the background is written; raise the first failure."""
        sent, self._sent = self._sent, []
        for future in sent:
            future.result()

    def raise_failure(self) -> None:
        """Raise a background write's failure known by now, without waiting for the others."""
        for future in self._sent:
            if future.done() and future.exception() is not None:
                self.flush()

    def _write(self, statement: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run one statement (it commits: the connection is in autocommit); on a dead
        connection, once more on a new one."""
        for attempt in (1, 2):
            try:
                return self._send(statement, parameters or {})
            except sa.exc.DBAPIError as error:
                if attempt == 2 or not (
                    error.connection_invalidated or isinstance(error, sa.exc.OperationalError)
                ):
                    raise
                self._close_connection()
                self.connection = self._reconnect()
        raise AssertionError("unreachable")

    def _send(self, statement: str, parameters: dict[str, Any]) -> Any:
        """On the driver's own cursor (psycopg2 or psycopg, both `%(name)s`): a long run
        writes a row per revision, and SQLAlchemy's statement handling costs as much as the
        round trip. Errors come out as SQLAlchemy's, as everywhere else in the engine."""
        if self.connection is None:  # opening it failed: that failure was raised before
            raise RuntimeError("the audit trail has no connection")
        driver = self.connection.connection.dbapi_connection
        assert driver is not None
        dbapi = self.connection.dialect.loaded_dbapi
        try:
            cursor = driver.cursor()
            try:
                cursor.execute(statement, parameters or None)
                if ";" in statement and getattr(cursor, "nextset", None):
                    _to_last_result(cursor, dbapi)
                if cursor.description is None:
                    return cursor.rowcount
                row = _row_type(tuple(column[0] for column in cursor.description))
                return [row(*values) for values in cursor.fetchall()]
            finally:
                cursor.close()
        except dbapi.Error as error:
            raise sa.exc.DBAPIError.instance(
                statement, parameters, error, dbapi.Error,
                connection_invalidated=bool(driver.closed)) from None

    def ensure_table_in_background(self) -> None:
        """The table, made if missing (under the migration lock: the caller holds it).

        One round trip: two statements in one simple query (no DO block, whose procedural
        language costs as much again on a new database). No ALTER (whose lock would queue
        behind any reader of the trail, an application's schema check say) unless a column
        is really missing."""
        self._table_ensured = True
        self._in_background(self._ensure, needs_table=False)

    def _ensure(self) -> None:
        rows = self._write(
            f"{_DDL.format(table=self.table)}; "
            "SELECT count(*) FILTER (WHERE attname IN ('parents', 'destructive')), "
            "bool_or(attname = 'revision' AND atttypmod <> -1) "
            f"FROM pg_catalog.pg_attribute WHERE attrelid = '{self.table}'::regclass "
            "AND NOT attisdropped")
        if rows[0][0] < 2:
            self._write(f"ALTER TABLE {self.table} {_NEW_COLUMNS}")
        if rows[0][1]:
            try:
                self._write(f"ALTER TABLE {self.table} {_WIDE_REVISION}")
            except sa.exc.DBAPIError as error:  # a view on the trail, another owner
                logger.warning("The audit trail's revision column stays 32 characters wide "
                               "(%s); ids longer than that cannot be recorded",
                               " ".join(str(error.orig).split())[:200])

    def start(
        self, action: str, revision: str | None, *, direction: str | None = None,
        checksum: str | None = None, transactional: bool = True, detail: str | None = None,
        parents: tuple[str, ...] | None = None, destructive: bool | None = None,
        concluding: int | None = None, durable: bool = True,
    ) -> int:
        """A `running` row; with `concluding`, that row's success is written by the same
        statement (one round trip per revision, not two, on a long history). `durable=False`:
        see `UNHURRIED`."""
        row = NewRow(action, revision, direction, checksum, transactional, detail, parents,
                      destructive, durable)
        return int(self._execute(*self._start_sql(row, concluding))[0][0])

    def start_in_background(self, row: NewRow, *,
                            concluding: Future[int] | None = None) -> Future[int]:
        """`start`, written by the writer thread while the caller goes on. For the row of a
        transactional revision: should the run die before the row is written, PostgreSQL
        rolls that revision back, and the next run finds it pending as before."""
        def write() -> int:
            before = None if concluding is None else concluding.result()
            return int(self._write(*self._start_sql(row, before))[0][0])
        return self._in_background(write)

    def _start_sql(self, row: NewRow, concluding: int | None) -> tuple[str, dict[str, Any]]:
        conclude = "" if concluding is None else (
            f"WITH concluded AS (UPDATE {self.table} SET outcome = 'succeeded', "
            "finished_at = clock_timestamp(), "
            "duration_seconds = extract(epoch FROM clock_timestamp() - started_at), "
            "detail = NULL WHERE id = %(concluding)s AND outcome = 'running') ")
        return (
            f"{conclude}INSERT INTO {self.table} (request_id, actor, action, revision, direction, "
            "checksum, transactional, outcome, snapshot_id, detail, parents, destructive) "
            "SELECT %(request_id)s, %(actor)s, %(action)s, %(revision)s, %(direction)s, "
            "%(checksum)s, %(transactional)s, 'running', %(snapshot_id)s, %(detail)s, "
            "%(parents)s, %(destructive)s "
            f"{'' if row.durable else UNHURRIED} RETURNING id",
            {
                "request_id": self.context.request_id, "actor": self.context.actor,
                "action": row.action, "revision": row.revision, "direction": row.direction,
                "checksum": row.checksum, "transactional": row.transactional,
                "snapshot_id": self.context.snapshot_id, "detail": row.detail,
                "parents": None if row.parents is None else ",".join(row.parents),
                "destructive": row.destructive, "concluding": concluding,
            },
        )

    def finish(
        self, row_id: int, outcome: str, *, detail: str | None = None,
        history_digest: str | None = None, durable: bool = True,
    ) -> None:
        self._execute(*self._finish_sql(row_id, outcome, detail, history_digest, durable))

    def mark_non_transactional(self, row_id: int, detail: str) -> None:
        """The revision of this running row ended its transaction midway: should it fail, or
        its run die, it blocks runs until resolved. Written and committed before that commit
        goes through."""
        self._execute(f"UPDATE {self.table} SET transactional = false, detail = %(detail)s "
                      f"WHERE id = %(id)s", {"id": row_id, "detail": detail})

    def finish_in_background(
        self, row: Future[int], outcome: str, *, history_digest: str | None = None,
        durable: bool = True,
    ) -> None:
        """`finish`, written by the writer thread (`flush` waits for it)."""
        self._in_background(lambda: self._write(*self._finish_sql(
            row.result(), outcome, None, history_digest, durable)))

    def _finish_sql(
        self, row_id: int, outcome: str, detail: str | None, history_digest: str | None,
        durable: bool,
    ) -> tuple[str, dict[str, Any]]:
        # Only a row still running is concluded, and a success keeps no earlier detail: a
        # row another run settled is never flipped, nor a success left saying "rolled back".
        return (
            f"UPDATE {self.table} SET outcome = %(outcome)s, finished_at = clock_timestamp(), "
            "duration_seconds = extract(epoch FROM clock_timestamp() - started_at), "
            "detail = CASE WHEN %(outcome)s = 'succeeded' THEN CAST(%(detail)s AS text) "
            "ELSE coalesce(%(detail)s, detail) END, "
            "history_digest = coalesce(%(digest)s, history_digest) "
            f"{'' if durable else UNHURRIED} "
            f"WHERE {self.table}.id = %(id)s AND {self.table}.outcome = 'running'",
            {"outcome": outcome, "detail": detail, "digest": history_digest, "id": row_id},
        )

    def record(
        self, action: str, revision: str | None, outcome: str, *, checksum: str | None = None,
        detail: str | None = None, history_digest: str | None = None,
        parents: tuple[str, ...] | None = None,
    ) -> int:
        """A finished action in one go (baseline, adopt, repair)."""
        row_id = self.start(action, revision, checksum=checksum, parents=parents)
        self.finish(row_id, outcome, detail=detail, history_digest=history_digest)
        return row_id

    def record_refusal(
        self, action: str, revision: str | None, outcome: str, *, detail: str
    ) -> bool:
        """A refusal's row, only in a trail that exists already; True when written."""
        def write() -> bool:
            found = self._write("SELECT to_regclass(%(table)s) IS NOT NULL AS found",
                                {"table": self.table})
            if not found[0][0]:
                return False
            if not self._table_ensured:
                self._table_ensured = True
                self._ensure()  # a trail of an older version gets its new columns
            row_id = int(self._write(*self._start_sql(
                NewRow(action, revision, detail=detail), None))[0][0])
            self._write(*self._finish_sql(row_id, outcome, detail, None, True))
            return True
        sent = self._in_background(write, needs_table=False)
        self.flush()
        return sent.result()

    def settle_unfinished(self, applied: frozenset[str]) -> list[str]:
        """Rows left `running` by a run that died; returns what was concluded, for the log."""
        notes: list[str] = []
        rows = self._execute(
            f"SELECT id, revision, direction, transactional FROM {self.table} "
            "WHERE outcome = 'running' ORDER BY id"
        )
        for row in rows:
            done = (row.revision in applied) == (row.direction != "down")
            if done:
                outcome, detail = "succeeded", "finished; its run ended before recording it"
            elif row.transactional:
                outcome, detail = "failed", "its run ended; PostgreSQL rolled the revision back"
            else:
                outcome, detail = "failed", (
                    "its run ended inside a non-transactional step; the database may hold "
                    "part of it"
                )
            self.finish(row.id, outcome, detail=detail)
            notes.append(f"audit row {row.id} ({row.revision}): {outcome}, {detail}")
        return notes

    def fill_parents(self, parents: dict[str, tuple[str, ...]]) -> int:
        """Record what applied revisions stand on where a trail written before did not.

        The values come from the scripts that define those revisions, never from a guess;
        returns how many rows were filled.
        """
        filled = 0
        for revision, stands_on in parents.items():
            filled += int(self._execute(
                f"UPDATE {self.table} SET parents = %(parents)s WHERE revision = %(revision)s "
                "AND parents IS NULL AND outcome = 'succeeded' "
                "AND action IN ('upgrade', 'baseline', 'adopt', 'repair')",
                {"parents": ",".join(stands_on), "revision": revision},
            ))
        return filled

    def resolve(self, failure_ids: list[int]) -> None:
        self._execute(f"UPDATE {self.table} SET resolved = true WHERE id = ANY(%(ids)s)",
                      {"ids": failure_ids})


def deferred_revisions(connection: sa.Connection, schema: str, *, exists: bool) -> frozenset[str]:
    """Revisions a deploy left for a later release (contract ones, and what follows them)."""
    if not exists:
        return frozenset()
    rows = connection.execute(sa.text(
        f"SELECT DISTINCT revision FROM {_table(connection, schema)} "
        "WHERE action = 'defer' AND outcome = 'deferred' AND revision IS NOT NULL"))
    return frozenset(str(row[0]) for row in rows)


def recent_actions(
    connection: sa.Connection, schema: str, *, exists: bool, limit: int = 10
) -> list[dict[str, object]]:
    if not exists:
        return []
    rows = connection.execute(
        sa.text(
            f"SELECT id, request_id, actor, action, revision, direction, outcome, resolved, "
            f"started_at, duration_seconds, snapshot_id, detail FROM {_table(connection, schema)} "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {"limit": limit},
    ).mappings()
    return [
        {
            **{key: row[key] for key in ("id", "request_id", "actor", "action", "revision",
                                         "direction", "outcome", "resolved", "snapshot_id",
                                         "detail")},
            "started_at": row["started_at"].isoformat(timespec="seconds"),
            "seconds": None if row["duration_seconds"] is None
            else round(float(row["duration_seconds"]), 3),
        }
        for row in rows
    ]


def _to_last_result(cursor: Any, dbapi: Any) -> None:
    """Several statements in one text: psycopg 3 reads the first one's result, psycopg2 the
    last one's (and has no further results to move to). Move to the last, as psycopg2 is."""
    try:
        while cursor.nextset():
            pass
    except dbapi.NotSupportedError:
        pass
