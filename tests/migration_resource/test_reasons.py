"""Failure reasons fitted to the 240 characters CloudFormation shows: both ends survive."""

from __future__ import annotations

from migration_resource.reasons import ELLIPSIS, REASON_LIMIT, short_reason

ANCHOR = "See docs/RUNBOOK.md#inconsistent"
NEXT_STEP = ("Resolve it with `remote_admin.py --confirm repair --resolve rolled-back|applied "
             "--revision REV`.")


def test_a_reason_that_fits_is_only_tidied() -> None:
    assert short_reason("up_to_date:  nothing\n to do") == "up_to_date: nothing to do"


def test_the_detail_is_shortened_not_the_next_step_or_the_runbook_anchor() -> None:
    reason = short_reason(f"inconsistent: {'long detail ' * 30}; nothing was changed. "
                          f"{NEXT_STEP} {ANCHOR}")
    assert len(reason) == REASON_LIMIT
    assert reason.startswith("inconsistent: long detail")
    assert reason.endswith(f"{ELLIPSIS}; nothing was changed. {NEXT_STEP} {ANCHOR}")


def test_earlier_sentences_give_way_to_the_last_one() -> None:
    reason = short_reason(f"pending_migrations: {'x' * 200}; nothing was changed. "
                          f"{'A first sentence that is rather long. ' * 4}Do this")
    assert len(reason) <= REASON_LIMIT
    assert reason.startswith("pending_migrations: x")
    assert reason.endswith("Do this")  # as written: no period is added


def test_one_overlong_next_step_leaves_room_for_the_state() -> None:
    reason = short_reason(f"timeout: {'y' * 300}; nothing was changed. {'step ' * 80}")
    assert len(reason) <= REASON_LIMIT
    assert reason.startswith("timeout: yyyy") and reason.endswith(ELLIPSIS)
    assert "; nothing was changed. step" in reason


def test_without_the_marker_both_ends_are_kept() -> None:
    reason = short_reason("error: " + "z" * 400 + " retry later")
    assert len(reason) <= REASON_LIMIT
    assert reason.startswith("error: z") and reason.endswith("retry later")


def test_a_failed_revision_gives_its_file_name_up_before_the_error() -> None:
    # GIVEN the engine's line for a revision that failed, too long for the console
    message = (
        "pending_migrations: revision a41c7e9d2b58 (20261206_0900_a41c7e9d2b58_unique_display_"
        "names.py) failed after 1 of 2 revisions: UniqueViolation: could not create unique "
        'index "uq_users_display_name" DETAIL: Key (display_name)=(Ada) is duplicated. '
        "Committed before it in this run: 6f1c2a9b7d3e; its online steps commit as they go. "
        "The database is at revision 6f1c2a9b7d3e. Fix the revision and deploy again; see "
        "docs/RUNBOOK.md#a-revision-fails")
    reason = short_reason(message)
    # THEN the revision id stays, its file name goes, and more of the error fits
    assert len(reason) <= REASON_LIMIT
    assert reason.startswith("pending_migrations: revision a41c7e9d2b58 failed after 1 of 2 "
                             "revisions: UniqueViolation: could not create unique index "
                             '"uq_users_display_name"')
    assert reason.endswith("Fix the revision and deploy again; see "
                           "docs/RUNBOOK.md#a-revision-fails")
    # AND a reason that fits keeps the file name
    assert short_reason("pending_migrations: revision abc (x.py) failed") == (
        "pending_migrations: revision abc (x.py) failed")
