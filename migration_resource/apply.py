"""Running revisions for real: one Alembic run, an audit row per revision, a clear failure.

The caller holds the migration lock and hands over the migration session and the audit
trail. Whatever a revision's own code raises becomes a `MigrationFailed` that names the
revision (id and file), the exception's type and message, what this run committed before it
and what to do next; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from migration_resource.audit import AuditTrail
from migration_resource.checksums import history_digest, is_transactional
from migration_resource.classification import Classification, describe_revisions
from migration_resource.core import ENGINE_LOGGER, RUNBOOK, EngineCore
from migration_resource.execution import AppliedRevision, run_online
from migration_resource.outcomes import EngineError, MigrationFailed

logger = logging.getLogger(ENGINE_LOGGER)

SHOWN_COMMITTED = 3  # revisions named in a failure; the rest are counted


def apply_upgrade(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, before: Classification,
    *, order: tuple[str, ...], target: str, destructive: frozenset[str] = frozenset(),
) -> tuple[AppliedRevision, ...]:
    """Upgrade to `target`; `order` is the plan's (Alembic's own) order of the revisions, and
    `destructive` the revisions the gate found destructive (recorded on their audit rows)."""
    logger.info("Running %d pending migrations...", len(order))
    return run_steps(core, connection, trail, before, target, order=order, direction="upgrade",
                     destructive=destructive)


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


@dataclass
class _Progress:
    """Where a run is: the revision whose statements ran but whose COMMIT is not yet known
    to have succeeded, and the one whose audit row starts with its first statement."""

    awaiting_commit: AppliedRevision | None = None
    next_up: str | None = None


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
) -> tuple[AppliedRevision, ...]:
    """One Alembic run (the scripts load once), with an audit row per revision.

    A revision's row is written `running` (and committed, on the audit connection) when its
    first statement is about to run, so a run that dies leaves evidence. It becomes
    `succeeded` only once its COMMIT is known to have succeeded: Alembic's callback fires
    inside the revision's transaction, before the COMMIT, so the row is concluded when the
    next statement runs (the COMMIT is behind it) or the run ends. A failure is blamed on the
    revision the database says did not commit, which is the right one also when a deferred
    constraint fails the COMMIT itself.
    """
    catalogue = core.catalogue
    done: list[AppliedRevision] = []
    rows: dict[str, int] = {}
    progress = _Progress(next_up=order[0])
    reaching_head = direction == "upgrade" and target == catalogue.head

    def start(revision: str) -> None:
        path = catalogue.file_path(revision)
        rows[revision] = trail.start(
            direction, revision, direction="up" if direction == "upgrade" else "down",
            checksum=catalogue.checksum(revision), transactional=is_transactional(path),
            parents=catalogue.parents(revision), destructive=revision in destructive,
        )

    def conclude(step: AppliedRevision) -> None:
        last = len(done) + 1 == len(order)
        trail.finish(
            rows[step.revision], "succeeded",
            history_digest=history_digest(catalogue.versions_dir)
            if last and reaching_head else None,
        )
        done.append(step)
        verb = "Applied" if direction == "upgrade" else "Reverted"
        logger.info("%s revision %s (%.2f s)", verb, step.revision, step.seconds)

    def before_statement(*_: Any) -> None:
        if progress.awaiting_commit is not None:
            # A statement after a revision's callback: that revision's COMMIT is behind us.
            conclude(progress.awaiting_commit)
            progress.awaiting_commit = None
        if progress.next_up is not None:
            start(progress.next_up)
            progress.next_up = None

    def on_step(step: AppliedRevision) -> None:
        if step.revision not in rows:
            start(step.revision)
        progress.awaiting_commit = step
        progress.next_up = next((r for r in order if r not in rows), None)

    sa.event.listen(connection, "before_cursor_execute", before_statement)
    try:
        run_online(connection, core.settings.script_location,
                   "base" if target == "base" else target, direction=direction,
                   on_step=on_step, script=catalogue.script)
    except Exception as error:  # a revision's own code: anything can come out
        final = _revisions_after_failure(core)
        awaiting = progress.awaiting_commit
        if awaiting is not None and final is not None and _committed(
            core, awaiting.revision, final, direction
        ):
            conclude(awaiting)  # its COMMIT went through; what failed came after it
            awaiting = None
        applied = {d.revision for d in done}
        failed = awaiting.revision if awaiting is not None else next(
            (r for r in order if r not in applied), order[-1])
        _record_failure(core, trail, rows.get(failed), error)
        raise _failed(core, before, tuple(done), failed, error, final) from None
    finally:
        sa.event.remove(connection, "before_cursor_execute", before_statement)
    if progress.awaiting_commit is not None:
        conclude(progress.awaiting_commit)
    _verify(core, before, target)
    return tuple(done)


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
    core: EngineCore, trail: AuditTrail, row: int | None, error: BaseException
) -> None:
    if row is None:
        return
    try:
        trail.finish(row, "failed", detail=f"{type(error).__name__}: {core.safe(error)}")
    except sa.exc.SQLAlchemyError:
        # The next run settles the row it finds `running`; the failure itself is reported.
        logger.warning("Could not record the failure in migration_audit; the next run will")


def _failed(  # noqa: PLR0917 - private, one caller
    core: EngineCore, before: Classification, applied: tuple[AppliedRevision, ...],
    revision: str, error: BaseException, final: tuple[str, ...] | None,
) -> MigrationFailed:
    path = core.catalogue.file_path(revision)
    # The whole traceback is for the log; the message is for the console and the operator.
    logger.error("Revision %s (%s) raised %s", revision, path.name, type(error).__name__,
                 exc_info=(type(error), error, error.__traceback__))
    now = (f"The database is at revision {describe_revisions(final)}" if final is not None
           else "The database could not be read afterwards: check it with `remote_admin.py "
                "status`")
    if is_transactional(path):
        where = "its transaction was rolled back"
    else:
        where = ("it has non-transactional steps and may be partly applied: runs are blocked "
                 "until it is resolved with `remote_admin.py --confirm repair --resolve "
                 f"rolled-back|applied --revision {revision}`")
    committed = [a.revision for a in applied]
    if committed:
        named = ", ".join(committed[:SHOWN_COMMITTED])
        if len(committed) > SHOWN_COMMITTED:
            named += f" and {len(committed) - SHOWN_COMMITTED} more"
        before_it = f"committed before it in this run: {named}"
    else:
        before_it = "nothing was committed before it in this run"
    message = (
        f"{before.state.value}: revision {revision} ({path.name}) failed after {len(applied)} "
        f"of {len(before.pending) or '?'} revisions: {type(error).__name__}: "
        f"{core.safe(error)}. {before_it[0].upper()}{before_it[1:]}; {where}. {now}. Fix the "
        f"revision and deploy again; see {RUNBOOK}#a-revision-fails"
    )
    logger.error(message)
    return MigrationFailed(message, before, applied, final or ())


def _verify(core: EngineCore, before: Classification, target: str) -> None:
    final = core.current_revisions()
    expected = () if target == "base" else (target,)
    if final != expected:
        message = (
            f"{before.state.value}: after running the migrations the database is at "
            f"{describe_revisions(final)}, not {target}; see {RUNBOOK}#inconsistent"
        )
        logger.error(message)
        raise MigrationFailed(message, before, (), final)
