"""Establishing a missing or broken history: the verified baseline, or the operator's stamp.

Both write alembic_version without running a revision, so both run under the migration lock
and leave one audit row per revision they vouch for.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import sqlalchemy as sa

from migration_resource.audit import AuditTrail
from migration_resource.baseline import (
    BaselineError,
    BaselineResult,
    drop_scratch_schemas,
    find_baseline,
)
from migration_resource.classification import Classification
from migration_resource.core import ENGINE_LOGGER, RUNBOOK, EngineCore
from migration_resource.execution import alembic_quiet, stamp_online
from migration_resource.outcomes import MigrationRefused
from migration_resource.scratch_database import ScratchUnavailable, scratch_database
from migration_resource.states import (
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
    UNVERIFIABLE_BASELINE,
    DatabaseState,
)

logger = logging.getLogger(ENGINE_LOGGER)

# States an explicit operator baseline may overwrite: no history, or a history that is wrong.
BASELINE_CAUSES = frozenset({UNKNOWN_REVISION, OVERLAPPING_REVISIONS, UNVERIFIABLE_BASELINE})


def search_baseline(core: EngineCore) -> BaselineResult:
    """Replay the history into a scratch database; the live database is only read."""
    catalogue = core.catalogue
    logger.info(
        "Verifying the baseline: replaying %d revisions into a scratch database (the live "
        "tables are only read)", len(catalogue.ordered),
    )
    try:
        with alembic_quiet(), scratch_database(
            core.database, core.scratch_engine, extensions=core.live_extensions(),
            schema=core.settings.schema,
        ) as scratch:
            result = find_baseline(
                core.database, core.settings, catalogue.ordered,
                schema=core.settings.schema, ignored_tables=core.settings.ignored_tables,
                statement_timeout_seconds=core.settings.migration_timeout_seconds,
                replay_on=scratch,
            )
    except ScratchUnavailable as error:
        raise MigrationRefused(
            f"tables_without_migration_history: the baseline check needs a scratch database "
            f"and the server refused one ({error}); nothing was changed. Give the migration "
            "role CREATEDB, or stamp the revision yourself with --baseline REV if you know "
            f"it; see {RUNBOOK}#tables-without-migration-history"
        ) from None
    except BaselineError as error:
        raise MigrationRefused(
            f"tables_without_migration_history: the baseline check could not replay the "
            f"migrations ({error}); nothing was changed. Stamp the revision yourself with "
            f"--baseline REV if you know it; see {RUNBOOK}#tables-without-migration-history"
        ) from None
    logger.info("Baseline search: %s (%d revisions compared in %.2f s)",
                result.summary(), result.revisions_compared, result.seconds)
    return result


def unverifiable(now: Classification, result: BaselineResult) -> Classification:
    return dataclasses.replace(
        now, state=DatabaseState.INCONSISTENT, cause=UNVERIFIABLE_BASELINE,
        detail=f"no revision matches the tables: {result.summary()}",
    )


def as_if_stamped(
    core: EngineCore, classification: Classification, stamped: str, resolved: str
) -> Classification:
    catalogue = core.catalogue
    pending = catalogue.in_upgrade_order(
        catalogue.ancestry((resolved,)) - catalogue.ancestry((stamped,))
    )
    state = DatabaseState.PENDING_MIGRATIONS if pending else DatabaseState.UP_TO_DATE
    return dataclasses.replace(classification, state=state, current=(stamped,),
                               pending=pending, cause=None, detail=f"after stamping {stamped}")


def check_baseline_allowed(classification: Classification, stamped: str) -> None:
    allowed = EngineCore.needs_history_fix(classification) or (
        classification.cause in BASELINE_CAUSES
    )
    if not allowed:
        raise MigrationRefused(
            f"{classification.state.value}: --baseline {stamped} is only for a database "
            "without (or with a broken) migration history; nothing was changed. Use "
            "run-migrations without --baseline",
            classification,
        )


def verified_baseline(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, now: Classification,
    resolved: str,
) -> tuple[Classification, dict[str, Any]]:
    # A replay killed by an earlier engine version left its scratch schema in the live
    # database; under the lock, as this is, it can go.
    drop_scratch_schemas(core.database)
    result = search_baseline(core)
    report = baseline_report(result)
    if result.matched is None:
        trail.record("baseline", None, "failed", detail=result.summary())
        refused = unverifiable(now, result)
        refusal = core.refusal(refused, fix_history=False)
        assert refusal is not None
        logger.warning(refusal)
        raise MigrationRefused(refusal, refused)
    logger.info("Verified baseline: %s", result.summary())
    stamp_online(connection, core.settings, result.matched)
    _record_baseline(core, trail, result.matched, f"verified: {result.summary()}")
    return core.classify_locked(connection, resolved), report


def stamp_explicit(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, now: Classification,
    *, stamped: str, resolved: str,
) -> Classification:
    check_baseline_allowed(now, stamped)
    logger.warning("Stamping %s as the operator asked (not verified)", stamped)
    stamp_online(connection, core.settings, stamped, purge=True)
    _record_baseline(core, trail, stamped, "explicit baseline by the operator (not verified)")
    return core.classify_locked(connection, resolved)


def _record_baseline(core: EngineCore, trail: AuditTrail, stamped: str, detail: str) -> None:
    catalogue = core.catalogue
    for revision in catalogue.in_upgrade_order(catalogue.ancestry((stamped,))):
        trail.record("baseline", revision, "succeeded", checksum=catalogue.checksum(revision),
                     detail=detail, parents=catalogue.parents(revision))


def baseline_report(result: BaselineResult) -> dict[str, Any]:
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
