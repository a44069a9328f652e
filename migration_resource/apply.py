"""Running revisions for real: one Alembic run, an audit row per revision, a clear failure.

The caller holds the migration lock and hands over the migration session and the audit
trail. Whatever a revision's own code raises becomes a `MigrationFailed` that names the
revision (id and file), the exception's type and message, what this run committed before it
and what to do next; the traceback goes to the log only.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from migration_resource.audit import AuditTrail
from migration_resource.checksums import history_digest, is_transactional
from migration_resource.classification import Classification, describe_revisions
from migration_resource.core import ENGINE_LOGGER, RUNBOOK, EngineCore
from migration_resource.execution import AppliedRevision, run_online
from migration_resource.outcomes import MigrationFailed

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

    Each revision's row is committed on the audit connection *before* the revision starts
    (at the previous revision's callback), so a run that dies leaves evidence; the
    callback fires inside the revision's transaction, after its statements.
    """
    catalogue = core.catalogue
    done: list[AppliedRevision] = []
    rows: dict[str, int] = {}
    reaching_head = direction == "upgrade" and target == catalogue.head

    def start(revision: str) -> None:
        path = catalogue.file_path(revision)
        rows[revision] = trail.start(
            direction, revision, direction="up" if direction == "upgrade" else "down",
            checksum=catalogue.checksum(revision), transactional=is_transactional(path),
            parents=catalogue.parents(revision), destructive=revision in destructive,
        )

    def on_step(step: AppliedRevision) -> None:
        if step.revision not in rows:
            start(step.revision)
        last = len(done) + 1 == len(order)
        trail.finish(
            rows[step.revision], "succeeded",
            history_digest=history_digest(catalogue.versions_dir)
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
        run_online(connection, core.settings.script_location,
                   "base" if target == "base" else target, direction=direction,
                   on_step=on_step, script=catalogue.script)
    except Exception as error:  # a revision's own code: anything can come out
        applied = {d.revision for d in done}
        failed = next((r for r in order if r in rows and r not in applied), order[-1])
        _record_failure(core, trail, rows.get(failed), error)
        raise _failed(core, before, tuple(done), failed, error) from None
    _verify(core, before, target)
    return tuple(done)


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


def _failed(
    core: EngineCore, before: Classification, applied: tuple[AppliedRevision, ...],
    revision: str, error: BaseException,
) -> MigrationFailed:
    path = core.catalogue.file_path(revision)
    # The whole traceback is for the log; the message is for the console and the operator.
    logger.error("Revision %s (%s) raised %s", revision, path.name, type(error).__name__,
                 exc_info=(type(error), error, error.__traceback__))
    final = core.current_revisions()
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
        f"{core.safe(error)}. {before_it[0].upper()}{before_it[1:]}; {where}. The database is "
        f"at revision {describe_revisions(final)}. Fix the revision and deploy again; see "
        f"{RUNBOOK}#a-revision-fails"
    )
    logger.error(message)
    return MigrationFailed(message, before, applied, final)


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
