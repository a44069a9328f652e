"""Establishing a missing or broken history: the verified baseline, or the operator's stamp.

Both write alembic_version without running a revision, so both run under the migration lock
and leave one audit row per revision they vouch for.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path
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
from migration_resource.core import ENGINE_LOGGER, RUNBOOK, EngineCore, with_recorded_row
from migration_resource.execution import alembic_quiet, render_offline, stamp_online
from migration_resource.outcomes import MigrationRefused
from migration_resource.scratch_database import ScratchUnavailable, scratch_database
from migration_resource.states import (
    AMBIGUOUS_BASELINE,
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
    UNVERIFIABLE_BASELINE,
    DatabaseState,
)

logger = logging.getLogger(ENGINE_LOGGER)

# States an explicit operator baseline may overwrite: no history, or a history that is wrong.
BASELINE_CAUSES = frozenset({UNKNOWN_REVISION, OVERLAPPING_REVISIONS, UNVERIFIABLE_BASELINE,
                             AMBIGUOUS_BASELINE})
AMBIGUITY_NAMED = 4  # revisions a refusal names, of those between the candidates


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


def chosen_baseline(
    core: EngineCore, now: Classification, result: BaselineResult
) -> tuple[str | None, Classification]:
    """The revision the verified baseline stamps, or None with the classification that says
    why none can be: the tables match no revision, or several with code between them.

    Several revisions match when the ones after the first change no schema. When all of
    those do nothing at all (merges, empty revisions), the last is stamped: nothing is
    skipped and nothing runs twice. When they only fill rows still NULL (a backfill, which
    run again changes nothing it changed), the first is stamped, so they run. When one of
    them does anything else to the data, the tables cannot say whether it ran: stamping
    before it may run it twice (amounts multiplied again), after it may skip it. That is
    refused, naming them."""
    if result.matched is None:
        return None, unverifiable(now, result)
    catalogue = core.catalogue
    first, last = result.matches[0], result.matches[-1]
    between = catalogue.ordered[catalogue.ordered.index(first) + 1:
                                catalogue.ordered.index(last) + 1]
    working = [r for r in between if not does_nothing(catalogue.file_path(r))]
    if not working:
        return last, now
    refills = _refills(core, first, last)
    linear = first in catalogue.ancestry((last,))
    if linear and all(r in refills for r in working):
        return first, now
    unsafe = [r for r in working if r not in refills]
    named = ", ".join(f"{r} ({_doc(core, r)})" for r in unsafe[:AMBIGUITY_NAMED])
    more = f" and {len(unsafe) - AMBIGUITY_NAMED} more" if len(unsafe) > AMBIGUITY_NAMED else ""
    candidates = ", ".join(result.matches[:AMBIGUITY_NAMED]) + (
        f" and {len(result.matches) - AMBIGUITY_NAMED} more"
        if len(result.matches) > AMBIGUITY_NAMED else "")
    return None, dataclasses.replace(
        now, state=DatabaseState.INCONSISTENT, cause=AMBIGUOUS_BASELINE,
        detail=f"the tables match {len(result.matches)} revisions ({candidates}); between "
               f"them {named}{more} changes data but no schema, so whether it ran cannot be "
               "told from the tables")


def _refills(core: EngineCore, first: str, last: str) -> frozenset[str]:
    """The revisions after `first` up to `last` whose SQL only fills rows still NULL."""
    from migration_resource.gate import only_refills  # noqa: PLC0415 - the parser, only here

    try:
        with alembic_quiet():
            rendered = render_offline(core.settings, first, last).sql
    except Exception:  # a revision's own code: what cannot be read is not a refill
        return frozenset()
    return frozenset(revision for revision, sql in rendered.items() if only_refills(sql))


def does_nothing(path: Path) -> bool:
    """True when the revision's upgrade() holds nothing but `pass` and a docstring."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, RecursionError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "upgrade":
            return all(isinstance(s, ast.Pass) or (
                isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                for s in node.body)
    return False


def _doc(core: EngineCore, revision: str) -> str:
    doc = " ".join(str(core.catalogue.get(revision).doc or "").split())
    return doc[:60] or "no description"


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


def find_verified_baseline(
    core: EngineCore, trail: AuditTrail, now: Classification
) -> tuple[str, dict[str, Any]]:
    """The revision the tables match, and the report; refused when none can be chosen.

    Nothing is stamped here: the caller judges the revisions after it first."""
    # A replay killed by an earlier engine version left its scratch schema in the live
    # database; under the lock, as this is, it can go.
    drop_scratch_schemas(core.database)
    result = search_baseline(core)
    report = baseline_report(result)
    stamp, refused = chosen_baseline(core, now, result)
    if stamp is None:
        refusal = core.refusal(refused, fix_history=False)
        assert refusal is not None
        if trail.record_refusal("baseline", None, "failed", detail=refused.detail):
            refusal = with_recorded_row(refusal)
        logger.warning(refusal)
        raise MigrationRefused(refusal, refused)
    logger.info("Verified baseline: %s", result.summary())
    if stamp != result.matched:
        logger.info("Stamping %s, the last of them: the revisions between do nothing", stamp)
    return stamp, report


def stamp_verified(
    core: EngineCore, connection: sa.Connection, trail: AuditTrail, stamp: str, resolved: str,
    *, summary: str,
) -> Classification:
    stamp_online(connection, core.settings, stamp)
    _record_baseline(core, trail, stamp, f"verified: {summary}")
    return core.classify_locked(connection, resolved)


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
