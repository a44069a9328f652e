"""What every engine command stands on: connections, the lock, classification and refusals.

The commands (`migration_resource/commands/`) are small functions over one `EngineCore`, as
Alembic's `command.py` is over its Config and ScriptDirectory. The core knows nothing of AWS.
Every path that writes holds the migration lock; every read-only path runs in a READ ONLY
transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from migration_resource.audit import (
    AuditTrail,
    RunContext,
    audit_table,
    deferred_revisions,
    recent_actions,
)
from migration_resource.classification import (
    Classification,
    classify,
    classify_up_to_date_fast,
)
from migration_resource.driver_watch import (
    announce,
    connection_factory,
    engine_commit,
    engine_cursor,
)
from migration_resource.dsn import mask_text
from migration_resource.inspection import DatabaseSnapshot, read_database
from migration_resource.lock import LockBusy, lock_key, session_lock
from migration_resource.outcomes import DatabaseUnavailable, MigrationRefused, Outcome
from migration_resource.revisions import RevisionCatalogue, ScriptsError, check_target_syntax
from migration_resource.row_values import hide_row_values
from migration_resource.settings import EngineSettings
from migration_resource.states import (
    AMBIGUOUS_BASELINE,
    CHECKSUM_MISMATCH,
    DIVERGED,
    FAILED_RUN,
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
    UNVERIFIABLE_BASELINE,
    DatabaseState,
)

# One log channel for every command: operators filter on it, and it is the name the logs have
# always had.
ENGINE_LOGGER = "migration_resource.engine"
logger = logging.getLogger(ENGINE_LOGGER)

if TYPE_CHECKING:
    from migration_resource.plan import MigrationPlan

RUNBOOK = "docs/RUNBOOK.md"
CONNECT_TIMEOUT_SECONDS = 10
CONNECT_BACKOFF_SECONDS = 1.0
# How often the server checks that the client of a running statement is still there.
CONNECTION_CHECK_MS = 500
APPLICATION_NAME_LIMIT = 63  # PostgreSQL truncates longer names
# Where a connection the engine opened keeps its role ("read", "admin/work", ...): a
# connection without one was opened by revision code (op.get_bind().engine.begin()).
ROLE_INFO = "migration_engine_role"
# TCP keepalives: a connection through a NAT or a failed-over endpoint that went silent is
# noticed in about a minute, not after the kernel's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}
STATUS_HISTORY_ROWS = 5
# What a refusal says when it wrote its row into an audit trail that existed (and nothing else).
_NOTHING_CHANGED = "; nothing was changed"


def with_recorded_row(message: str) -> str:
    """A refusal's message, saying the one thing it wrote: its row in migration_audit."""
    return message.replace(_NOTHING_CHANGED,
                           _NOTHING_CHANGED + " but its row in migration_audit", 1)

_NEXT_STEP = {
    FAILED_RUN: "Resolve it with `remote_admin.py --confirm repair --resolve "
                "rolled-back|applied --revision REV`",
    UNVERIFIABLE_BASELINE: "Make the tables match a revision, or stamp one with --baseline REV",
    AMBIGUOUS_BASELINE: "Find out from the data which of them ran, and stamp that one with "
                        "--baseline REV",
    CHECKSUM_MISMATCH: "Revert the edit, or accept it with `remote_admin.py --confirm repair "
                       "--realign-checksums`",
    UNKNOWN_REVISION: "Restore its revision file, or stamp the schema's revision with "
                      "--baseline REV",
    OVERLAPPING_REVISIONS: "Stamp the revision the schema has with --baseline REV",
    DIVERGED: "Deploy a target that includes both branches (their merge)",
}


