#!/usr/bin/env python3
"""Emergency fix for "relation already exists": give tables without history their history.

    python scripts/fix_rds_migration.py [--database-url URL | --function-name NAME |
                                         --stack-name NAME] [--json] [--confirm]

Prints the migration status, then the verified baseline: the migrations are replayed into a
scratch schema to find the revision the tables really match. Without --confirm that is a
dry run (nothing is stamped or migrated); with --confirm the revision is stamped and the
database migrated to head, as `remote_admin.py --confirm run-migrations --fix-history`.

Exit status as remote_admin.py: 0 done (or nothing to fix), 1 refused or failed (reason on
stderr, e.g. tables that match no revision), 2 usage error, including a fix that would
change the database but was not confirmed. --json prints {"status": ..., "fix_history": ...}
with the two admin answers.
"""

from __future__ import annotations

import argparse
import json
import sys

from remote_admin import (
    EXIT_DONE,
    EXIT_USAGE,
    Undelivered,
    answer_event,
    configure_logging,
    exit_status,
    render,
    shared_arguments,
    target_from_arguments,
)

PROG = "fix_rds_migration.py"
STATUS_EVENT = {"admin_operation": "status", "parameters": {}, "confirm": False}


def fix_event(confirm: bool) -> dict[str, object]:
    parameters = {"fix_history": True} if confirm else {"fix_history": True, "dry_run": True}
    return {"admin_operation": "run_migrations", "parameters": parameters, "confirm": confirm}


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=PROG, parents=[shared_arguments()],
        description="Establish a missing migration history by the verified baseline, then "
                    "migrate (needs --confirm; without it, a dry run).",
        epilog="Exit status: 0 done, 1 refused or failed, 2 usage error or not confirmed.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    target = target_from_arguments(parser, args)
    configure_logging()
    confirm = getattr(args, "confirm", False)
    answers: dict[str, dict[str, object]] = {}
    usage = False
    try:
        answers["status"] = answer_event(STATUS_EVENT, target)
        if answers["status"].get("ok"):
            answers["fix_history"] = answer_event(fix_event(confirm), target)
    except Undelivered as error:
        step, operation = ("fix_history", "run_migrations") if answers else ("status", "status")
        answers[step] = error.answer(operation)
        usage = error.usage
    last = answers.get("fix_history", answers["status"])
    status = EXIT_USAGE if usage else exit_status(last)
    reason = str(last["message"])
    if status == EXIT_DONE and not confirm and would_change(last):
        status = EXIT_USAGE
        reason = "nothing was changed: add --confirm to carry out this plan"
    if getattr(args, "json", False):
        print(json.dumps(answers, indent=2, default=str))
    else:
        shown = [render(answer) for answer in answers.values() if answer.get("ok")]
        if shown:
            print("\n\n".join(shown))
    if status != EXIT_DONE:
        print(f"{PROG}: {reason}", file=sys.stderr)
    return status


def would_change(dry_run: dict[str, object]) -> bool:
    """Whether the dry run found a revision to stamp or migrations to apply."""
    return bool(dry_run.get("pending")) or bool(dry_run.get("baseline"))


if __name__ == "__main__":
    sys.exit(main())
