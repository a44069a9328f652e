#!/usr/bin/env python3
"""Operate the database migrations: status, dry run, migrate, downgrade.

    python scripts/remote_admin.py [--database-url URL] [--json] [--confirm] COMMAND ...

Commands:
    status [--target-revision REV]
    run-migrations [--dry-run] [--target-revision REV] [--fix-history | --baseline REV]
                   [--allow-destructive]
    history [--limit N]
    repair [--realign-checksums] [--resolve rolled-back|applied --revision REV]
    downgrade --target-revision REV          (drops schema; needs --confirm)

Exit status: 0 done, 1 refused or failed (reason on stderr), 2 usage error (including a
change requested without --confirm). DATABASE_URL is the default for --database-url.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migration_resource.admin import (
    ERROR_CODES,
    OPERATIONS,
    answer_admin_event,
    error_answer,
)
from migration_resource.dsn import DatabaseUrlError
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings, SettingsError

EXIT_DONE, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    # Global flags are accepted before or after the command, as operators type both.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the answer as JSON")
    shared.add_argument("--confirm", action="store_true", default=argparse.SUPPRESS,
                        help="allow a command that changes the database")
    shared.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="PostgreSQL URL (default: $DATABASE_URL)")
    shared.add_argument("--stage", choices=("development", "production"),
                        default=argparse.SUPPRESS,
                        help="safety rules to apply (default: $STAGE or development)")

    parser = argparse.ArgumentParser(
        prog="remote_admin.py", parents=[shared],
        description="Check and run the database migrations.",
        epilog="Exit status: 0 done, 1 refused or failed, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", parents=[shared], help="show the migration state")
    status.add_argument("--target-revision", default="head", metavar="REV")
    run = commands.add_parser("run-migrations", parents=[shared],
                              help="apply pending migrations (needs --confirm unless --dry-run)")
    run.add_argument("--dry-run", action="store_true",
                     help="show the plan and its SQL; change nothing")
    run.add_argument("--target-revision", default="head", metavar="REV")
    history_fix = run.add_mutually_exclusive_group()
    history_fix.add_argument("--fix-history", action="store_true",
                             help="tables without history: find the revision they match "
                                  "(verified), stamp it, then migrate")
    history_fix.add_argument("--baseline", metavar="REV",
                             help="stamp REV without verification (you know better), then "
                                  "migrate")
    run.add_argument("--allow-destructive", action="store_true",
                     help="let revisions that drop or rewrite data run in production")
    history = commands.add_parser("history", parents=[shared],
                                  help="the audit trail of migration actions")
    history.add_argument("--limit", type=int, default=20)
    repair = commands.add_parser("repair", parents=[shared],
                                 help="settle a failed run or edited checksums (needs --confirm)")
    repair.add_argument("--realign-checksums", action="store_true",
                        help="accept the current files of edited, applied revisions")
    repair.add_argument("--resolve", choices=("rolled-back", "applied"),
                        help="how a failed non-transactional revision was settled by hand")
    repair.add_argument("--revision", metavar="REV", help="the failed revision to resolve")
    down = commands.add_parser("downgrade", parents=[shared],
                               help="revert to an earlier revision (needs --confirm)")
    down.add_argument("--target-revision", required=True, metavar="REV")
    return parser


def event_from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    operation = args.command.replace("-", "_")
    parameters: dict[str, Any] = {}
    if args.command in ("status", "run-migrations", "downgrade"):
        parameters["target_revision"] = args.target_revision
    if args.command == "run-migrations":
        parameters.update(dry_run=args.dry_run, fix_history=args.fix_history,
                          allow_destructive=args.allow_destructive)
        if args.baseline:
            parameters["baseline"] = args.baseline
    if args.command == "history":
        parameters["limit"] = args.limit
    if args.command == "repair":
        parameters["realign_checksums"] = args.realign_checksums
        if args.resolve:
            parameters["resolve"] = args.resolve
        if args.revision:
            parameters["revision"] = args.revision
    return {
        "admin_operation": operation,
        "parameters": parameters,
        "confirm": getattr(args, "confirm", False),
    }


def exit_status(answer: dict[str, object]) -> int:
    if answer.get("ok"):
        return EXIT_DONE
    return EXIT_USAGE if ERROR_CODES.get(str(answer.get("error")), False) else EXIT_REFUSED


def render(answer: dict[str, object]) -> str:
    """The answer for a person: the message, the revisions, then what was done or would be."""
    lines = [str(answer["message"])]
    if answer.get("state"):
        lines.append(f"  state:   {answer['state']}")
        lines.append(f"  current: {', '.join(_items(answer.get('current'))) or 'base'}")
        lines.append(f"  target:  {', '.join(_items(answer.get('target')))}")
    applied = answer.get("applied")
    pending = _items(answer.get("pending"))
    if pending and not applied:
        lines.append(f"  pending: {len(pending)}")
        lines.extend(f"    {revision}" for revision in pending)
    if isinstance(applied, list):
        lines.extend(
            f"  {step['direction']}d {step['revision']} in {step['seconds']:.2f} s"
            for step in applied
        )
    sql = answer.get("sql")
    if isinstance(sql, dict):
        lines.extend(f"\n-- SQL of revision {rev}\n{text}" for rev, text in sql.items())
    lines.extend(f"  note: {note}" for note in _items(answer.get("notes")))
    baseline = answer.get("baseline")
    if isinstance(baseline, dict):
        lines.append(f"  baseline: {baseline['summary']}")
        lines.extend(f"    {difference}" for difference in baseline["differences"])
    findings = answer.get("findings")
    if isinstance(findings, list):
        lines.extend(
            f"  gate: {f['revision']} {f['kind']} {f['rule']}: {f['message']}\n"
            f"        {f['statement']}"
            for f in findings
        )
    history = answer.get("history")
    if isinstance(history, list) and history:
        lines.append("  recent actions:")
        lines.extend(
            f"    {row['started_at']} {row['actor']:<12} {row['action']:<9} "
            f"{row['revision'] or '-':<12} {row['outcome']}"
            f"{' (resolved)' if row['resolved'] else ''}"
            f"{': ' + str(row['detail']) if row['detail'] else ''}"
            for row in history
        )
    return "\n".join(lines)


def _items(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s - %(message)s",
                        stream=sys.stderr)
    event = event_from_arguments(args)
    as_json = getattr(args, "json", False)
    if OPERATIONS[event["admin_operation"]].changes_database(event["parameters"]) and not (
        event["confirm"]
    ):
        hint = " (or preview it with --dry-run)" if args.command == "run-migrations" else ""
        answer = error_answer(
            event["admin_operation"], "confirmation_required",
            f"{args.command} changes the database: add --confirm{hint}",
        )
        return finish(answer, as_json, usage=True)
    try:
        environment = dict(os.environ)
        if getattr(args, "stage", None):
            environment["STAGE"] = args.stage
        settings = EngineSettings.from_environment(
            environment, database_url=getattr(args, "database_url", None)
        )
    except (SettingsError, DatabaseUrlError) as error:
        answer = error_answer(event["admin_operation"], "settings_error", str(error))
        return finish(answer, as_json, usage=True)
    engine = MigrationEngine(settings)
    try:
        answer = answer_admin_event(engine, event)
    finally:
        engine.close()
    return finish(answer, as_json)


def finish(answer: dict[str, object], as_json: bool, *, usage: bool = False) -> int:
    status = EXIT_USAGE if usage else exit_status(answer)
    if as_json:
        print(json.dumps(answer, indent=2, default=str))
    elif status == EXIT_DONE:
        print(render(answer))
    if status != EXIT_DONE:
        print(f"remote_admin.py: {answer['message']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
