"""Decide which of the six states a database is in, relative to a target revision."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from migration_resource.inspection import DatabaseSnapshot
from migration_resource.revisions import RevisionCatalogue
from migration_resource.states import (
    CHECKSUM_MISMATCH,
    DIVERGED,
    FAILED_RUN,
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
    UNVERIFIABLE_BASELINE,
    DatabaseState,
)


@dataclass(frozen=True)
class Classification:
    state: DatabaseState
    current: tuple[str, ...]  # revision ids in alembic_version (sorted); () when none
    target: tuple[str, ...]  # the target's head revision ids
    pending: tuple[str, ...] = ()  # in the order they would run
    cause: str | None = None  # machine code for `inconsistent`
    detail: str = ""  # one human sentence: why this state
    application_tables: tuple[str, ...] = field(default=())
    # `ahead`: the revisions the database has beyond the target, base first, and those of
    # them the change gate found destructive when they were applied
    newer: tuple[str, ...] = ()
    newer_destructive: tuple[str, ...] = ()
    # The schema is at or past the target by its revisions, whatever the bookkeeping says
    # (an edited applied revision): code written for the target can use it.
    schema_compatible: bool = False
    # The audit trail lacks what this version of the engine records (ancestry, code
    # checksums) for applied revisions: the next run under the lock fills it in.
    needs_bookkeeping: bool = False
    # `failed_run`: the revision an operator must resolve, for the next step to name it
    blocking_revision: str | None = None

    @property
    def needs_changes(self) -> bool:
        return self.state in (DatabaseState.EMPTY, DatabaseState.PENDING_MIGRATIONS)


def describe_revisions(revisions: tuple[str, ...]) -> str:
    """How revisions read in log lines: `abc123`, `a1, b2` or `base` when there are none."""
    return ", ".join(revisions) if revisions else "base"


def classify_up_to_date_fast(
    snapshot: DatabaseSnapshot,
    target_heads: tuple[str, ...],
    history_digest: str | None = None,
) -> Classification | None:
    """`up_to_date` decided from revision ids alone, or None when the scripts must be read.

    The deploy passes the target's head ids resolved at synth time, so a no-change deploy
    costs one small query whatever the length of the history. With `history_digest` (also
    computed at synth) the files must be the ones the last verified run recorded; any edit
    sends the run down the full path, which names the edited revision.
    """
    if snapshot.audit.blocking:
        return None
    if history_digest is not None and snapshot.audit.last_digest != history_digest:
        return None
    if snapshot.version_rows and snapshot.version_rows == tuple(sorted(target_heads)):
        return Classification(
            state=DatabaseState.UP_TO_DATE,
            current=snapshot.version_rows,
            target=tuple(sorted(target_heads)),
            detail="The database is at the target revision",
            application_tables=snapshot.application_tables,
        )
    return None


def classify(  # noqa: PLR0911, PLR0912 - one return per state reads better than a table
    snapshot: DatabaseSnapshot,
    catalogue: RevisionCatalogue,
    target: str,
    check_checksums: bool = True,
) -> Classification:
    """Full classification against the scripts; `target` is a resolved revision id, or
    `base` (only a downgrade asks for it). With `check_checksums` each applied revision's
    code checksum now is compared with what the audit trail recorded when it ran."""
    target_heads = () if target == "base" else (target,)
    current = snapshot.version_rows
    tables = snapshot.application_tables

    def result(
        state: DatabaseState,
        detail: str,
        *,
        pending: tuple[str, ...] = (),
        cause: str | None = None,
        blocking_revision: str | None = None,
    ) -> Classification:
        return Classification(
            state=state, current=current, target=target_heads, pending=pending, cause=cause,
            detail=detail, application_tables=tables, blocking_revision=blocking_revision,
        )

    audit = snapshot.audit
    if audit.blocking:
        failure = audit.blocking[0]
        how = "failed" if failure.outcome == "failed" else "is running, or its run died,"
        return result(
            DatabaseState.INCONSISTENT,
            f"revision {failure.revision} {how} inside a non-transactional step (started "
            f"{failure.started_at.isoformat(timespec='seconds')}); the database may hold part "
            "of it",
            cause=FAILED_RUN, blocking_revision=failure.revision,
        )

    if not current:
        if tables and audit.failed_baseline is not None:
            return result(
                DatabaseState.INCONSISTENT,
                f"no revision matches the tables: {audit.failed_baseline}",
                cause=UNVERIFIABLE_BASELINE,
            )
        if tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            return result(
                DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY,
                f"{len(tables)} application tables exist ({shown}) but alembic_version "
                f"{'is empty' if snapshot.version_table_exists else 'is missing'}",
            )
        return result(
            DatabaseState.EMPTY,
            "No application tables and no migration history",
            pending=catalogue.in_upgrade_order(catalogue.ancestry(target_heads)),
        )

    unknown = tuple(r for r in current if not catalogue.is_known(r))
    if unknown:
        return _beyond_the_scripts(snapshot, catalogue, target, unknown, result)

    # Several rows are legitimate only for independent branches; a row that is an ancestor
    # of another row means the history table was edited by hand.
    for revision in current:
        others = tuple(r for r in current if r != revision)
        if others and revision in catalogue.ancestry(others):
            return result(
                DatabaseState.INCONSISTENT,
                f"alembic_version holds {revision!r} together with its descendant; the "
                "history table was edited by hand",
                cause=OVERLAPPING_REVISIONS,
            )

    done = catalogue.ancestry(current)
    wanted = catalogue.ancestry(target_heads)
    legacy = False
    if check_checksums:
        for revision in catalogue.in_upgrade_order(done):
            recorded = audit.checksums.get(revision)
            verdict = "same" if recorded is None else catalogue.checksum_verdict(
                revision, recorded)
            legacy = legacy or verdict == "legacy"
            if verdict == "edited":
                return dataclasses.replace(result(
                    DatabaseState.INCONSISTENT,
                    f"checksum mismatch: revision {revision} was edited after it was applied "
                    f"({catalogue.file_path(revision).name})",
                    cause=CHECKSUM_MISMATCH,
                ), schema_compatible=wanted <= done)
    if done == wanted:
        unrecorded = audit.exists and any(r not in audit.parents for r in done)
        return dataclasses.replace(
            result(DatabaseState.UP_TO_DATE, "The database is at the target revision"),
            needs_bookkeeping=legacy or unrecorded, schema_compatible=True,
        )
    if done < wanted:
        pending = catalogue.in_upgrade_order(wanted - done)
        return result(
            DatabaseState.PENDING_MIGRATIONS,
            f"{len(pending)} revisions between {describe_revisions(current)} and {target}",
            pending=pending,
        )
    if wanted < done:
        beyond = catalogue.in_upgrade_order(done - wanted)
        return _ahead(result(DatabaseState.AHEAD, ""), beyond, audit.destructive, target)
    return result(
        DatabaseState.INCONSISTENT,
        f"The database ({describe_revisions(current)}) and the target ({target}) are on "
        "different branches of the history",
        cause=DIVERGED,
    )


def _beyond_the_scripts(
    snapshot: DatabaseSnapshot,
    catalogue: RevisionCatalogue,
    target: str,
    unknown: tuple[str, ...],
    result: Callable[..., Classification],
) -> Classification:
    """alembic_version holds revisions the scripts do not define: a newer release's, or not.

    What each applied revision stood on is recorded in the audit trail when it ran. Walking
    those records from the unknown revisions down to revisions the scripts know tells a
    database a newer release migrated (the code was rolled back: `ahead`) from one nobody
    can account for (`inconsistent`).
    """
    recorded = snapshot.audit.parents
    newer: list[str] = []
    reached: set[str] = {r for r in snapshot.version_rows if catalogue.is_known(r)}
    stack, seen = list(unknown), set()
    while stack:
        revision = stack.pop()
        if revision in seen:
            continue
        seen.add(revision)
        if catalogue.is_known(revision):
            reached.add(revision)
            continue
        if revision not in recorded:
            shown = ", ".join(repr(r) for r in unknown)
            also = "" if revision in unknown else f" (through {revision!r})"
            return result(
                DatabaseState.INCONSISTENT,
                f"alembic_version holds {shown}: no script defines it, no audit row traces "
                f"its ancestry{also}",
                cause=UNKNOWN_REVISION,
            )
        newer.append(revision)
        stack.extend(recorded[revision])
    target_heads = () if target == "base" else (target,)
    if not catalogue.ancestry(target_heads) <= catalogue.ancestry(tuple(reached)):
        return result(
            DatabaseState.INCONSISTENT,
            f"alembic_version holds {', '.join(repr(r) for r in unknown)}, which descend from "
            f"{describe_revisions(tuple(sorted(reached)))} by migration_audit but not from the "
            f"target {target}",
            cause=DIVERGED,
        )
    known_beyond = catalogue.in_upgrade_order(
        catalogue.ancestry(tuple(reached)) - catalogue.ancestry(target_heads)
    )
    # The unknown ones in the order they were applied: parents before children.
    ordered_newer = tuple(reversed(newer))
    return _ahead(result(DatabaseState.AHEAD, ""), known_beyond + ordered_newer,
                  snapshot.audit.destructive, target, undefined=len(ordered_newer))


def _ahead(
    base: Classification,
    beyond: tuple[str, ...],
    destructive: frozenset[str],
    target: str,
    *,
    undefined: int = 0,
) -> Classification:
    undefined_note = (
        f", {undefined} of them defined by no script here (a newer release's, recorded in "
        "migration_audit)" if undefined else ""
    )
    return dataclasses.replace(
        base,
        detail=f"The database is {len(beyond)} revision{'s' if len(beyond) != 1 else ''} past "
               f"the target {target} ({', '.join(beyond)}){undefined_note}; it is never "
               "downgraded automatically",
        newer=beyond,
        newer_destructive=tuple(r for r in beyond if r in destructive),
        schema_compatible=True,
    )
