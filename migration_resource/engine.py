"""The migration engine: classify, plan, dry-run and apply Alembic migrations safely.

It knows nothing of AWS: the Lambda handler and the CLIs hand it settings and read back
outcomes. Every path that writes holds the migration lock; every read-only path runs in a
READ ONLY transaction, so a status check or a dry run cannot change the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from migration_resource.classification import (
    Classification,
    classify,
    classify_up_to_date_fast,
    describe_revisions,
)
from migration_resource.dsn import mask_text
from migration_resource.execution import AppliedRevision, offline_sql, run_online
from migration_resource.inspection import DatabaseSnapshot, read_database
from migration_resource.lock import LockBusy, lock_key, migration_lock
from migration_resource.revisions import (
    HEAD_TARGETS,
    RevisionCatalogue,
    ScriptsError,
    TargetRevisionError,
    check_target_syntax,
)
from migration_resource.settings import EngineSettings
from migration_resource.states import DatabaseState

logger = logging.getLogger(__name__)

RUNBOOK = "docs/RUNBOOK.md"
CONNECT_TIMEOUT_SECONDS = 10


class EngineError(RuntimeError):
    """An operation did not happen; the message names the state and the next step."""

    code = "error"

    def __init__(self, message: str, classification: Classification | None = None) -> None:
        super().__init__(message)
        self.classification = classification


class MigrationRefused(EngineError):
    """The database is in a state the requested operation must not touch."""

    code = "refused"


class ConfirmationRequired(EngineError):
    """A change was requested without explicit confirmation."""

    code = "confirmation_required"


class DatabaseUnavailable(EngineError):
    """The database could not be reached; nothing was read or changed."""

    code = "database_unavailable"


class MigrationFailed(EngineError):
    """A migration raised; the database is left at the last revision that completed."""

    code = "migration_failed"

    def __init__(
        self,
        message: str,
        classification: Classification | None,
        applied: tuple[AppliedRevision, ...],
        final: tuple[str, ...],
    ) -> None:
        super().__init__(message, classification)
        self.applied = applied
        self.final = final


@dataclass(frozen=True)
class Outcome:
    """What an operation found and did; `as_dict` is the admin answer."""

    operation: str
    classification: Classification
    message: str
    ok: bool = True
    final: tuple[str, ...] = ()  # revisions after the operation
    applied: tuple[AppliedRevision, ...] = ()
    sql: dict[str, str] | None = None  # dry run: revision → SQL
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        c = self.classification
        answer: dict[str, object] = {
            "ok": self.ok,
            "operation": self.operation,
            "state": c.state.value,
            "current": list(c.current),
            "target": list(c.target),
            "pending": list(c.pending),
            "final": list(self.final),
            "applied": [a.as_dict() for a in self.applied],
            "message": self.message,
            "seconds": round(self.seconds, 3),
        }
        if c.cause:
            answer["cause"] = c.cause
        if c.detail:
            answer["detail"] = c.detail
        if self.sql is not None:
            answer["sql"] = self.sql
        if self.notes:
            answer["notes"] = list(self.notes)
        return answer


def create_database_engine(settings: EngineSettings) -> sa.Engine:
    """No pool: a Lambda or CLI run opens few connections and must not keep any."""
    return sa.create_engine(
        settings.database_url,
        poolclass=NullPool,
        connect_args={
            "application_name": settings.application_name,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
    )


class MigrationEngine:
    def __init__(self, settings: EngineSettings, *, database: sa.Engine | None = None) -> None:
        self.settings = settings
        self.database = database or create_database_engine(settings)
        self._catalogue: RevisionCatalogue | None = None

    # -- the scripts -------------------------------------------------------------------
    @property
    def catalogue(self) -> RevisionCatalogue:
        """Loaded on first use only: an up-to-date deploy never reads the scripts."""
        if self._catalogue is None:
            self._catalogue = RevisionCatalogue.load(self.settings.script_location)
        return self._catalogue

    def _resolve(self, target: str) -> str:
        check_target_syntax(target)
        return self.catalogue.resolve_target(target)

    # -- operations --------------------------------------------------------------------
    def status(
        self, target: str = "head", *, target_heads: tuple[str, ...] | None = None
    ) -> Outcome:
        started = time.perf_counter()
        classification = self._classify(target, target_heads)
        message = f"Migration state: {classification.state.value}"
        if classification.pending:
            pending = classification.pending
            message += f" ({len(pending)} pending: {', '.join(pending)})"
        elif classification.detail and classification.state is not DatabaseState.UP_TO_DATE:
            message += f" ({classification.detail})"
        return Outcome(
            operation="status",
            classification=classification,
            message=message,
            final=classification.current,
            seconds=time.perf_counter() - started,
        )

    def dry_run(self, target: str = "head") -> Outcome:
        """The plan and its SQL (Alembic offline mode); the database is only read."""
        started = time.perf_counter()
        classification = self._classify(target, None)
        (resolved,) = classification.target
        refusal = self._refusal(classification, "run-migrations")
        if refusal is not None:
            return Outcome(
                operation="dry_run", classification=classification, ok=False,
                message=f"Dry run: the migration would be refused. {refusal}",
                final=classification.current, seconds=time.perf_counter() - started,
            )
        sql: dict[str, str] = {}
        notes: tuple[str, ...] = ()
        if classification.pending:
            if len(classification.current) > 1:
                notes = ("SQL preview needs a single current revision; the database has "
                         f"{len(classification.current)} branch heads",)
            else:
                start = classification.current[0] if classification.current else "base"
                sql = offline_sql(self.settings.script_location, start, resolved)
            message = (
                f"Dry run: {len(classification.pending)} pending migrations would run "
                f"({describe_revisions(classification.current)} → {resolved}); nothing was changed"
            )
        else:
            message = f"Dry run: nothing to apply ({classification.detail}); nothing was changed"
        logger.info(message)
        return Outcome(
            operation="dry_run", classification=classification, message=message, sql=sql,
            final=classification.current, seconds=time.perf_counter() - started, notes=notes,
        )

    def migrate(
        self, target: str = "head", *, target_heads: tuple[str, ...] | None = None
    ) -> Outcome:
        """Bring the database up to `target`. Never downgrades; refuses unsafe states."""
        started = time.perf_counter()
        before = self._classify(target, target_heads)
        self._raise_if_refused(before, "run-migrations")
        if not before.needs_changes:
            return self._nothing_to_do("migrate", before, started)
        (resolved,) = before.target

        with self._locked(before), self._migration_session() as connection:
            now = classify(self._read(connection), self.catalogue, resolved)
            connection.commit()  # Alembic must receive a connection outside a transaction
            if now.state is not before.state or now.current != before.current:
                logger.info(
                    "Migration state changed while waiting for the lock: %s (revision %s)",
                    now.state.value, describe_revisions(now.current),
                )
            self._raise_if_refused(now, "run-migrations")
            if not now.needs_changes:
                return self._nothing_to_do("migrate", now, started)
            applied = self._run(connection, now, resolved, direction="upgrade")

        logger.info(
            "Database migrations completed successfully. Revision: %s → %s",
            describe_revisions(now.current), resolved,
        )
        return Outcome(
            operation="migrate",
            classification=now,
            message=(
                "Database migrations completed successfully. Revision: "
                f"{describe_revisions(now.current)} → {resolved}"
            ),
            final=(resolved,),
            applied=applied,
            seconds=time.perf_counter() - started,
        )

    def downgrade(self, target: str, *, confirm: bool) -> Outcome:
        """The only way down: explicit target, explicit confirmation, under the lock."""
        started = time.perf_counter()
        cleaned = check_target_syntax(target)
        if cleaned in HEAD_TARGETS:
            raise TargetRevisionError(
                "A downgrade needs an explicit target revision id (or 'base'), not 'head'"
            )
        resolved = "base" if cleaned == "base" else self._resolve(cleaned)
        if not confirm:
            raise ConfirmationRequired(
                f"Downgrading to {resolved} can drop columns and data; repeat with confirmation "
                "(--confirm) after taking a snapshot"
            )
        with self._reading() as connection:
            before = classify(self._read(connection), self.catalogue, resolved)
        logger.info("Migration state: %s", before.state.value)
        if before.state is DatabaseState.UP_TO_DATE:
            return self._nothing_to_do("downgrade", before, started)
        if before.state is not DatabaseState.AHEAD:
            raise MigrationRefused(
                f"{before.state.value}: cannot downgrade to {resolved} ({before.detail}); "
                "nothing was changed. A downgrade target must be an ancestor of the current "
                "revision; see `remote_admin.py status`",
                before,
            )
        with self._locked(before), self._migration_session() as connection:
            now = classify(self._read(connection), self.catalogue, resolved)
            connection.commit()
            if now.state is not DatabaseState.AHEAD:
                return self._nothing_to_do("downgrade", now, started)
            logger.info("Downgrading to %s...", resolved)
            applied = self._run(connection, now, resolved, direction="downgrade")
        message = (
            f"Database downgrade completed. Revision: {describe_revisions(now.current)} → "
            f"{resolved}"
        )
        logger.info(message)
        return Outcome(
            operation="downgrade", classification=now, message=message,
            final=() if resolved == "base" else (resolved,), applied=applied,
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.database.dispose()

    # -- internals -----------------------------------------------------------------------
    def _classify(self, target: str, target_heads: tuple[str, ...] | None) -> Classification:
        """Classify against `target`; with `target_heads`, try the no-script fast path first.

        Without target heads the target is validated against the scripts before the
        database is read.
        """
        check_target_syntax(target)
        if target_heads:
            with self._reading() as connection:
                snapshot = self._read(connection)
            fast = classify_up_to_date_fast(snapshot, target_heads)
            if fast is not None:
                logger.info("Migration state: %s", fast.state.value)
                return fast
            resolved = self._resolve(target)
            if tuple(sorted(target_heads)) != (resolved,):
                raise ScriptsError(
                    f"The deploy asked for heads {', '.join(target_heads)} but the bundled "
                    f"scripts resolve {target!r} to {resolved}; the template and the Lambda "
                    "bundle come from different builds: synthesize and deploy again"
                )
        else:
            resolved = self._resolve(target)
            with self._reading() as connection:
                snapshot = self._read(connection)
        classification = classify(snapshot, self.catalogue, resolved)
        logger.info("Migration state: %s", classification.state.value)
        return classification

    def _read(self, connection: sa.Connection) -> DatabaseSnapshot:
        return read_database(
            connection, schema=self.settings.schema, ignored_tables=self.settings.ignored_tables
        )

    def _nothing_to_do(
        self, operation: str, classification: Classification, started: float
    ) -> Outcome:
        if classification.state is DatabaseState.UP_TO_DATE:
            message = "Auto-migration: Database is up to date"
        else:
            message = f"Nothing to do: {classification.detail}"
        logger.info(message)
        return Outcome(
            operation=operation, classification=classification, message=message,
            final=classification.current, seconds=time.perf_counter() - started,
        )

    def _refusal(self, classification: Classification, command: str) -> str | None:
        state = classification.state
        if state is DatabaseState.INCONSISTENT:
            return (
                f"inconsistent: {classification.detail}; nothing was changed. "
                f"See {RUNBOOK}#inconsistent"
            )
        if state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY:
            return (
                f"tables_without_migration_history: {classification.detail}; nothing was "
                f"changed. Establish the history with a verified baseline before {command}; "
                f"see {RUNBOOK}#tables-without-migration-history"
            )
        return None

    def _raise_if_refused(self, classification: Classification, command: str) -> None:
        refusal = self._refusal(classification, command)
        if refusal is not None:
            logger.warning(refusal)
            raise MigrationRefused(refusal, classification)

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """A READ ONLY transaction: the server itself rejects any write on this path."""
        with self._connect() as connection:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                yield connection
            finally:
                connection.rollback()

    @contextmanager
    def _migration_session(self) -> Iterator[sa.Connection]:
        """A connection whose statements and lock waits are bounded by MIGRATION_TIMEOUT."""
        with self._connect() as connection:
            connection.exec_driver_sql(
                f"SET statement_timeout = '{int(self.settings.migration_timeout_seconds)}s'"
            )
            connection.exec_driver_sql(
                f"SET lock_timeout = '{int(self.settings.lock_timeout_seconds)}s'"
            )
            connection.commit()
            yield connection

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        try:
            connection = self.database.connect()
        except sa.exc.OperationalError as error:
            raise DatabaseUnavailable(
                "Cannot connect to the database: " + self._safe(error.orig or error)
                + "; nothing was read or changed. Check the host, port, credentials and "
                "network path (security group) and retry"
            ) from None
        with connection:
            yield connection

    @contextmanager
    def _locked(self, classification: Classification) -> Iterator[None]:
        key = lock_key(self.settings.schema)
        try:
            with self._connect_lock(key):
                yield
        except LockBusy as busy:
            raise MigrationRefused(
                f"{classification.state.value}: {busy}; nothing was changed. Retry when that "
                "run has finished (check it with `remote_admin.py status`)",
                classification,
            ) from None

    @contextmanager
    def _connect_lock(self, key: int) -> Iterator[None]:
        try:
            with migration_lock(self.database, key, wait_seconds=self.settings.lock_wait_seconds):
                yield
        except sa.exc.OperationalError as error:
            raise DatabaseUnavailable(
                "Lost the database connection that holds the migration lock: "
                + self._safe(error.orig or error)
            ) from None

    def _run(
        self, connection: sa.Connection, before: Classification, target: str, *, direction: str
    ) -> tuple[AppliedRevision, ...]:
        if direction == "upgrade":
            logger.info("Running %d pending migrations...", len(before.pending))
        applied: list[AppliedRevision] = []

        def log_step(step: AppliedRevision) -> None:
            applied.append(step)
            verb = "Applied" if step.direction == "upgrade" else "Reverted"
            logger.info("%s revision %s (%.2f s)", verb, step.revision, step.seconds)

        try:
            run_online(connection, self.settings.script_location, target,
                       direction=direction, on_step=log_step)
        except Exception as error:
            final = self._current_revisions()
            message = (
                f"{before.state.value}: migration to {target} failed after "
                f"{len(applied)} of {len(before.pending) or '?'} revisions: {self._safe(error)}. "
                f"The database is at revision {describe_revisions(final)} (each revision runs "
                "in its own transaction, so the failed one was rolled back); fix the migration "
                "and deploy again"
            )
            logger.error(message)
            raise MigrationFailed(message, before, tuple(applied), final) from None

        final = self._current_revisions()
        expected = () if target == "base" else (target,)
        if final != expected:
            message = (
                f"{before.state.value}: after running the migrations the database is at "
                f"{describe_revisions(final)}, not {target}; see {RUNBOOK}#inconsistent"
            )
            logger.error(message)
            raise MigrationFailed(message, before, tuple(applied), final)
        return tuple(applied)

    def _current_revisions(self) -> tuple[str, ...]:
        with self._reading() as connection:
            return self._read(connection).version_rows

    def _safe(self, error: BaseException) -> str:
        """An error as one line without secrets or SQLAlchemy's boilerplate links."""
        # SQLAlchemy appends the statement's parameters (row data) and a docs link: drop both.
        text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
        text = " ".join(text.split())
        password = self.settings.database_url.password
        return mask_text(text, (str(password),) if password else ())[:500]
