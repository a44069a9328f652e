"""Downgrade: the only way down, with an explicit target and confirmation, under the lock."""

from __future__ import annotations

import logging
import time

from migration_resource.apply import apply_downgrade
from migration_resource.audit import RunContext
from migration_resource.classification import Classification, describe_revisions
from migration_resource.core import ENGINE_LOGGER, EngineCore
from migration_resource.outcomes import ConfirmationRequired, MigrationRefused, Outcome
from migration_resource.revisions import HEAD_TARGETS, TargetRevisionError, check_target_syntax
from migration_resource.states import DatabaseState

logger = logging.getLogger(ENGINE_LOGGER)


def _refuse_reverting_another_branch(
    core: EngineCore, before: Classification, target: str
) -> None:
    """A downgrade reverts every applied revision that is not an ancestor of `target`. When
    one of them does not descend from `target` either (the other parent's branch of a merge),
    reaching `target` means reverting work that never stood on it: refused before it starts,
    naming that branch, rather than done and reported as something else."""
    if target == "base":
        return
    catalogue = core.catalogue
    known = tuple(r for r in before.current if catalogue.is_known(r))
    beyond = catalogue.ancestry(known) - catalogue.ancestry((target,))
    aside = [r for r in catalogue.in_upgrade_order(beyond)
             if target not in catalogue.ancestry((r,))]
    if aside:
        named = ", ".join(aside[:3]) + (f" and {len(aside) - 3} more" if len(aside) > 3 else "")
        raise MigrationRefused(
            f"{before.state.value}: a downgrade to {target} would also revert {named}, on a "
            f"branch that does not descend from {target} (it was merged later); nothing was "
            "changed. Downgrade to a revision both branches descend from (where they split)",
            before,
        )


def downgrade(
    core: EngineCore, target: str, *, confirm: bool, context: RunContext | None = None
) -> Outcome:
    started = time.perf_counter()
    context = context or RunContext()
    cleaned = check_target_syntax(target)
    if cleaned in HEAD_TARGETS:
        raise TargetRevisionError(
            "A downgrade needs an explicit target revision id (or 'base'), not 'head'"
        )
    resolved = "base" if cleaned == "base" else core.resolve(cleaned)
    if not confirm:
        raise ConfirmationRequired(
            f"Downgrading to {resolved} can drop columns and data; repeat with confirmation "
            "(--confirm) after taking a snapshot"
        )
    before = core.classify_resolved(resolved)
    if before.state is DatabaseState.UP_TO_DATE:
        return core.nothing_to_do("downgrade", before, started)
    if before.state is not DatabaseState.AHEAD:
        raise MigrationRefused(
            f"{before.state.value}: cannot downgrade to {resolved} ({before.detail}); "
            "nothing was changed. A downgrade target must be an ancestor of the current "
            "revision; see `remote_admin.py status`",
            before,
        )
    _refuse_reverting_another_branch(core, before, resolved)
    undefined = [r for r in before.newer if not core.catalogue.is_known(r)]
    if undefined:
        raise MigrationRefused(
            f"ahead: the database is at {', '.join(undefined)}, which these scripts do not "
            "define; only the release that defines a revision has its downgrade(). Nothing "
            "was changed: run the downgrade from that release (a checkout of it with "
            "--database-url, or its deployed function)",
            before,
        )
    with (
        core.locked_session(before, context) as connection,
        core.audit_trail(context) as trail,
    ):
        now, keep_books = core.prepare_locked(connection, trail, resolved)
        if now.state is not DatabaseState.AHEAD:
            core.raise_if_refused(now, fix_history=False)
            keep_books()
            return core.nothing_to_do("downgrade", now, started)
        keep_books()
        logger.info("Downgrading to %s...", resolved)
        applied = apply_downgrade(core, connection, trail, now, resolved)
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
