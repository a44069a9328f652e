"""Decide which of the six states a database is in, relative to a target revision."""

from __future__ import annotations

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
    checksum_of: Callable[[str], str] | None = None,
) -> Classification:
    """Full classification against the scripts; `target` is a resolved revision id, or
    `base` (only a downgrade asks for it). `checksum_of(revision)` gives the file's
    checksum now, compared with what the audit trail recorded when it ran."""
    target_heads = () if target == "base" else (target,)
    current = snapshot.version_rows
    tables = snapshot.application_tables

    def result(
        state: DatabaseState,
        detail: str,
        *,
        pending: tuple[str, ...] = (),
        cause: str | None = None,
    ) -> Classification:
        return Classification(
            state=state, current=current, target=target_heads, pending=pending, cause=cause,
            detail=detail, application_tables=tables,
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
            cause=FAILED_RUN,
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
        return result(
            DatabaseState.INCONSISTENT,
            f"alembic_version holds {', '.join(repr(r) for r in unknown)} which no migration "
            "script defines",
            cause=UNKNOWN_REVISION,
        )

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
    if checksum_of is not None:
        for revision in catalogue.in_upgrade_order(done):
            recorded = audit.checksums.get(revision)
            if recorded is not None and recorded != checksum_of(revision):
                return result(
                    DatabaseState.INCONSISTENT,
                    f"checksum mismatch: revision {revision} was edited after it was applied "
                    f"({catalogue.file_path(revision).name})",
                    cause=CHECKSUM_MISMATCH,
                )
    wanted = catalogue.ancestry(target_heads)
    if done == wanted:
        return result(DatabaseState.UP_TO_DATE, "The database is at the target revision")
    if done < wanted:
        pending = catalogue.in_upgrade_order(wanted - done)
        return result(
            DatabaseState.PENDING_MIGRATIONS,
            f"{len(pending)} revisions between {describe_revisions(current)} and {target}",
            pending=pending,
        )
    if wanted < done:
        beyond = catalogue.in_upgrade_order(done - wanted)
        return result(
            DatabaseState.AHEAD,
            f"The database is {len(beyond)} revisions past the target {target}; it is never "
            "downgraded automatically",
        )
    return result(
        DatabaseState.INCONSISTENT,
        f"The database ({describe_revisions(current)}) and the target ({target}) are on "
        "different branches of the history",
        cause=DIVERGED,
    )
