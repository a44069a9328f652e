"""Running revisions for real: one Alembic run, an audit row per revision, a clear failure.

The caller holds the migration lock and hands over the migration session and the audit
trail. Whatever a revision's own code raises becomes a `MigrationFailed` that names the
revision (id and file), the exception's type and message, what this run committed before it
and what to do next; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from migration_resource.audit import AuditTrail, NewRow
from migration_resource.checksums import history_digest, is_resumable, is_transactional
from migration_resource.classification import Classification, describe_revisions
from migration_resource.core import ENGINE_LOGGER, ROLE_INFO, RUNBOOK, EngineCore
from migration_resource.driver_watch import watching
from migration_resource.execution import AppliedRevision, run_online
from migration_resource.inspection import read_versions
from migration_resource.online import InvalidIndexError, concurrently_built_index, invalid_among
from migration_resource.outcomes import EngineError, MigrationFailed, RunInterrupted
from migration_resource.session_guards import SessionGuards
from migration_resource.statement_guard import StatementGuard
from migration_resource.trial import literal_sql

logger = logging.getLogger(ENGINE_LOGGER)

SHOWN_COMMITTED = 3  # revisions named in a failure; the rest are counted
SHOWN_SENT = 2  # statements named as committed by a revision that ended its transaction
SENT_SHOWN_CHARACTERS = 80
# A statement that may end the session's transaction (checked by parsing when it matches).
_MAY_END_TRANSACTION = re.compile(r"\b(?:COMMIT|END|ROLLBACK|ABORT|PREPARE)\b", re.I)
# Where a connection of the revision's own keeps the writes it sent (its connection.info).
_OWN_WRITES = "migration_engine_own_writes"
# What commits nothing when its transaction commits: Alembic's own reads and writes of its
# bookkeeping, and a SELECT that calls nothing (one that calls a function may write, so it
# counts: fail closed).
_READ_OR_BOOKKEEPING = re.compile(
    r"\s*(?:SELECT\s+pg_catalog\.pg_class\.relname\s+FROM\s+pg_catalog\.pg_class\b"
    r"|SELECT\s+alembic_version\.version_num\s+FROM\s+alembic_version\s*$"
    r"|SELECT\b(?![^;]*\bINTO\b)[^(;]*$"
    r"|(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(?:\w+\.)?alembic_version\b)", re.I | re.S)
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout
LOCK_RETRY_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0)
OUT_OF_TIME_MARGIN_SECONDS = 20  # kept free at the end of a run, as the custom resource does


class _OutOfTime(Exception):
    def __init__(self, revision: str, left: float, needed: int) -> None:
        super().__init__(revision)
        self.revision, self.left, self.needed = revision, left, needed


def apply_upgrade(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, before: Classification,
    *, order: tuple[str, ...], target: str, destructive: frozenset[str] = frozenset(),
    guard: StatementGuard | None = None,
) -> tuple[AppliedRevision, ...]:
    """Upgrade to `target`; `order` is the plan's (Alembic's own) order of the revisions,
    `destructive` the revisions the gate found destructive (recorded on their audit rows), and
    `guard` judges each statement before it is sent."""
    logger.info("Running %d pending migrations...", len(order))
    return run_steps(core, connection, trail, before, target, order=order, direction="upgrade",
                     destructive=destructive, guard=guard)


def apply_downgrade(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, before: Classification,
    target: str,
) -> tuple[AppliedRevision, ...]:
    catalogue = core.catalogue
    beyond = catalogue.ancestry(before.current) - catalogue.ancestry(
        () if target == "base" else (target,)
    )
    order = tuple(reversed(catalogue.in_upgrade_order(beyond)))
    return run_steps(core, connection, trail, before, target, order=order,
                     direction="downgrade")


def run_steps(
    core: EngineCore,
    connection: sa.Connection,
    trail: AuditTrail,
    before: Classification,
    target: str,
    *,
    order: tuple[str, ...],
    direction: str,
    destructive: frozenset[str] = frozenset(),
    guard: StatementGuard | None = None,
) -> tuple[AppliedRevision, ...]:
    """One Alembic run (the scripts load once), with an audit row per revision.

    A revision's row is written `running` (and committed, on the audit connection) when its
    first statement is about to run, so a run that dies leaves evidence. It becomes
    `succeeded` only once its COMMIT is known to have succeeded: Alembic's callback fires
    inside the revision's transaction, before the COMMIT, so the row is concluded when the
    next statement runs (the COMMIT is behind it) or the run ends. A failure is blamed on the
    revision the database says did not commit, which is the right one also when a deferred
    constraint fails the COMMIT itself. A transactional revision whose statement timed out
    waiting for a table lock runs again after a backoff, MIGRATION_LOCK_RETRIES times.
    """
    run = _Run(core, trail, order=order, direction=direction, destructive=destructive,
               reaching_head=direction == "upgrade" and target == core.catalogue.head,
               guard=guard, guards=SessionGuards(core.settings.session_guards),
               session_driver=connection.connection.dbapi_connection)
    retries_left = core.settings.lock_retries
    # Revision code may open connections of its own on the engine (op.get_bind().engine
    # .begin()): what it sends there is judged too, as the running revision's.
    sa.event.listen(core.database, "before_cursor_execute", run.before_other_statement)
    sa.event.listen(core.database, "commit", run.on_other_commit)
    try:
        while True:
            sa.event.listen(connection, "before_cursor_execute", run.before_statement)
            sa.event.listen(connection, "commit", run.on_commit)
            try:
                with watching(run):
                    run_online(connection, core.settings,
                               "base" if target == "base" else target, direction=direction,
                               on_step=run.on_step, script=core.catalogue.script,
                               steps_for=core.catalogue.upgrade_steps)
                break
            except _OutOfTime as stop:
                logger.warning("Stopping before revision %s: %.0f s left in this run, %d s needed; "
                               "the next run continues from here", stop.revision, stop.left,
                               stop.needed)
                raise RunInterrupted(
                    f"Applied {len(run.done)} of {len(order)} pending migrations; stopped before "
                    f"{stop.revision} with {stop.left:.0f} s left in this run (a revision may need "
                    f"{stop.needed} s); the next run continues", tuple(run.done),
                ) from None
            except Exception as error:  # a revision's own code: anything can come out
                failed, final = run.failed_revision()
                blocker = _blocker(core, error) if _is_lock_timeout(error) else None
                if blocker is not None and retries_left > 0 and run.may_retry(failed):
                    tried = core.settings.lock_retries - retries_left
                    delay = LOCK_RETRY_BACKOFF_SECONDS[
                        min(tried, len(LOCK_RETRY_BACKOFF_SECONDS) - 1)]
                    logger.warning(
                        "Revision %s waited %d s for a table lock held by %s; its transaction was "
                        "rolled back, trying again in %.0f s (%d tries left)", failed,
                        core.settings.lock_timeout_seconds, blocker, delay, retries_left)
                    run.again(failed, detail=f"lock timeout, held by {blocker}; tried again")
                    retries_left -= 1
                    core._sleep(delay)
                    continue
                _record_failure(core, trail, run.rows.get(failed), error)
                midway = run.midway.get(failed)
                if midway is not None:
                    raise _failed(core, before, tuple(run.done), failed, error, final,
                                  midway=midway, direction=direction) from None
                note = None if blocker is None else (
                    f"waited for a table lock {core.settings.lock_retries - retries_left + 1} "
                    f"times, {core.settings.lock_timeout_seconds} s each; it is held by {blocker}")
                raise _failed(core, before, tuple(run.done), failed, error, final, note,
                              direction=direction) from None
            finally:
                sa.event.remove(connection, "before_cursor_execute", run.before_statement)
                sa.event.remove(connection, "commit", run.on_commit)
    finally:
        sa.event.remove(core.database, "before_cursor_execute", run.before_other_statement)
        sa.event.remove(core.database, "commit", run.on_other_commit)
    run.finished(connection)
    _verify(core, connection, before, target)
    return tuple(run.done)


@dataclass
class _Run:
    """The audit bookkeeping of one run: which revision awaits its COMMIT, which starts next."""

    core: EngineCore
    trail: AuditTrail
    order: tuple[str, ...]
    direction: str
    destructive: frozenset[str]
    reaching_head: bool
    guard: StatementGuard | None = None
    # statement_timeout and lock_timeout, set again before a revision when one before it
    # may have changed them
    guards: SessionGuards = field(default_factory=lambda: SessionGuards(()))
    done: list[AppliedRevision] = field(default_factory=list)
    rows: dict[str, Future[int]] = field(default_factory=dict)  # audit row ids
    # statements ran, COMMIT not yet known to have succeeded
    awaiting_commit: AppliedRevision | None = None
    next_up: str | None = None  # its row starts with its first statement
    running: str | None = None  # the revision whose statements are being sent
    # indexes the running revision built CONCURRENTLY (name, table), checked when it ends
    built_concurrently: list[tuple[str, str]] = field(default_factory=list)
    # revision → how it ended its transaction midway, and what it had sent up to there: that
    # work is committed whatever happens next
    midway: dict[str, str] = field(default_factory=dict)
    sent: dict[str, list[str]] = field(default_factory=dict)  # revision → its first ones
    sent_count: dict[str, int] = field(default_factory=dict)
    connection: sa.Connection | None = None  # the migration session, seen by the listener
    session_driver: Any = None  # its driver connection, which revision code may use itself
    # id(driver connection) → writes revision code sent on a connection of its own, through
    # the driver itself, not yet committed
    raw_writes: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_up = self.order[0]

    def start(self, revision: str, *, concluding: AppliedRevision | None = None) -> None:
        """The revision's `running` row; with `concluding`, the success of the one before
        it is written by the same statement.

        A transactional revision's row is written by the trail's writer thread while the
        revision runs (should the run die first, PostgreSQL rolls the revision back: there is
        nothing for the row to witness). A revision that is not one transaction starts only
        once its row, and every row before it, is committed."""
        self.trail.raise_failure()  # a row that could not be written stops the run here
        catalogue = self.core.catalogue
        # It may have committed on a connection of its own before sending anything here.
        transactional = (is_transactional(catalogue.file_path(revision))
                         and revision not in self.midway)
        row = NewRow(self.direction, revision,
                     direction="up" if self.direction == "upgrade" else "down",
                     checksum=catalogue.checksum(revision), transactional=transactional,
                     parents=catalogue.parents(revision),
                     destructive=revision in self.destructive, durable=False)
        before = None if concluding is None else self.rows[concluding.revision]
        self.rows[revision] = self.trail.start_in_background(row, concluding=before)
        if not transactional:
            self.trail.flush()
        if concluding is not None:
            self._done(concluding)

    def conclude(self, step: AppliedRevision) -> None:
        last = len(self.done) + 1 == len(self.order)
        self.trail.finish_in_background(
            self.rows[step.revision], "succeeded",
            history_digest=history_digest(self.core.catalogue.versions_dir)
            if last and self.reaching_head else None, durable=False,
        )
        self._done(step)

    def _done(self, step: AppliedRevision) -> None:
        self.done.append(step)
        verb = "Applied" if self.direction == "upgrade" else "Reverted"
        logger.info("%s revision %s (%.2f s)", verb, step.revision, step.seconds)

    def before_other_statement(  # noqa: PLR0917 - SQLAlchemy's event signature
        self, connection: sa.Connection, cursor: Any, statement: str, parameters: Any,
        context: Any, executemany: bool,
    ) -> None:
        """A statement on a connection the engine did not open: revision code's own."""
        revision = self.acting
        if ROLE_INFO in connection.info or revision is None:
            return  # the engine's: the migration session's listener, the trail, its reads
        if self.guard is not None and self.guard.active:
            self.guard.check(revision,
                             literal_sql(cursor, statement, parameters, executemany),
                             shown=statement)
        if _MAY_END_TRANSACTION.search(statement) and ends_transaction(
                literal_sql(cursor, statement, parameters, executemany)):
            self._committed_midway(revision, f"it sent {_shown(statement)}, which ends the "
                                   "transaction of a connection of its own",
                                   sent=list(connection.info.get(_OWN_WRITES, [])))
        elif not _READ_OR_BOOKKEEPING.match(statement):
            connection.info.setdefault(_OWN_WRITES, []).append(_shown(statement))

    @property
    def acting(self) -> str | None:
        """The revision whose code runs now: once one is done (its callback came), the next,
        even before it sends anything on the migration session."""
        if self.running is None or self.awaiting_commit is not None:
            return self.next_up or self.running
        return self.running

    def on_commit(self, connection: sa.Connection) -> None:
        """The migration session commits: Alembic's own commit once a revision is done, or the
        revision's code committing midway (`op.get_bind().commit()`, an autocommit_block).
        A commit of reads alone commits nothing."""
        if (self.running is not None and self.awaiting_commit is None
                and self.sent_count.get(self.running)):
            self._committed_midway(self.running, "its code called commit()")

    def on_other_commit(self, connection: sa.Connection) -> None:
        """A connection the revision's code opened itself commits its writes: in for good."""
        writes = connection.info.pop(_OWN_WRITES, None) or []
        writes += self.raw_writes.pop(id(connection.connection.dbapi_connection), [])
        revision = self.acting
        if ROLE_INFO not in connection.info and revision is not None and writes:
            self._committed_midway(revision, "it committed on a connection of its own",
                                   sent=writes)

    def raw_statement(self, driver: Any, statement: str) -> str | None:
        """A statement revision code sends on the driver itself (`driver_watch`): judged by
        the gate and counted as the revision's, as if SQLAlchemy had sent it."""
        revision = self.acting
        if revision is None:
            return None
        if self.guard is not None and self.guard.active:
            self.guard.check(revision, statement)
        if driver is self.session_driver:
            self.guards.note(revision, statement)
            self._note_sent(revision, statement, lambda: statement)
        elif _MAY_END_TRANSACTION.search(statement) and ends_transaction(statement):
            self._committed_midway(revision, f"it sent {_shown(statement)}, which ends the "
                                   "transaction of a connection of its own",
                                   sent=self.raw_writes.pop(id(driver), []))
        elif not _READ_OR_BOOKKEEPING.match(statement):
            self.raw_writes.setdefault(id(driver), []).append(_shown(statement))
        return None

    def raw_commit(self, driver: Any) -> None:
        """Revision code commits on the driver itself: the migration session's transaction
        (the revision's own) or one of a connection of its own."""
        if driver is self.session_driver:
            if (self.running is not None and self.awaiting_commit is None
                    and self.sent_count.get(self.running)):
                self._committed_midway(self.running,
                                       "its code called commit() on the driver's connection")
            return
        writes = self.raw_writes.pop(id(driver), None)
        revision = self.acting
        if revision is not None and writes:
            self._committed_midway(revision, "it committed on a connection of its own",
                                   sent=writes)

    def _note_sent(self, revision: str, statement: str, rendered: Callable[[], str]) -> None:
        """`rendered`: the statement with its parameters, for the parser, asked only when the
        text holds a word that may end a transaction."""
        if revision in self.midway:
            return
        if _MAY_END_TRANSACTION.search(statement) and ends_transaction(rendered()):
            self._committed_midway(
                revision, f"it sent {_shown(statement)}, which ends its transaction")
            return
        if _READ_OR_BOOKKEEPING.match(statement):
            return  # a read commits nothing; alembic_version is Alembic's, not the revision's
        self.sent_count[revision] = self.sent_count.get(revision, 0) + 1
        sent = self.sent.setdefault(revision, [])
        if len(sent) < SHOWN_SENT:
            sent.append(_shown(statement))

    def _committed_midway(self, revision: str, how: str, sent: list[str] | None = None) -> None:
        """Before that commit goes through, its audit row says the revision is not one
        transaction: should it fail, or its run die, nothing retries it and runs are blocked
        until an operator resolves it. `sent`: what that commit commits, when it is not the
        migration session's statements (a connection of the revision's own)."""
        path = self.core.catalogue.file_path(revision)
        if revision in self.midway or not is_transactional(path) or is_resumable(path):
            return  # its file says it commits as it goes, and its failure is handled as such
        if sent is None:
            sent, count = self.sent.get(revision, []), self.sent_count.get(revision, 0)
        else:
            sent, count = sent[:SHOWN_SENT], len(sent)
        what = "; ".join(sent) + (f" and {count - len(sent)} more" if count > len(sent) else "")
        self.midway[revision] = (f"{how}, committing what it had sent: {what}" if sent
                                 else f"{how}, before sending anything")
        row = self.rows.get(revision)
        if row is not None:
            self.trail.mark_non_transactional(row.result(), f"ended its transaction midway: {how}")

    def before_statement(  # noqa: PLR0917 - SQLAlchemy's event signature
        self, connection: sa.Connection, cursor: Any, statement: str, parameters: Any,
        context: Any, executemany: bool,
    ) -> None:
        # A statement after a revision's callback: that revision's COMMIT is behind us.
        committed, self.awaiting_commit = self.awaiting_commit, None
        if self.next_up is not None:
            stop = self._out_of_time(self.next_up)
            if stop is not None:
                if committed is not None:
                    self.conclude(committed)
                self.trail.flush()
                raise stop
            self.guards.restore(connection, self.next_up)
            self.start(self.next_up, concluding=committed)
            self.running, self.next_up = self.next_up, None
        elif committed is not None:
            self.conclude(committed)
        if self.guard is not None and self.guard.active and self.running is not None:
            self.guard.check(self.running,
                             literal_sql(cursor, statement, parameters, executemany),
                             shown=statement)
        if self.running is not None:
            self.guards.note(self.running, statement)
            self._note_sent(self.running, statement,
                            lambda: literal_sql(cursor, statement, parameters, executemany))
        built = concurrently_built_index(statement)
        if built is not None:
            self.built_concurrently.append(built)
            self.connection = connection

    def _out_of_time(self, revision: str) -> _OutOfTime | None:
        """Before each revision, the first included: out of time unless it may finish in this
        run (its statements get MIGRATION_TIMEOUT each), after whatever the run did first
        (classifying, planning, a trial run, the revisions before it)."""
        time_left = self.core.time_left
        if time_left is None:
            return None
        needed = self.core.settings.migration_timeout_seconds + OUT_OF_TIME_MARGIN_SECONDS
        left = time_left()
        return _OutOfTime(revision, left, needed) if left < needed else None

    def on_step(self, step: AppliedRevision) -> None:
        if self.built_concurrently:
            self._refuse_invalid_indexes(step.revision)
        if step.revision not in self.rows:
            self.start(step.revision)
        self.awaiting_commit = step
        self.next_up = next((r for r in self.order if r not in self.rows), None)

    def _refuse_invalid_indexes(self, revision: str) -> None:
        """A CREATE INDEX CONCURRENTLY can end without error and leave an INVALID index (IF
        NOT EXISTS finding the one an interrupted build left): that revision has failed.
        Raised inside its transaction, so alembic_version does not move."""
        built, self.built_concurrently = self.built_concurrently, []
        assert self.connection is not None
        invalid = invalid_among(self.connection, built)
        if invalid:
            raise InvalidIndexError(
                f"revision {revision} left the INVALID index {', '.join(invalid)} (CREATE "
                "INDEX CONCURRENTLY did not complete it); PostgreSQL does not use it but "
                "maintains it on every write: drop it with DROP INDEX CONCURRENTLY and run "
                "again, or build it with migration_resource.online.create_index_concurrently, "
                "which rebuilds an INVALID index")

    def failed_revision(self) -> tuple[str, tuple[str, ...] | None]:
        """The revision that failed, as the database tells it, and alembic_version now."""
        final = _revisions_after_failure(self.core)
        awaiting = self.awaiting_commit
        if awaiting is not None and final is not None and _committed(
            self.core, awaiting.revision, final, self.direction
        ):
            self.conclude(awaiting)  # its COMMIT went through; what failed came after it
            self.awaiting_commit = awaiting = None
        if awaiting is not None:
            return awaiting.revision, final
        applied = {d.revision for d in self.done}
        return next((r for r in self.order if r not in applied), self.order[-1]), final

    def may_retry(self, revision: str) -> bool:
        return revision in self.rows and revision not in self.midway and is_transactional(
            self.core.catalogue.file_path(revision))

    def again(self, revision: str, *, detail: str) -> None:
        """The revision was rolled back and runs again: its row is concluded, a new one starts."""
        self.trail.finish(self.rows.pop(revision).result(), "failed", detail=detail)
        self.awaiting_commit, self.next_up = None, revision
        self.built_concurrently = []
        self.guards.rolled_back()

    def finished(self, connection: sa.Connection) -> None:
        if self.awaiting_commit is not None:
            self.conclude(self.awaiting_commit)
            self.awaiting_commit = None
        self.trail.flush()
        # the session reads the result next, and may serve another run of this process
        self.guards.restore(connection, None)