def create_database_engine(settings: EngineSettings) -> sa.Engine:
    """No pool: a Lambda or CLI run opens few connections and must not keep any. Revision
    code's own use of the driver is seen (`migration_resource.driver_watch`)."""
    factory = connection_factory(sa.make_url(settings.database_url).get_driver_name())
    engine = sa.create_engine(
        settings.database_url,
        poolclass=NullPool,
        connect_args={
            "application_name": settings.application_name,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            **KEEPALIVES,
            **({"connection_factory": factory} if factory is not None else {}),
        },
    )
    announce(engine)
    return engine


class EngineCore:
    def __init__(
        self,
        settings: EngineSettings,
        *,
        database: sa.Engine | None = None,
        on_connection_error: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        refresh_credentials: Callable[[], sa.URL] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database or create_database_engine(settings)
        self._catalogue: RevisionCatalogue | None = None
        # The connection the last READ ONLY read used, kept for the next connection asked
        # for: a run classifies, then takes the lock, and each new connection costs the
        # server a backend (and RDS a TLS handshake). Only READ ONLY readers leave one here:
        # they change no session state beyond the application name, set again on reuse.
        self._idle: sa.Connection | None = None
        # Counted by the Lambda as a metric: a just-created or resuming database refuses
        # connections for a while, and a trend of these deserves an alarm.
        self._on_connection_error = on_connection_error
        self._sleep = sleep
        # Reads the credentials again (the Lambda's secret, rotated since it was cached),
        # once, when the server refuses the password.
        self._refresh_credentials = refresh_credentials
        # The plan the deploy's gate check made before its snapshot, reused by the migrate
        # that follows in the same run when the database has not moved.
        self.last_plan: MigrationPlan | None = None
        # Seconds left in this run (the Lambda's remaining time), when it is bounded: the
        # apply stops between revisions rather than start one it may not finish.
        self.time_left: Callable[[], float] | None = None

    # -- the scripts -------------------------------------------------------------------
    @property
    def catalogue(self) -> RevisionCatalogue:
        """Loaded on first use only: an up-to-date deploy never reads the scripts."""
        if self._catalogue is None:
            self._catalogue = RevisionCatalogue.load(self.settings)
        return self._catalogue

    @property
    def scripts_loaded(self) -> bool:
        return self._catalogue is not None

    def resolve(self, target: str) -> str:
        check_target_syntax(target)
        return self.catalogue.resolve_target(target)

    def close(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            self._close(idle)
        self.database.dispose()

    # -- classification ------------------------------------------------------------------
    def classify(
        self, target: str, target_heads: tuple[str, ...] | None, digest: str | None
    ) -> Classification:
        """Classify against `target`; with `target_heads`, try the no-script fast path first.

        Without target heads the target is validated against the scripts before the
        database is read.
        """
        check_target_syntax(target)
        if not target_heads:
            return self.classify_resolved(self.resolve(target))
        fast, snapshot = self._up_to_date_fast(target_heads, digest)
        if fast is not None:
            return fast
        resolved = self.resolve(target)
        if tuple(sorted(target_heads)) != (resolved,):
            raise ScriptsError(
                f"The deploy asked for heads {', '.join(target_heads)} but the bundled "
                f"scripts resolve {target!r} to {resolved}; the template and the Lambda "
                "bundle come from different builds: synthesize and deploy again"
            )
        classification = self.classify_resolved(resolved)
        if (classification.state is DatabaseState.UP_TO_DATE and digest is not None
                and snapshot.audit.last_digest != digest):
            # Up to date by the full path because the recorded digest is not this history's
            # (an engine upgrade, a reformatted revision): record it, or every later deploy
            # reads every script too.
            return dataclasses.replace(classification, needs_bookkeeping=True)
        return classification

    def up_to_date_fast(
        self, target_heads: tuple[str, ...], digest: str | None
    ) -> Classification | None:
        """`up_to_date` from one query without the scripts, or None when that cannot tell."""
        return self._up_to_date_fast(target_heads, digest)[0]

    def _up_to_date_fast(
        self, target_heads: tuple[str, ...], digest: str | None
    ) -> tuple[Classification | None, DatabaseSnapshot]:
        with self.reading() as connection:
            snapshot = self.read(connection, with_checksums=False)
        fast = classify_up_to_date_fast(snapshot, target_heads, digest)
        if fast is not None:
            logger.info("Migration state: %s", fast.state.value)
        return fast, snapshot

    def classify_resolved(self, resolved: str) -> Classification:
        with self.reading() as connection:
            snapshot = self.read(connection, with_checksums=True)
        classification = classify(snapshot, self.catalogue, resolved)
        logger.info("Migration state: %s", classification.state.value)
        return classification

    def classify_locked(self, connection: sa.Connection, resolved: str) -> Classification:
        snapshot = self.read(connection, with_checksums=True)
        connection.commit()  # Alembic must receive a connection outside a transaction
        return classify(snapshot, self.catalogue, resolved)

    def read(self, connection: sa.Connection, *, with_checksums: bool) -> DatabaseSnapshot:
        return read_database(
            connection, schema=self.settings.schema, ignored_tables=self.settings.ignored_tables,
            with_checksums=with_checksums,
        )

    def live_extensions(self) -> tuple[tuple[str, str], ...]:
        """(extension, schema) installed in the live database, for a scratch database to
        have too, in the same schemas."""
        with self.reading() as connection:
            return tuple((str(name), str(schema)) for name, schema in connection.exec_driver_sql(
                "SELECT e.extname, n.nspname FROM pg_catalog.pg_extension e "
                "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname <> 'plpgsql' ORDER BY e.extname"))

    def version_width(self) -> int | None:
        """The characters alembic_version.version_num holds: 32 when Alembic is to make it,
        None when it is unbounded (text)."""
        with self.reading() as connection:
            row = connection.execute(sa.text(
                "SELECT character_maximum_length FROM information_schema.columns "
                "WHERE table_schema = :schema AND table_name = 'alembic_version' "
                "AND column_name = 'version_num'"), {"schema": self.settings.schema}).first()
        return 32 if row is None else (None if row[0] is None else int(row[0]))

    def live_relations(self) -> tuple[frozenset[tuple[str, str]], str]:
        """Every relation of the database's own schemas, any kind (a CREATE TABLE IF NOT
        EXISTS skips on a view or a sequence of that name too), and `current_schema()`."""
        with self.reading() as connection:
            rows = connection.exec_driver_sql(
                "SELECT n.nspname, c.relname, current_schema() FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                # the system's own schemas (pg_ is reserved to it)
                "WHERE n.nspname !~ '^(pg_|information_schema$)'"
            ).all()
            schema = rows[0][2] if rows else connection.exec_driver_sql(
                "SELECT current_schema()").scalar()
        return frozenset((str(r[0]), str(r[1])) for r in rows), str(schema or "")

    def scratch_engine(self, name: str) -> sa.Engine:
        """An engine on database `name` of the live server, with the live credentials, for a
        trial run (`migration_resource.trial`); its statements and lock waits are bounded."""
        settings = dataclasses.replace(
            self.settings, database_url=self.settings.database_url.set(database=name),
            application_name=f"{self.settings.application_name}/trial"[:APPLICATION_NAME_LIMIT])
        engine = create_database_engine(settings)
        bounds = settings.session_guards

        def bounded(dbapi_connection: Any, _: Any) -> None:
            cursor = engine_cursor(dbapi_connection)
            for statement in bounds:
                cursor.execute(statement)
            version = getattr(dbapi_connection, "server_version", None)  # psycopg2
            if version is None:  # psycopg 3
                version = dbapi_connection.info.server_version
            if version >= 140000:
                # A plan whose process died (a Lambda timeout) must not leave its trial
                # running on the server.
                cursor.execute(
                    f"SET client_connection_check_interval = '{CONNECTION_CHECK_MS}ms'")
            cursor.close()
            engine_commit(dbapi_connection)

        sa.event.listen(engine, "connect", bounded)
        return engine

    def current_revisions(self) -> tuple[str, ...]:
        with self.reading() as connection:
            return self.read(connection, with_checksums=False).version_rows

    def nothing_to_do(
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

    # -- refusals --------------------------------------------------------------------------
    @staticmethod
    def needs_history_fix(classification: Classification) -> bool:
        return classification.state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY or (
            classification.cause == UNVERIFIABLE_BASELINE
        )

    def refusal(self, classification: Classification, *, fix_history: bool) -> str | None:
        state = classification.state
        if fix_history and self.needs_history_fix(classification):
            return None
        if state is DatabaseState.INCONSISTENT:
            next_step = _NEXT_STEP.get(classification.cause or "", "Fix it by hand")
            if classification.blocking_revision is not None:
                next_step = next_step.replace("--revision REV",
                                              f"--revision {classification.blocking_revision}")
            return (
                f"inconsistent: {classification.detail}; nothing was changed. {next_step}. "
                f"See {RUNBOOK}#inconsistent"
            )
        if state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY:
            return (
                f"tables_without_migration_history: {classification.detail}; nothing was "
                "changed. Establish the history with the verified baseline: "
                "`remote_admin.py --confirm run-migrations --fix-history` "
                f"(see {RUNBOOK}#tables-without-migration-history)"
            )
        return None

    def raise_if_refused(self, classification: Classification, *, fix_history: bool) -> None:
        refusal = self.refusal(classification, fix_history=fix_history)
        if refusal is not None:
            logger.warning(refusal)
            raise MigrationRefused(refusal, classification)

    # -- under the lock --------------------------------------------------------------------
    def prepare_locked(
        self, connection: sa.Connection, trail: AuditTrail, resolved: str
    ) -> tuple[Classification, Callable[[], None]]:
        """Rows left by a dead run settled, and a fresh classification; with the bookkeeping
        this engine keeps (checksums adopted or upgraded, ancestry recorded) to write once
        the run goes ahead: a refused run writes none of it."""
        snapshot = self.settle(connection, trail)
        now = classify(snapshot, self.catalogue, resolved)

        def bookkeeping() -> None:
            self._keep_books(snapshot, now, trail)
        return now, bookkeeping

    def _keep_books(
        self, snapshot: DatabaseSnapshot, now: Classification, trail: AuditTrail
    ) -> None:
        catalogue = self.catalogue
        known = tuple(r for r in snapshot.version_rows if catalogue.is_known(r))
        applied = catalogue.in_upgrade_order(catalogue.ancestry(known))
        if now.state is not DatabaseState.INCONSISTENT and now.current:
            for revision in (r for r in applied if r not in snapshot.audit.checksums):
                trail.record(
                    "adopt", revision, "succeeded", checksum=catalogue.checksum(revision),
                    parents=catalogue.parents(revision),
                    detail="checksum recorded for a revision applied before the audit trail",
                )
            for revision in (r for r in applied if r in snapshot.audit.checksums):
                recorded = snapshot.audit.checksums[revision]
                if catalogue.checksum_verdict(revision, recorded) == "legacy":
                    trail.record(
                        "adopt", revision, "succeeded", checksum=catalogue.checksum(revision),
                        parents=catalogue.parents(revision),
                        detail="checksum upgraded to the code checksum (formatting no longer "
                               "counts); the file is the one recorded",
                    )
        # A trail written before ancestry was recorded: the scripts say what each applied
        # revision stands on, so a later code rollback can still tell `ahead`.
        missing = {r: catalogue.parents(r) for r in applied if r not in snapshot.audit.parents}
        if missing and snapshot.audit.exists:
            filled = trail.fill_parents(missing)
            if filled:
                logger.info("Recorded the ancestry of %d revisions applied before it was "
                            "recorded", len(missing))

    def settle(self, connection: sa.Connection, trail: AuditTrail) -> DatabaseSnapshot:
        """Conclude audit rows a dead run left `running`; then read the database afresh."""
        snapshot = self.read(connection, with_checksums=True)
        connection.commit()  # Alembic must receive a connection outside a transaction
        if not snapshot.audit.exists:
            return snapshot
        known = tuple(r for r in snapshot.version_rows if self.catalogue.is_known(r))
        notes = trail.settle_unfinished(self.catalogue.ancestry(known))
        for note in notes:
            logger.warning("Settled an unfinished audit row: %s", note)
        if notes:  # the trail changed: read it again
            snapshot = self.read(connection, with_checksums=True)
            connection.commit()
        return snapshot

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def audit_trail(self, context: RunContext) -> Iterator[AuditTrail]:
        """The audit trail on its own autocommit connection: its rows are committed at once,
        whatever happens to the migration's transactions. A connection that dies is opened
        again for the next row (the trail is bookkeeping; the work is on its own session).

        The connection is opened by the trail's writer thread while the caller reads the state
        under the lock, and the table is made by the first write that needs it (a refusal
        makes none); the first write that waits for an answer waits for them too (and raises
        what they raised)."""
        role = f"{context.actor}/audit"

        def reopen() -> sa.Connection:
            return self._open(role).execution_options(isolation_level="AUTOCOMMIT")

        trail = AuditTrail(reopen, audit_table(self.database.dialect, self.settings.schema),
                           context)
        try:
            yield trail
        finally:
            trail.close()

    def deferred_revisions(self) -> frozenset[str]:
        """What deploys left for a later release (`defer` rows of the audit trail)."""
        with self.reading() as connection:
            exists = self.read(connection, with_checksums=False).audit.exists
            return deferred_revisions(connection, self.settings.schema, exists=exists)

    def recent_actions(self, limit: int) -> list[dict[str, Any]]:
        with self.reading() as connection:
            exists = self.read(connection, with_checksums=False).audit.exists
            return recent_actions(connection, self.settings.schema, exists=exists, limit=limit)

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A READ ONLY transaction: the server itself rejects any write on this path."""
        with self.connect("read", reusable=True) as connection:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                yield connection
            finally:
                connection.rollback()

    @contextmanager
    def locked_session(
        self, classification: Classification, context: RunContext
    ) -> Iterator[sa.Connection]:
        """The migration session, holding the migration lock itself (see `lock.py`).

        Its statements and table-lock waits are bounded by MIGRATION_TIMEOUT and
        MIGRATION_LOCK_TIMEOUT. Every revision runs on this session: when it dies, its work and
        the lock end together, and no other migrator can have started meanwhile.
        """
        with self.connect(f"{context.actor}/work") as connection:
            try:
                with session_lock(connection, lock_key(self.settings.schema),
                                  wait_seconds=self.settings.lock_wait_seconds):
                    for guard in self.settings.session_guards:
                        connection.exec_driver_sql(guard)
                    connection.commit()
                    yield connection
            except LockBusy as busy:
                raise self._busy(classification, busy) from None

    @contextmanager
    def locked(self, classification: Classification) -> Iterator[None]:
        """The lock alone, on a connection of its own: for work that changes no live table
        (a trial run that is rolled back, the baseline's replay, a refusal's audit row)."""
        try:
            with self.connect("lock") as connection, session_lock(
                connection, lock_key(self.settings.schema),
                wait_seconds=self.settings.lock_wait_seconds,
            ):
                yield
        except LockBusy as busy:
            raise self._busy(classification, busy) from None

    def _busy(self, classification: Classification, busy: LockBusy) -> MigrationRefused:
        return MigrationRefused(
            f"{classification.state.value}: {busy}; nothing was changed. Retry when that "
            "run has finished (check it with `remote_admin.py status`)",
            classification,
        )

    @contextmanager
    def connect(self, role: str = "read", *, reusable: bool = False) -> Iterator[sa.Connection]:
        """A connection of the product's own, named for `pg_stat_activity` by its role.

        `reusable`: the caller changes no session state, so the connection may be kept for
        the next one asked for (see `_idle`)."""
        connection = self._reuse(role) or self._open(role)
        kept = False
        try:
            yield connection
            if reusable and self._idle is None and not connection.in_transaction() and (
                not connection.invalidated
            ):
                self._idle, kept = connection, True
        finally:
            if not kept:
                self._close(connection)

    def _reuse(self, role: str) -> sa.Connection | None:
        connection, self._idle = self._idle, None
        if connection is None:
            return None
        connection.info[ROLE_INFO] = role
        name = f"{self.settings.application_name}/{role}"[:APPLICATION_NAME_LIMIT]
        try:
            connection.execute(sa.text("SELECT set_config('application_name', :name, false)"),
                               {"name": name})
            connection.commit()
        except sa.exc.SQLAlchemyError:  # closed by the server meanwhile: open a new one
            self._close(connection)
            return None
        return connection

    def _close(self, connection: sa.Connection) -> None:
        try:
            connection.close()
        except sa.exc.SQLAlchemyError as error:  # a dead session: nothing left to close
            logger.warning("Closing a database connection failed: %s", self.safe(error))

    def _open(self, role: str) -> sa.Connection:
        attempts = self.settings.connect_attempts
        for attempt in range(1, attempts + 1):
            try:
                connection = self.database.connect()
                break
            except sa.exc.OperationalError as error:
                if self._on_connection_error is not None:
                    self._on_connection_error()
                if self._credentials_refreshed(error):
                    continue
                if attempt == attempts:
                    raise DatabaseUnavailable(
                        f"Cannot connect to the database ({attempts} attempts): "
                        + self.safe(error.orig or error)
                        + "; nothing was read or changed. Check the host, port, credentials "
                        "and network path (security group) and retry"
                    ) from None
                delay = CONNECT_BACKOFF_SECONDS * 2 ** (attempt - 1)
                logger.warning("Database connection failed (attempt %d of %d); retrying in "
                               "%.0f s: %s", attempt, attempts, delay,
                               self.safe(error.orig or error))
                self._sleep(delay)
        connection.info[ROLE_INFO] = role
        name = f"{self.settings.application_name}/{role}"[:APPLICATION_NAME_LIMIT]
        # One round trip: a run opens several connections, and each is a pause.
        settings = ["set_config('application_name', :name, false)"]
        if (connection.dialect.server_version_info or (0,)) >= (14,):
            # A client that died (a Lambda timeout, kill -9) must not leave its statement
            # running and its locks held; a parameter group's idle_session_timeout must not
            # close a session that waits while another one works (audit, lock, trial).
            settings += [
                f"set_config('client_connection_check_interval', '{CONNECTION_CHECK_MS}ms', "
                "false)",
                "set_config('idle_session_timeout', '0', false)",
            ]
        connection.execute(sa.text(f"SELECT {', '.join(settings)}"), {"name": name})
        connection.commit()
        return connection

    def _credentials_refreshed(self, error: sa.exc.OperationalError) -> bool:
        """On a refused password, read the credentials again, once; True to retry at once."""
        if self._refresh_credentials is None or "password authentication failed" not in str(
            error.orig or error
        ):
            return False
        refresh, self._refresh_credentials = self._refresh_credentials, None
        url = refresh()
        if url == self.settings.database_url:
            return False
        logger.warning("The database refused the password: read the database secret again "
                       "(rotated?) and retrying")
        self.settings = dataclasses.replace(self.settings, database_url=url)
        self.database.dispose()
        self.database = create_database_engine(self.settings)
        return True

    def safe(self, error: BaseException) -> str:
        """An error as one line without secrets, row values or SQLAlchemy's boilerplate."""
        # SQLAlchemy appends the statement's parameters (row data) and a docs link: drop both.
        text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
        text = hide_row_values(" ".join(text.split()))
        password = self.settings.database_url.password
        return mask_text(text, (str(password),) if password else ())[:500]
