#!/usr/bin/env python3
"""Operate the database migrations: status, dry run, migrate, downgrade.

    python scripts/remote_admin.py [--database-url URL] [--json] [--confirm] COMMAND ...

Commands:
    status [--target-revision REV]
    run-migrations [--dry-run] [--target-revision REV]
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
    down = commands.add_parser("downgrade", parents=[shared],
                               help="revert to an earlier revision (needs --confirm)")
    down.add_argument("--target-revision", required=True, metavar="REV")
    return parser


def event_from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    parameters: dict[str, Any] = {"target_revision": args.target_revision}
    operation = {"status": "status", "run-migrations": "run_migrations",
                 "downgrade": "downgrade"}[args.command]
    if args.command == "run-migrations":
        parameters["dry_run"] = args.dry_run
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
        settings = EngineSettings.from_environment(
            os.environ, database_url=getattr(args, "database_url", None)
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
