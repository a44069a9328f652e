"""Revision phases: what the code released before a revision can live with.

- `expand`: the code before it keeps working (new tables, nullable columns, indexes, data
  copies). The deploy that brings it applies it, before the new code is live.
- `contract`: it removes or rewrites what the code before it may use (drops, renames, type
  changes, NOT NULL on an existing column, destructive data changes). The deploy that brings
  it defers it: a later deploy applies it first thing, once the live release (the one being
  replaced, CloudFormation's `OldResourceProperties`) already contains it, so neither the
  code being replaced nor a rollback target can still need what it removes.

The phase comes from the change gate's findings on the statements that really run; a line in
the revision file may state it, with a reason:

    # migration-phase: expand -- the column was never read by any release
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from migration_resource.outcomes import MigrationRefused

EXPAND, CONTRACT = "expand", "contract"
# The gate's rules whose statements break the code released before them.
CONTRACT_RULES = frozenset({
    "drop_table", "drop_column", "drop_schema", "truncate", "alter_column_type",
    "delete_without_where", "delete_rows", "update_overwrites", "merge", "rename",
    "drop_type_cascade", "drop_domain_cascade", "drop_extension_cascade",
    "drop_collation_cascade",
    # The code before it inserts NULLs, or rows without the new column.
    "set_not_null", "add_column_not_null_without_default",
    # What the gate cannot see into may remove anything the code before it uses.
    "do_block", "call_procedure", "execute_prepared", "function_call", "unparsed",
    "not_previewed",
})
MARKER_TEXT = "# migration-phase:"
_MARKER = re.compile(
    r"^[ \t]*#[ \t]*migration-phase:[ \t]*(?P<phase>\w+)[ \t]*(?:(?:--|:|-|—)[ \t]*)?"
    r"(?P<reason>.*?)[ \t]*$", re.MULTILINE)
REASON_LIMIT = 160


class PhaseMarkerError(MigrationRefused):
    """A revision file's phase line cannot be read; the message says how to write it."""


@dataclass(frozen=True)
class RevisionPhase:
    revision: str
    phase: str  # EXPAND or CONTRACT
    why: str  # the findings that make it contract, or the marker's reason
    marked: bool = False  # stated in the revision file

    def as_dict(self) -> dict[str, object]:
        return {"revision": self.revision, "phase": self.phase, "why": self.why,
                "marked": self.marked}


class FindingLike(Protocol):
    """What phases need of a gate finding (gate.Finding)."""

    @property
    def revision(self) -> str: ...
    @property
    def rule(self) -> str: ...


def marker_in(revision: str, file_text: str) -> tuple[str, str] | None:
    """(phase, reason) from the revision file's phase line, or None without one."""
    match = _MARKER.search(file_text)
    if match is None:
        return None
    phase, reason = match["phase"].lower(), match["reason"].strip()
    if phase not in (EXPAND, CONTRACT) or not reason:
        raise PhaseMarkerError(
            f"revision {revision}: its `{MARKER_TEXT}` line must name expand or contract and "
            f"a reason, e.g. `{MARKER_TEXT} expand -- the column was never read`; nothing was "
            "changed. Fix the line and deploy again")
    return phase, reason[:REASON_LIMIT]


def phases_of(
    order: Sequence[str],
    findings: Iterable[FindingLike],
    file_text: Callable[[str], str],
) -> tuple[RevisionPhase, ...]:
    """Each revision's phase, in `order`."""
    contract_findings: dict[str, list[str]] = {}
    for finding in findings:
        if finding.rule in CONTRACT_RULES:
            contract_findings.setdefault(finding.revision, []).append(finding.rule)
    phases = []
    for revision in order:
        marked = marker_in(revision, file_text(revision))
        if marked is not None:
            phases.append(RevisionPhase(revision, marked[0], marked[1], marked=True))
        elif revision in contract_findings:
            rules = sorted(set(contract_findings[revision]))
            phases.append(RevisionPhase(revision, CONTRACT, ", ".join(rules)))
        else:
            phases.append(RevisionPhase(revision, EXPAND, "adds only"))
    return tuple(phases)


@dataclass(frozen=True)
class ReleaseSplit:
    """What this deploy applies now and what waits for the next release."""

    run: tuple[str, ...]  # in upgrade order
    deferred: tuple[str, ...]  # from the first contract revision the live release does not
    # contain yet: what waits for a later release
    target: str | None  # the revision to upgrade to; None when nothing runs now

    @property
    def defers(self) -> bool:
        return bool(self.deferred)


@dataclass(frozen=True)
class Release:
    """What is live: the revisions the release being replaced contains.

    `contains` None means no release is known to be live with this database's schema (a
    first deploy on a database with data, an application container). `refuse_after_contract`
    (a deploy): a revision after a deferred contract one is refused. Without it (an
    application container) the run stops before the first contract revision, whatever the
    live release. A deploy that knows no live release defers only the contract revisions at
    the end of what is pending: the ones followed by other revisions are older history (a
    team adopting this with a long history), which runs through the gate as it always did.
    """

    contains: frozenset[str] | None
    refuse_after_contract: bool = True

    def split(
        self, order: Sequence[str], phases: Mapping[str, str], target: str,
        ancestry: Callable[[str], frozenset[str]],
    ) -> ReleaseSplit:
        if self.contains is None and self.refuse_after_contract:
            return _defer_trailing(order, phases, target)
        released = self.contains or frozenset()

        def deferred(revision: str) -> bool:
            return phases.get(revision) == CONTRACT and revision not in released

        first = next((i for i, revision in enumerate(order) if deferred(revision)), None)
        if first is None:
            return ReleaseSplit(run=tuple(order), deferred=(), target=target)
        later = [revision for revision in order[first:] if not deferred(revision)]
        if later and self.refuse_after_contract:
            raise MigrationRefused(
                f"pending_migrations: revision {later[0]} comes after contract revision "
                f"{order[first]}, which this release brings and which waits for the next "
                "release (the code being replaced may still use what it removes); nothing "
                f"was changed. Make {order[first]} the last revision of this release (move "
                f"{later[0]} before it, or to the next release)")
        run = tuple(order[:first])
        new_target = run[-1] if run else None
        if new_target is not None and not set(run) <= ancestry(new_target) | {new_target}:
            raise MigrationRefused(
                f"pending_migrations: contract revision {order[first]} waits for the next "
                f"release, and the revisions before it ({', '.join(run)}) are not one line "
                f"of history ending at {new_target}; nothing was changed. Make the contract "
                "revision the last one of this release, on the branch merged last")
        return ReleaseSplit(run=run, deferred=tuple(order[first:]), target=new_target)


def _defer_trailing(order: Sequence[str], phases: Mapping[str, str], target: str) -> ReleaseSplit:
    tail = len(order)
    while tail > 0 and phases.get(order[tail - 1]) == CONTRACT:
        tail -= 1
    run = tuple(order[:tail])
    if tail == len(order):
        return ReleaseSplit(run=run, deferred=(), target=target)
    return ReleaseSplit(run=run, deferred=tuple(order[tail:]), target=run[-1] if run else None)


def by_phase(phases: Iterable[RevisionPhase]) -> dict[str, list[str]]:
    """{"expand": [...], "contract": [...]} in order, for outputs and the deploy's Data."""
    grouped: dict[str, list[str]] = {EXPAND: [], CONTRACT: []}
    for one in phases:
        grouped[one.phase].append(one.revision)
    return grouped
