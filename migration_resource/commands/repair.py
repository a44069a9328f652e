"""Repair: settle what blocks runs, explicitly confirmed, and write it to the audit trail."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from migration_resource.audit import AuditTrail, RunContext
from migration_resource.core import ENGINE_LOGGER, STATUS_HISTORY_ROWS, EngineCore
from migration_resource.execution import stamp_online
from migration_resource.inspection import DatabaseSnapshot
from migration_resource.outcomes import (
    ConfirmationRequired,
    MigrationRefused,
    Outcome,
    UsageError,
)

logger = logging.getLogger(ENGINE_LOGGER)

RESOLUTIONS = ("rolled-back", "applied")


def repair(
    core: EngineCore,
    *,
    confirm: bool,
    realign_checksums: bool = False,
    resolve: str | None = None,
    revision: str | None = None,
    context: RunContext | None = None,
) -> Outcome:
    """`realign_checksums` records the current files' checksums for edited revisions (after
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
    before = core.classify("head", None, None)
    done: list[str] = []
    with (
        core.locked_session(before, context) as connection,
        core.audit_trail(context) as trail,
    ):
        snapshot = core.settle(connection, trail)
        if realign_checksums:
            done += _realign(core, trail, snapshot)
        if resolve is not None and revision is not None:
            done += _resolve_failure(core, connection, trail, snapshot, resolution=resolve,
                                     revision=core.resolve(revision))
        now = core.classify_locked(connection, core.catalogue.head)
    message = "Repair: " + ("; ".join(done) if done else "nothing needed repair")
    logger.info(message)
    return Outcome(
        operation="repair", classification=now, message=message, final=now.current,
        history=tuple(core.recent_actions(STATUS_HISTORY_ROWS)),
        seconds=time.perf_counter() - started,
    )


def _realign(core: EngineCore, trail: AuditTrail, snapshot: DatabaseSnapshot) -> list[str]:
    catalogue = core.catalogue
    done: list[str] = []
    known = tuple(r for r in snapshot.version_rows if catalogue.is_known(r))
    for revision in catalogue.in_upgrade_order(catalogue.ancestry(known)):
        recorded = snapshot.audit.checksums.get(revision)
        current = catalogue.checksum(revision)
        if recorded is not None and catalogue.checksum_verdict(revision, recorded) == "edited":
            trail.record("repair", revision, "succeeded", checksum=current,
                         parents=catalogue.parents(revision),
                         detail=f"checksum realigned: recorded {recorded[:12]}, file "
                                f"{current[:12]}")
            done.append(f"realigned the checksum of {revision}")
    return done


def _resolve_failure(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, snapshot: DatabaseSnapshot,
    *, resolution: str, revision: str,
) -> list[str]:
    failures = [f for f in snapshot.audit.blocking if f.revision == revision]
    if not failures:
        raise MigrationRefused(
            f"repair: no unresolved failure of revision {revision} in the audit trail; "
            "nothing was changed (see `remote_admin.py history`)"
        )
    trail.resolve([f.id for f in failures])
    if resolution == "applied":
        stamp_online(connection, core.settings, revision)
        trail.record("repair", revision, "succeeded",
                     checksum=core.catalogue.checksum(revision),
                     detail="resolved as applied: completed by hand and stamped")
        return [f"resolved the failure of {revision} as applied (stamped)"]
    trail.record("repair", revision, "succeeded",
                 detail="resolved as rolled back: the revision runs again on the next run")
    return [f"resolved the failure of {revision} as rolled back (it will run again)"]
