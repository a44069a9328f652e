"""The migration engine: classify, plan, dry-run, apply, baseline and repair, safely.

It knows nothing of AWS: the Lambda handler and the CLIs hand it settings and read back
outcomes. Every path that writes holds the migration lock and records what it did in the
audit trail; every read-only path runs in a READ ONLY transaction.
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

from migration_resource.audit import AuditTrail, RunContext, recent_actions
from migration_resource.baseline import (
    BaselineError,
    BaselineResult,
    drop_scratch_schemas,
    find_baseline,
)
from migration_resource.checksums import file_checksum, history_digest, is_transactional
from migration_resource.classification import (
    Classification,
    classify,
    classify_up_to_date_fast,
    describe_revisions,
)
from migration_resource.dsn import mask_text
from migration_resource.execution import (
    AppliedRevision,
    offline_sql,
    run_online,
    stamp_online,
)
from migration_resource.inspection import DatabaseSnapshot, read_database
from migration_resource.lock import LockBusy, lock_key, migration_lock
from migration_resource.outcomes import (
    ConfirmationRequired,
    DatabaseUnavailable,
    EngineError,
    MigrationFailed,
    MigrationRefused,
    Outcome,
    UsageError,
)
from migration_resource.revisions import (
    HEAD_TARGETS,
    RevisionCatalogue,
    ScriptsError,
    TargetRevisionError,
    check_target_syntax,
)
from migration_resource.settings import EngineSettings
from migration_resource.states import (
    CHECKSUM_MISMATCH,
    DIVERGED,
    FAILED_RUN,
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
    UNVERIFIABLE_BASELINE,
    DatabaseState,
)

if TYPE_CHECKING:
    from migration_resource.gate import GateDecision

__all__ = [
    "ConfirmationRequired", "DatabaseUnavailable", "EngineError", "MigrationEngine",
    "MigrationFailed", "MigrationRefused", "Outcome", "RunContext",
]

logger = logging.getLogger(__name__)

RUNBOOK = "docs/RUNBOOK.md"
CONNECT_TIMEOUT_SECONDS = 10
CONNECT_BACKOFF_SECONDS = 1.0
STATUS_HISTORY_ROWS = 5
# States an explicit operator baseline may overwrite: no history, or a history that is wrong.
BASELINE_CAUSES = frozenset({UNKNOWN_REVISION, OVERLAPPING_REVISIONS, UNVERIFIABLE_BASELINE})
RESOLUTIONS = ("rolled-back", "applied")


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
    def __init__(
        self,
        settings: EngineSettings,
        *,
        database: sa.Engine | None = None,
        on_connection_error: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.database = database or create_database_engine(settings)
        self._catalogue: RevisionCatalogue | None = None
        # Counted by the Lambda as a metric: a just-created or resuming database refuses
        # connections for a while, and a trend of these deserves an alarm.
        self._on_connection_error = on_connection_error
        self._sleep = sleep

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

    # -- read-only operations ----------------------------------------------------------
    def status(
        self,
        target: str = "head",
        *,
        target_heads: tuple[str, ...] | None = None,
        history_digest: str | None = None,
        with_history: bool = True,
    ) -> Outcome:
        """The state; with the last audit actions for people (the deploy skips them)."""
        started = time.perf_counter()
        classification = self._classify(target, target_heads, history_digest)
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
            history=tuple(self._recent_actions(STATUS_HISTORY_ROWS)) if with_history else None,
            seconds=time.perf_counter() - started,
        )

    def history(self, limit: int = 20) -> Outcome:
        """The audit trail, newest first."""
        started = time.perf_counter()
        classification = self._classify("head", None, None)
        rows = self._recent_actions(limit)
        message = (
            f"{len(rows)} most recent migration actions" if rows
            else "No migration action recorded yet (the audit trail starts with the first change)"
        )
        return Outcome(
            operation="history", classification=classification, message=message,
            final=classification.current, history=tuple(rows),
            seconds=time.perf_counter() - started,
        )

    def dry_run(
        self,
        target: str = "head",
        *,
        fix_history: bool = False,
        baseline: str | None = None,
        allow_destructive: bool = False,
    ) -> Outcome:
        """The plan, its SQL (Alembic offline mode) and the gate's findings; nothing changes.

        With `fix_history` the verified baseline replays the migrations into a scratch
        schema (dropped afterwards) to report the revision it would stamp.
        """
        started = time.perf_counter()
        classification = self._classify(target, None, None)
        (resolved,) = classification.target
        report: dict[str, Any] | None = None
        notes: list[str] = []
        if baseline is not None:
            stamped = self._resolve(baseline)
            self._check_baseline_allowed(classification, stamped)
            classification = self._as_if_stamped(classification, stamped, resolved)
            notes.append(f"would stamp {stamped} without verification, then migrate")
        elif fix_history and self._needs_history_fix(classification):
            # The replay creates (and drops) a scratch schema: a change, so under the lock.
            with self._locked(classification):
                result = self._find_baseline()
            report = _baseline_report(result)
            if result.matched is None:
                classification = self._unverifiable(classification, result)
            else:
                classification = self._as_if_stamped(classification, result.matched, resolved)
                notes.append(f"would stamp {result.matched} ({result.summary()}), then migrate")
        refusal = self._refusal(classification, fix_history=False)
        if refusal is not None:
            return Outcome(
                operation="dry_run", classification=classification, ok=False,
                message=f"Dry run: the migration would be refused. {refusal}",
                final=classification.current, baseline=report, notes=tuple(notes),
                seconds=time.perf_counter() - started,
            )
        sql: dict[str, str] = {}
        decision: GateDecision | None = None
        if classification.pending:
            if len(classification.current) > 1:
                notes.append("SQL preview needs a single current revision; the database has "
                             f"{len(classification.current)} branch heads")
            else:
                start = classification.current[0] if classification.current else "base"
                sql = offline_sql(self.settings.script_location, start, resolved)
                decision = self._decide(sql, allow_destructive)
            message = (
                f"Dry run: {len(classification.pending)} pending migrations would run "
                f"({describe_revisions(classification.current)} → {resolved}); nothing was changed"
            )
        else:
            message = f"Dry run: nothing to apply ({classification.detail}); nothing was changed"
        ok = True
        if decision is not None:
            self._log_findings(decision)
            blocked = decision.refusal()
            if blocked is not None:
                ok = False
                message = f"Dry run: the migration would be refused. {self._gate_refusal(blocked)}"
        logger.info(message)
        return Outcome(
            operation="dry_run", classification=classification, message=message, sql=sql, ok=ok,
            final=classification.current, seconds=time.perf_counter() - started,
            notes=tuple(notes), baseline=report,
            findings=tuple(f.as_dict() for f in decision.findings) if decision else (),
        )

    # -- changes -------------------------------------------------------------------------
    def migrate(
        self,
        target: str = "head",
        *,
        target_heads: tuple[str, ...] | None = None,
        history_digest: str | None = None,
        fix_history: bool = False,
        baseline: str | None = None,
        allow_destructive: bool = False,
        context: RunContext | None = None,
    ) -> Outcome:
        """Bring the database up to `target`. Never downgrades; refuses unsafe states.

        `fix_history` establishes a missing history by the verified baseline first;
        `baseline` stamps a revision the operator vouches for (confirmed in production).
        """
        started = time.perf_counter()
        context = context or RunContext()
        before = self._classify(target, target_heads, history_digest)
        if baseline is not None:
            self._check_baseline_allowed(before, self._resolve(baseline))
        else:
            self._raise_if_refused(before, fix_history=fix_history)
        if not before.needs_changes and baseline is None and not (
            fix_history and self._needs_history_fix(before)
        ):
            return self._nothing_to_do("migrate", before, started)
        (resolved,) = before.target

        baseline_report: dict[str, Any] | None = None
        with (
            self._locked(before),
            self._migration_session() as connection,
            self._audit_trail(context) as trail,
        ):
            now = self._prepare_locked(connection, trail, resolved)
            if baseline is not None:
                now = self._stamp_explicit(connection, trail, now, self._resolve(baseline),
                                           resolved)
            elif fix_history and self._needs_history_fix(now):
                now, baseline_report = self._verified_baseline(connection, trail, now, resolved)
            if now.state is not before.state or now.current != before.current:
                logger.info("Migration state now: %s (revision %s)", now.state.value,
                            describe_revisions(now.current))
            self._raise_if_refused(now, fix_history=False)
            if not now.needs_changes:
                outcome = self._nothing_to_do("migrate", now, started)
                return dataclasses.replace(outcome, baseline=baseline_report)
            decision = self._gate(now, allow_destructive)
            self._log_findings(decision)
            self._refuse_if_gated(decision, now, trail)
            applied = self._apply(connection, trail, now, resolved)

        message = (
            "Database migrations completed successfully. Revision: "
            f"{describe_revisions(now.current)} → {resolved}"
        )
        logger.info(message)
        return Outcome(
            operation="migrate", classification=now, message=message, final=(resolved,),
            applied=applied, seconds=time.perf_counter() - started, baseline=baseline_report,
            findings=tuple(f.as_dict() for f in decision.findings),
        )

    def check_gate(
        self,
        classification: Classification,
        *,
        allow_destructive: bool = False,
        context: RunContext | None = None,
    ) -> None:
        """Refuse now what `migrate` would refuse at the change gate, before anything costly.

        A deploy calls this before it starts a snapshot: a refused deploy must take none.
        The refusal is `migrate`'s own (message, log lines, audit row). An allowed plan says
        nothing here: `migrate` decides again under the lock, since the database may move
        in between, and logs the findings then, once.
        """
        if classification.state is not DatabaseState.PENDING_MIGRATIONS:
            # Without a history the pending revisions are known only after the baseline.
            return
        decision = self._gate(classification, allow_destructive)
        if decision.refusal() is None:
            return
        with self._locked(classification), self._audit_trail(context or RunContext()) as trail:
            self._log_findings(decision)
            self._refuse_if_gated(decision, classification, trail)

    def refuse_if_inconsistent(self, classification: Classification) -> None:
        """Raise the refusal of an `inconsistent` database, worded with its cause's next step.

        For callers that classified already (the deploy): the same MigrationRefused, log
        line and wording as `migrate`, without classifying again.
        """
        if classification.state is DatabaseState.INCONSISTENT:
            self._raise_if_refused(classification, fix_history=False)

    def downgrade(
        self, target: str, *, confirm: bool, context: RunContext | None = None
    ) -> Outcome:
        """The only way down: explicit target, explicit confirmation, under the lock."""
        started = time.perf_counter()
        context = context or RunContext()
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
        before = self._classify_resolved(resolved)
        if before.state is DatabaseState.UP_TO_DATE:
            return self._nothing_to_do("downgrade", before, started)
        if before.state is not DatabaseState.AHEAD:
            raise MigrationRefused(
                f"{before.state.value}: cannot downgrade to {resolved} ({before.detail}); "
                "nothing was changed. A downgrade target must be an ancestor of the current "
                "revision; see `remote_admin.py status`",
                before,
            )
        with (
            self._locked(before),
            self._migration_session() as connection,
            self._audit_trail(context) as trail,
        ):
            now = self._prepare_locked(connection, trail, resolved)
            if now.state is not DatabaseState.AHEAD:
                self._raise_if_refused(now, fix_history=False)
                return self._nothing_to_do("downgrade", now, started)
            logger.info("Downgrading to %s...", resolved)
            applied = self._revert(connection, trail, now, resolved)
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

    def repair(
        self,
        *,
        confirm: bool,
        realign_checksums: bool = False,
        resolve: str | None = None,
        revision: str | None = None,
        context: RunContext | None = None,
    ) -> Outcome:
        """Settle what blocks runs, explicitly, and write it to the audit trail.

        `realign_checksums` records the current files' checksums for edited revisions (after
        someone checked the edit is harmless). `resolve` settles a failed non-transactional
        revision: `rolled-back` (its partial changes were undone by hand; it runs again) or
        `applied` (it was completed by hand; it is stamped).
        """
        started = time.perf_counter()
        context = context or RunContext()
        if not realign_checksums and resolve is None:
            raise UsageError(
                "repair needs something to do: --realign-checksums and/or --resolve "
                f"{'|'.join(RESOLUTIONS)} --revision REV"
            )
        if resolve is not None and resolve not in RESOLUTIONS:
            raise UsageError(f"--resolve must be {' or '.join(RESOLUTIONS)}, not {resolve!r}")
        if resolve is not None and revision is None:
            raise UsageError("--resolve needs the failed revision: --revision REV")
        if not confirm:
            raise ConfirmationRequired(
                "repair changes the migration history; repeat with confirmation (--confirm)"
            )
        before = self._classify("head", None, None)
        done: list[str] = []
        with (
            self._locked(before),
            self._migration_session() as connection,
            self._audit_trail(context) as trail,
        ):
            snapshot = self._settle(connection, trail)
            if realign_checksums:
                done += self._realign(trail, snapshot)
            if resolve is not None and revision is not None:
                done += self._resolve_failure(connection, trail, snapshot, resolve,
                                              self._resolve(revision))
            now = self._classify_locked(connection, self.catalogue.head)
        message = "Repair: " + ("; ".join(done) if done else "nothing needed repair")
        logger.info(message)
        return Outcome(
            operation="repair", classification=now, message=message, final=now.current,
            history=tuple(self._recent_actions(STATUS_HISTORY_ROWS)),
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.database.dispose()

    # -- classification ------------------------------------------------------------------
    def _classify(
        self, target: str, target_heads: tuple[str, ...] | None, digest: str | None
    ) -> Classification:
        """Classify against `target`; with `target_heads`, try the no-script fast path first.

        Without target heads the target is validated against the scripts before the
        database is read.
        """
        check_target_syntax(target)
        if target_heads:
            with self._reading() as connection:
                snapshot = self._read(connection, with_checksums=False)
            fast = classify_up_to_date_fast(snapshot, target_heads, digest)
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
        return self._classify_resolved(resolved)

    def _classify_resolved(self, resolved: str) -> Classification:
        with self._reading() as connection:
            snapshot = self._read(connection, with_checksums=True)
        classification = classify(snapshot, self.catalogue, resolved, self.catalogue.checksum)
        logger.info("Migration state: %s", classification.state.value)
        return classification

    def _classify_locked(self, connection: sa.Connection, resolved: str) -> Classification:
        snapshot = self._read(connection, with_checksums=True)
        connection.commit()  # Alembic must receive a connection outside a transaction
        return classify(snapshot, self.catalogue, resolved, self.catalogue.checksum)

    def _read(self, connection: sa.Connection, *, with_checksums: bool) -> DatabaseSnapshot:
        return read_database(
            connection, schema=self.settings.schema, ignored_tables=self.settings.ignored_tables,
            with_checksums=with_checksums,
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

    def _needs_history_fix(self, classification: Classification) -> bool:
        return classification.state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY or (
            classification.cause == UNVERIFIABLE_BASELINE
        )

    def _refusal(self, classification: Classification, *, fix_history: bool) -> str | None:
        state = classification.state
        if fix_history and self._needs_history_fix(classification):
            return None
        if state is DatabaseState.INCONSISTENT:
            next_step = {
                FAILED_RUN: "Resolve it with `remote_admin.py --confirm repair --resolve "
                            "rolled-back|applied --revision REV`",
                UNVERIFIABLE_BASELINE: "Make the tables match a revision, or stamp one with "
                                       "--baseline REV",
                CHECKSUM_MISMATCH: "Revert the edit, or accept it with `remote_admin.py "
                                   "--confirm repair --realign-checksums`",
                UNKNOWN_REVISION: "Restore the revision file, or stamp the revision the "
                                  "schema has with --baseline REV",
                OVERLAPPING_REVISIONS: "Stamp the revision the schema has with --baseline REV",
                DIVERGED: "Deploy a target that includes both branches (their merge)",
            }.get(classification.cause or "", "Fix it by hand")
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

    def _raise_if_refused(self, classification: Classification, *, fix_history: bool) -> None:
        refusal = self._refusal(classification, fix_history=fix_history)
        if refusal is not None:
            logger.warning(refusal)
            raise MigrationRefused(refusal, classification)

    # -- under the lock --------------------------------------------------------------------
    def _prepare_locked(
        self, connection: sa.Connection, trail: AuditTrail, resolved: str
    ) -> Classification:
        """Rows left by a dead run, a fresh classification, adopted checksums."""
        snapshot = self._settle(connection, trail)
        now = classify(snapshot, self.catalogue, resolved, self.catalogue.checksum)
        if now.state is not DatabaseState.INCONSISTENT and now.current:
            unrecorded = [
                r for r in self.catalogue.in_upgrade_order(self.catalogue.ancestry(now.current))
                if r not in snapshot.audit.checksums
            ]
            for revision in unrecorded:
                trail.record(
                    "adopt", revision, "succeeded", checksum=self.catalogue.checksum(revision),
                    detail="checksum recorded for a revision applied before the audit trail",
                )
        return now

    def _settle(self, connection: sa.Connection, trail: AuditTrail) -> DatabaseSnapshot:
        """Conclude audit rows a dead run left `running`; then read the database afresh."""
        rows = self._read(connection, with_checksums=False).version_rows
        connection.commit()
        known = tuple(r for r in rows if self.catalogue.is_known(r))
        for note in trail.settle_unfinished(self.catalogue.ancestry(known)):
            logger.warning("Settled an unfinished audit row: %s", note)
        snapshot = self._read(connection, with_checksums=True)
        connection.commit()  # Alembic must receive a connection outside a transaction
        return snapshot

    def _verified_baseline(
        self, connection: sa.Connection, trail: AuditTrail, now: Classification, resolved: str
    ) -> tuple[Classification, dict[str, Any]]:
        result = self._find_baseline()
        report = _baseline_report(result)
        if result.matched is None:
            trail.record("baseline", None, "failed", detail=result.summary())
            unverifiable = self._unverifiable(now, result)
            refusal = self._refusal(unverifiable, fix_history=False)
            assert refusal is not None
            logger.warning(refusal)
            raise MigrationRefused(refusal, unverifiable)
        logger.info("Verified baseline: %s", result.summary())
        stamp_online(connection, self.settings.script_location, result.matched)
        self._record_baseline(trail, result.matched, f"verified: {result.summary()}")
        return self._classify_locked(connection, resolved), report

    def _stamp_explicit(
        self, connection: sa.Connection, trail: AuditTrail, now: Classification, stamped: str,
        resolved: str,
    ) -> Classification:
        self._check_baseline_allowed(now, stamped)
        logger.warning("Stamping %s as the operator asked (not verified)", stamped)
        stamp_online(connection, self.settings.script_location, stamped, purge=True)
        self._record_baseline(trail, stamped, "explicit baseline by the operator (not verified)")
        return self._classify_locked(connection, resolved)

    def _record_baseline(self, trail: AuditTrail, stamped: str, detail: str) -> None:
        for revision in self.catalogue.in_upgrade_order(self.catalogue.ancestry((stamped,))):
            trail.record("baseline", revision, "succeeded",
                         checksum=self.catalogue.checksum(revision), detail=detail)

    def _apply(
        self, connection: sa.Connection, trail: AuditTrail, before: Classification, target: str
    ) -> tuple[AppliedRevision, ...]:
        logger.info("Running %d pending migrations...", len(before.pending))
        return self._run_steps(connection, trail, before, target,
                               order=before.pending, direction="upgrade")

    def _revert(
        self, connection: sa.Connection, trail: AuditTrail, before: Classification, target: str
    ) -> tuple[AppliedRevision, ...]:
        beyond = self.catalogue.ancestry(before.current) - self.catalogue.ancestry(
            () if target == "base" else (target,)
        )
        order = tuple(reversed(self.catalogue.in_upgrade_order(beyond)))
        return self._run_steps(connection, trail, before, target,
                               order=order, direction="downgrade")

    def _run_steps(
        self,
        connection: sa.Connection,
        trail: AuditTrail,
        before: Classification,
        target: str,
        *,
        order: tuple[str, ...],
        direction: str,
    ) -> tuple[AppliedRevision, ...]:
        """One Alembic run (the scripts load once), with an audit row per revision.

        Each revision's row is committed on the audit connection *before* the revision starts
        (at the previous revision's callback), so a run that dies leaves evidence; the
        callback fires inside the revision's transaction, after its statements.
        """
        done: list[AppliedRevision] = []
        rows: dict[str, int] = {}
        reaching_head = direction == "upgrade" and target == self.catalogue.head

        def start(revision: str) -> None:
            path = self.catalogue.file_path(revision)
            rows[revision] = trail.start(
                direction, revision, direction="up" if direction == "upgrade" else "down",
                checksum=file_checksum(path), transactional=is_transactional(path),
            )

        def on_step(step: AppliedRevision) -> None:
            if step.revision not in rows:
                start(step.revision)
            last = len(done) + 1 == len(order)
            trail.finish(
                rows[step.revision], "succeeded",
                history_digest=history_digest(self.catalogue.versions_dir)
                if last and reaching_head else None,
            )
            done.append(step)
            verb = "Applied" if direction == "upgrade" else "Reverted"
            logger.info("%s revision %s (%.2f s)", verb, step.revision, step.seconds)
            following = next((r for r in order if r not in rows), None)
            if following is not None:
                start(following)

        start(order[0])
        try:
            run_online(connection, self.settings.script_location,
                       "base" if target == "base" else target, direction=direction,
                       on_step=on_step)
        except Exception as error:
            failed = next((r for r in order if r in rows and r not in
                           {d.revision for d in done}), order[-1])
            self._record_failure(trail, rows.get(failed), error)
            raise self._failed(before, target, done, failed, error) from None
        self._verify(before, target)
        return tuple(done)

    def _record_failure(
        self, trail: AuditTrail, row: int | None, error: BaseException
    ) -> None:
        if row is None:
            return
        try:
            trail.finish(row, "failed", detail=self._safe(error))
        except sa.exc.SQLAlchemyError:
            # The next run settles the row it finds `running`; the failure itself is reported.
            logger.warning("Could not record the failure in migration_audit; the next run will")

    def _failed(
        self, before: Classification, target: str, applied: list[AppliedRevision],
        revision: str, error: BaseException,
    ) -> MigrationFailed:
        final = self._current_revisions()
        transactional = is_transactional(self.catalogue.file_path(revision))
        where = (
            "each revision runs in its own transaction, so the failed one was rolled back"
            if transactional else
            "the failed revision has non-transactional steps and may be partly applied: runs are "
            "blocked until it is resolved with `repair`"
        )
        message = (
            f"{before.state.value}: revision {revision} failed after {len(applied)} of "
            f"{len(before.pending) or '?'} revisions: {self._safe(error)}. The database is at "
            f"revision {describe_revisions(final)} ({where}); fix the migration and deploy again"
        )
        logger.error(message)
        return MigrationFailed(message, before, tuple(applied), final)

    def _verify(self, before: Classification, target: str) -> None:
        final = self._current_revisions()
        expected = () if target == "base" else (target,)
        if final != expected:
            message = (
                f"{before.state.value}: after running the migrations the database is at "
                f"{describe_revisions(final)}, not {target}; see {RUNBOOK}#inconsistent"
            )
            logger.error(message)
            raise MigrationFailed(message, before, (), final)

    def _realign(self, trail: AuditTrail, snapshot: DatabaseSnapshot) -> list[str]:
        done: list[str] = []
        known = tuple(r for r in snapshot.version_rows if self.catalogue.is_known(r))
        for revision in self.catalogue.in_upgrade_order(self.catalogue.ancestry(known)):
            recorded = snapshot.audit.checksums.get(revision)
            current = self.catalogue.checksum(revision)
            if recorded is not None and recorded != current:
                trail.record("repair", revision, "succeeded", checksum=current,
                             detail=f"checksum realigned: recorded {recorded[:12]}, file "
                                    f"{current[:12]}")
                done.append(f"realigned the checksum of {revision}")
        return done

    def _resolve_failure(
        self, connection: sa.Connection, trail: AuditTrail, snapshot: DatabaseSnapshot,
        resolution: str, revision: str,
    ) -> list[str]:
        failures = [f for f in snapshot.audit.blocking if f.revision == revision]
        if not failures:
            raise MigrationRefused(
                f"repair: no unresolved failure of revision {revision} in the audit trail; "
                "nothing was changed (see `remote_admin.py history`)"
            )
        trail.resolve([f.id for f in failures])
        if resolution == "applied":
            stamp_online(connection, self.settings.script_location, revision)
            trail.record("repair", revision, "succeeded",
                         checksum=self.catalogue.checksum(revision),
                         detail="resolved as applied: completed by hand and stamped")
            return [f"resolved the failure of {revision} as applied (stamped)"]
        trail.record("repair", revision, "succeeded",
                     detail="resolved as rolled back: the revision runs again on the next run")
        return [f"resolved the failure of {revision} as rolled back (it will run again)"]

    # -- baseline helpers ------------------------------------------------------------------
    def _find_baseline(self) -> BaselineResult:
        """Replay the history into a scratch schema; the caller holds the migration lock."""
        # A run killed during an earlier replay (a Lambda timeout) left its scratch schema.
        drop_scratch_schemas(self.database)
        logger.info(
            "Verifying the baseline: replaying %d revisions into a scratch schema (the live "
            "tables are only read)", len(self.catalogue.ordered),
        )
        # Alembic logs "Running upgrade ..." per replayed revision, which would read like a
        # migration of the live database.
        alembic_log = logging.getLogger("alembic.runtime.migration")
        level = alembic_log.level
        alembic_log.setLevel(logging.WARNING)
        try:
            result = find_baseline(
                self.database, self.settings.script_location, self.catalogue.ordered,
                schema=self.settings.schema, ignored_tables=self.settings.ignored_tables,
                statement_timeout_seconds=self.settings.migration_timeout_seconds,
            )
        except BaselineError as error:
            raise MigrationRefused(
                f"tables_without_migration_history: the baseline check could not replay the "
                f"migrations ({error}); nothing was changed. Stamp the revision yourself with "
                f"--baseline REV if you know it; see {RUNBOOK}#tables-without-migration-history"
            ) from None
        finally:
            alembic_log.setLevel(level)
        logger.info("Baseline search: %s (%d revisions compared in %.2f s)",
                    result.summary(), result.revisions_compared, result.seconds)
        return result

    def _unverifiable(self, now: Classification, result: BaselineResult) -> Classification:
        return dataclasses.replace(
            now, state=DatabaseState.INCONSISTENT, cause=UNVERIFIABLE_BASELINE,
            detail=f"no revision matches the tables: {result.summary()}",
        )

    def _as_if_stamped(
        self, classification: Classification, stamped: str, resolved: str
    ) -> Classification:
        pending = self.catalogue.in_upgrade_order(
            self.catalogue.ancestry((resolved,)) - self.catalogue.ancestry((stamped,))
        )
        state = DatabaseState.PENDING_MIGRATIONS if pending else DatabaseState.UP_TO_DATE
        return dataclasses.replace(classification, state=state, current=(stamped,),
                                   pending=pending, cause=None,
                                   detail=f"after stamping {stamped}")

    def _check_baseline_allowed(self, classification: Classification, stamped: str) -> None:
        allowed = self._needs_history_fix(classification) or (
            classification.cause in BASELINE_CAUSES
        )
        if not allowed:
            raise MigrationRefused(
                f"{classification.state.value}: --baseline {stamped} is only for a database "
                "without (or with a broken) migration history; nothing was changed. Use "
                "run-migrations without --baseline",
                classification,
            )

    # -- the change gate -------------------------------------------------------------------
    def _decide(self, sql: dict[str, str], allow_destructive: bool) -> GateDecision:
        # Imported here: the SQL parser costs ~160 ms of import, which a no-change deploy's
        # cold start should not pay.
        from migration_resource import gate  # noqa: PLC0415 - deferred on purpose

        findings = gate.analyse(sql)
        marked = frozenset(
            revision for revision in {f.revision for f in findings}
            if gate.allowed_by_marker(self.catalogue.file_path(revision).read_text())
        )
        return gate.decide(
            findings, stage=self.settings.stage,
            allow_destructive=allow_destructive or self.settings.allow_destructive,
            allowed_revisions=marked,
        )

    def _gate(self, classification: Classification, allow_destructive: bool) -> GateDecision:
        """The gate over the pending revisions' SQL, from the current revision to the target."""
        (resolved,) = classification.target
        start = classification.current[0] if classification.current else "base"
        return self._decide(
            offline_sql(self.settings.script_location, start, resolved), allow_destructive
        )

    def _refuse_if_gated(
        self, decision: GateDecision, classification: Classification, trail: AuditTrail
    ) -> None:
        blocked = decision.refusal()
        if blocked is None:
            return
        message = self._gate_refusal(blocked)
        logger.warning(message)
        trail.record("upgrade", decision.blocking[0].revision, "refused", detail=message)
        raise MigrationRefused(message, classification)

    def _log_findings(self, decision: GateDecision) -> None:
        for finding in decision.warnings:
            logger.warning("Change gate (%s, %s %s): %s", finding.revision, finding.kind,
                           finding.rule, finding.message)

    def _gate_refusal(self, blocked: str) -> str:
        return f"pending_migrations: {blocked}; nothing was changed"

    # -- connections ------------------------------------------------------------------------
    @contextmanager
    def _audit_trail(self, context: RunContext) -> Iterator[AuditTrail]:
        """The audit trail on its own autocommit connection: its rows are committed at once,
        whatever happens to the migration's transactions."""
        with self._connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            trail = AuditTrail(autocommit, self.settings.schema, context)
            trail.ensure_table()
            yield trail

    def _recent_actions(self, limit: int) -> list[dict[str, Any]]:
        with self._reading() as connection:
            exists = self._read(connection, with_checksums=False).audit.exists
            return recent_actions(connection, self.settings.schema, exists=exists, limit=limit)

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
        attempts = self.settings.connect_attempts
        for attempt in range(1, attempts + 1):
            try:
                connection = self.database.connect()
                break
            except sa.exc.OperationalError as error:
                if self._on_connection_error is not None:
                    self._on_connection_error()
                if attempt == attempts:
                    raise DatabaseUnavailable(
                        f"Cannot connect to the database ({attempts} attempts): "
                        + self._safe(error.orig or error)
                        + "; nothing was read or changed. Check the host, port, credentials "
                        "and network path (security group) and retry"
                    ) from None
                delay = CONNECT_BACKOFF_SECONDS * 2 ** (attempt - 1)
                logger.warning("Database connection failed (attempt %d of %d); retrying in "
                               "%.0f s: %s", attempt, attempts, delay,
                               self._safe(error.orig or error))
                self._sleep(delay)
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

    def _current_revisions(self) -> tuple[str, ...]:
        with self._reading() as connection:
            return self._read(connection, with_checksums=False).version_rows

    def _safe(self, error: BaseException) -> str:
        """An error as one line without secrets or SQLAlchemy's boilerplate links."""
        # SQLAlchemy appends the statement's parameters (row data) and a docs link: drop both.
        text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
        text = " ".join(text.split())
        password = self.settings.database_url.password
        return mask_text(text, (str(password),) if password else ())[:500]


def _baseline_report(result: BaselineResult) -> dict[str, Any]:
    return {
        "matched": result.matched,
        "matches": list(result.matches),
        "nearest": result.nearest,
        "differences": list(result.differences),
        "ignored_tables": list(result.ignored_tables),
        "revisions_compared": result.revisions_compared,
        "seconds": round(result.seconds, 3),
        "summary": result.summary(),
    }
