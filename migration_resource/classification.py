"""Decide which of the six states a database is in, relative to a target revision."""

from __future__ import annotations

from dataclasses import dataclass, field

from migration_resource.inspection import DatabaseSnapshot
from migration_resource.revisions import RevisionCatalogue
from migration_resource.states import (
    DIVERGED,
    OVERLAPPING_REVISIONS,
    UNKNOWN_REVISION,
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
    snapshot: DatabaseSnapshot, target_heads: tuple[str, ...]
) -> Classification | None:
    """`up_to_date` decided from revision ids alone, or None when the scripts must be read.

    The deploy passes the target's head ids resolved at synth time, so a no-change deploy
    costs one small query whatever the length of the history.
    """
    if snapshot.version_rows and snapshot.version_rows == tuple(sorted(target_heads)):
        return Classification(
            state=DatabaseState.UP_TO_DATE,
            current=snapshot.version_rows,
            target=tuple(sorted(target_heads)),
            detail="The database is at the target revision",
            application_tables=snapshot.application_tables,
        )
    return None


def classify(  # noqa: PLR0911 - one return per state reads better than a table
    snapshot: DatabaseSnapshot, catalogue: RevisionCatalogue, target: str
) -> Classification:
    """Full classification against the scripts; `target` is a resolved revision id, or
    `base` (only a downgrade asks for it)."""
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

    if not current:
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