def _shown(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= SENT_SHOWN_CHARACTERS else text[:SENT_SHOWN_CHARACTERS - 1] + "…"


def ends_transaction(statement: str) -> bool:
    """True when the statement text ends the transaction it runs in: COMMIT, END, ROLLBACK,
    ABORT, PREPARE TRANSACTION, alone or among other statements. Savepoints do not. Text
    the parser cannot read, holding one of those words, counts as ending it (fail closed)."""
    if _MAY_END_TRANSACTION.search(statement) is None:
        return False
    from pglast import ast  # noqa: PLC0415 - loaded only for a statement that may end one
    from pglast.enums import TransactionStmtKind  # noqa: PLC0415
    from pglast.parser import ParseError, parse_sql  # noqa: PLC0415

    try:
        parsed = parse_sql(statement)
    except ParseError:
        return True
    ending = {TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK,
              TransactionStmtKind.TRANS_STMT_PREPARE}
    return any(isinstance(raw.stmt, ast.TransactionStmt) and raw.stmt.kind in ending
               for raw in parsed)


def _is_lock_timeout(error: BaseException) -> bool:
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code == LOCK_NOT_AVAILABLE


_BLOCKER = sa.text("""
    SELECT a.pid, a.application_name, a.state, coalesce(a.xact_start, a.query_start) AS since,
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60) AS query
    FROM pg_catalog.pg_locks l
    JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.relation = to_regclass(:table) AND a.pid <> pg_backend_pid()
      AND a.application_name NOT LIKE :ours
    ORDER BY since NULLS LAST LIMIT 1
""")


def _blocker(core: EngineCore, error: BaseException) -> str:
    """Who holds a lock on the table the timed-out statement wanted, for the operator."""
    table = _statement_table(str(getattr(error, "statement", "") or ""))
    if table is None:
        return "another session (see pg_locks)"
    try:
        with core.reading() as connection:
            row = connection.execute(_BLOCKER, {
                "table": table, "ours": f"{core.settings.application_name}/%",
            }).mappings().first()
    except (EngineError, sa.exc.SQLAlchemyError):
        row = None
    if row is None:
        return f"a session that has released {table} since"
    since = row["since"].isoformat(timespec="seconds") if row["since"] else "an unknown time"
    return (f"pid {row['pid']}, application {row['application_name'] or '(none)'!r}, "
            f"{row['state']} since {since}, running {row['query']!r}")


def _statement_table(statement: str) -> str | None:
    """The first table a statement names (pglast: PostgreSQL's own parser)."""
    from pglast import ast  # noqa: PLC0415 - only a lock timeout needs the parser
    from pglast.parser import ParseError, parse_sql  # noqa: PLC0415
    from pglast.visitors import Visitor  # noqa: PLC0415

    try:
        tree = parse_sql(statement)
    except ParseError:
        return None
    found: list[str] = []

    class Tables(Visitor):
        def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
            name = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
            found.append(str(name))

    Tables()(tree)
    return found[0] if found else None


def _revisions_after_failure(core: EngineCore) -> tuple[str, ...] | None:
    """alembic_version after a failure, or None when the database cannot be read (it is
    restarting, say): the failure is reported either way."""
    try:
        return core.current_revisions()
    except (EngineError, sa.exc.SQLAlchemyError) as error:
        logger.warning("Could not read the database after the failure: %s", core.safe(error))
        return None


def _committed(
    core: EngineCore, revision: str, final: tuple[str, ...], direction: str
) -> bool:
    known = tuple(r for r in final if core.catalogue.is_known(r))
    applied = revision in core.catalogue.ancestry(known)
    return applied if direction == "upgrade" else not applied


def _record_failure(
    core: EngineCore, trail: AuditTrail, row: Future[int] | None, error: BaseException
) -> None:
    if row is None:
        return
    try:
        trail.finish(row.result(), "failed",
                     detail=f"{type(error).__name__}: {core.safe(error)}")
    except sa.exc.SQLAlchemyError:
        # The next run settles the row it finds `running`; the failure itself is reported.
        logger.warning("Could not record the failure in migration_audit; the next run will")


def _failed(  # noqa: PLR0917 - private, one caller
    core: EngineCore, before: Classification, applied: tuple[AppliedRevision, ...],
    revision: str, error: BaseException, final: tuple[str, ...] | None,
    note: str | None = None, *, midway: str | None = None, direction: str = "upgrade",
) -> MigrationFailed:
    path = core.catalogue.file_path(revision)
    # The whole traceback is for the log; the message is for the console and the operator.
    logger.error("Revision %s (%s) raised %s", revision, path.name, type(error).__name__,
                 exc_info=(type(error), error, error.__traceback__))
    now = (f"The database is at revision {describe_revisions(final)}" if final is not None
           else "The database could not be read afterwards: check it with `remote_admin.py "
                "status`")
    if midway is not None:
        where = (f"{midway}, so what it did before that is committed: runs are blocked until "
                 "it is resolved with `remote_admin.py --confirm repair --resolve "
                 f"rolled-back|applied --revision {revision}`")
    elif is_resumable(path):
        where = ("its online steps commit as they go and resume where they stopped: the next "
                 "run continues it")
    elif is_transactional(path):
        where = "its transaction was rolled back"
    else:
        where = ("it has non-transactional steps and may be partly applied: runs are blocked "
                 "until it is resolved with `remote_admin.py --confirm repair --resolve "
                 f"rolled-back|applied --revision {revision}`")
    committed = [a.revision for a in applied]
    done = "committed" if direction == "upgrade" else "reverted"
    if committed:
        named = ", ".join(committed[:SHOWN_COMMITTED])
        if len(committed) > SHOWN_COMMITTED:
            named += f" and {len(committed) - SHOWN_COMMITTED} more"
        before_it = f"{done} before it in this run: {named}"
    else:
        before_it = f"nothing was {done} before it in this run"
    total = len(before.pending) if direction == "upgrade" else len(before.newer)
    action = "failed after" if direction == "upgrade" else "failed to revert after reverting"
    message = (
        f"{before.state.value}: revision {revision} ({path.name}) {action} {len(applied)} "
        f"of {total or '?'} revisions: {_error_text(core, error)}"
        f"{f' ({note})' if note else ''}. "
        f"{before_it[0].upper()}{before_it[1:]}; {where}. {now}. "
        + ("Retry when that session has finished, or end it; see "
           f"{RUNBOOK}#a-table-lock-is-held" if note else
           (f"Fix the revision and deploy again; see {RUNBOOK}#a-revision-fails"
            if direction == "upgrade" else
            f"Fix its downgrade() and run the downgrade again; see {RUNBOOK}#going-back"))
    )
    logger.error(message)
    return MigrationFailed(message, before, applied, final or ())


def _error_text(core: EngineCore, error: BaseException) -> str:
    """`UniqueViolation: could not create unique index ...`: for a database error, the
    driver's own class and message (the server's words), not SQLAlchemy's wrapper around
    them, so the part that says what went wrong comes first."""
    original = getattr(error, "orig", None) if isinstance(error, sa.exc.DBAPIError) else None
    if isinstance(original, BaseException):
        text = f"{type(original).__name__}: {core.safe(original)}"
    else:
        text = f"{type(error).__name__}: {_first_line(core.safe(error))}"
    return text.rstrip(".")  # the message goes on with ". "


def _first_line(text: str) -> str:
    """The error without SQLAlchemy's [SQL: ...] echo when it is long (the log has it)."""
    head, marker, _ = text.partition(" [SQL: ")
    return head if marker and len(text) > 300 else text


def _verify(
    core: EngineCore, connection: sa.Connection, before: Classification, target: str
) -> None:
    """alembic_version after the run, read on the migration session itself."""
    final = read_versions(connection, schema=core.settings.schema)
    connection.rollback()
    expected = () if target == "base" else (target,)
    if final != expected:
        message = (
            f"{before.state.value}: after running the migrations the database is at "
            f"{describe_revisions(final)}, not {target}; see {RUNBOOK}#inconsistent"
        )
        logger.error(message)
        raise MigrationFailed(message, before, (), final)
