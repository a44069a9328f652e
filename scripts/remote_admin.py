#!/usr/bin/env python3
"""Operate the database migrations: status, dry run, migrate, downgrade.

    python scripts/remote_admin.py [--database-url URL | --function-name NAME | --stack-name NAME]
                                   [--json] [--confirm] COMMAND ...

Commands:
    status [--target-revision REV]
    run-migrations [--dry-run] [--target-revision REV] [--fix-history | --baseline REV]
                   [--allow-destructive]
    history [--limit N]
    repair [--realign-checksums] [--resolve rolled-back|applied --revision REV]
    downgrade --target-revision REV          (drops schema; needs --confirm)

Where the admin event goes: `--database-url` (default $DATABASE_URL) answers it in this
process; `--function-name` invokes the deployed migration Lambda with it; `--stack-name` finds
that function in the stack's `MigrationFunctionName` output. Region, credentials and endpoint
come from the usual AWS environment (AWS_ENDPOINT_URL_LAMBDA / AWS_ENDPOINT_URL for emulators).
Both ways print the same answer the same way.

Exit status: 0 done, 1 refused or failed (reason on stderr), 2 usage error (including a
change requested without --confirm). A stack, stack output or function that does not exist
is a usage error (2: the command line names something that is not there, and nothing was
sent); AWS refusing or failing the call, or the function failing, is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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
STACK_OUTPUT = "MigrationFunctionName"
# Lambda's longest timeout: a migration may take all of it before the answer comes.
INVOKE_READ_TIMEOUT_SECONDS = 900
TARGET_FLAGS = ("database_url", "function_name", "stack_name")


def shared_arguments() -> argparse.ArgumentParser:
    """The flags every command takes (also fix_rds_migration.py's): where to send, how to show.

    Defaults are suppressed so that a flag given before the command is not reset by the
    subcommand's parser: operators type global flags on either side.
    """
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the answer as JSON")
    shared.add_argument("--confirm", action="store_true", default=argparse.SUPPRESS,
                        help="allow a command that changes the database")
    shared.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="answer here, on this PostgreSQL URL (default: $DATABASE_URL)")
    shared.add_argument("--function-name", default=argparse.SUPPRESS, metavar="NAME",
                        help="send the command to this migration Lambda")
    shared.add_argument("--stack-name", default=argparse.SUPPRESS, metavar="NAME",
                        help=f"send it to the Lambda in this stack's {STACK_OUTPUT} output")
    shared.add_argument("--stage", choices=("development", "production"),
                        default=argparse.SUPPRESS,
                        help="safety rules to apply with --database-url (default: $STAGE or "
                             "development; a Lambda uses its deployed stage)")
    return shared


@dataclass(frozen=True)
class Target:
    """Where an admin event is answered: here (database_url, else $DATABASE_URL) or a Lambda."""

    database_url: str | None = None
    function_name: str | None = None
    stack_name: str | None = None
    stage: str | None = None


def target_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Target:
    given = [flag for flag in TARGET_FLAGS if getattr(args, flag, None) is not None]
    if len(given) > 1:
        parser.error("use only one of --database-url, --function-name, --stack-name "
                     f"(got {', '.join('--' + g.replace('_', '-') for g in given)})")
    target = Target(**{flag: getattr(args, flag, None) for flag in TARGET_FLAGS},
                    stage=getattr(args, "stage", None))
    if target.stage and (target.function_name or target.stack_name):
        parser.error("--stage applies to --database-url only; the Lambda uses the stage "
                     "it was deployed with")
    return target


class Undelivered(Exception):
    """The event got no answer: the target could not be found, reached or run.

    `usage` marks a command line naming something that is not there (exit 2).
    """

    def __init__(self, code: str, message: str, *, usage: bool) -> None:
        super().__init__(message)
        self.code = code
        self.usage = usage

    def answer(self, operation: object) -> dict[str, object]:
        return error_answer(operation, self.code, str(self))


def answer_event(event: Mapping[str, Any], target: Target) -> dict[str, object]:
    """The admin answer to `event` from the target; raises Undelivered."""
    if target.function_name or target.stack_name:
        function_name = target.function_name or function_from_stack(str(target.stack_name))
        return invoke_function(function_name, event)
    return answer_locally(event, target)


def answer_locally(event: Mapping[str, Any], target: Target) -> dict[str, object]:
    try:
        environment = dict(os.environ)
        if target.stage:
            environment["STAGE"] = target.stage
        settings = EngineSettings.from_environment(environment,
                                                   database_url=target.database_url)
    except (SettingsError, DatabaseUrlError) as error:
        raise Undelivered("settings_error", str(error), usage=True) from error
    engine = MigrationEngine(settings)
    try:
        return answer_admin_event(engine, event)
    finally:
        engine.close()


def invoke_function(function_name: str, event: Mapping[str, Any]) -> dict[str, object]:
    """Invoke the migration Lambda with the event and wait for its answer.

    No retries: botocore retries a call whose answer it did not get (a timeout, a dropped
    connection, a 5xx), and a second invocation would run the migration again while, or
    after, the first one ran it. One attempt, a read timeout as long as the function's
    longest run, and the operator decides.
    """
    from botocore.config import Config  # noqa: PLC0415 - only the Lambda path needs botocore

    operation = event.get("admin_operation")
    config = Config(read_timeout=INVOKE_READ_TIMEOUT_SECONDS, connect_timeout=10,
                    retries={"max_attempts": 0})
    # Progress is a start line and a done line, whatever stderr is: the engine's own
    # progress goes to the function's logs, and a ticking thread would buy little.
    print(f"Invoking {function_name} ({operation})...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with _aws_errors(f"Invoking {function_name}", not_found=(
        "ResourceNotFoundException", f"No Lambda function {function_name!r}")):
        response = _client("lambda", config).invoke(
            FunctionName=function_name, InvocationType="RequestResponse",
            Payload=json.dumps(event).encode("utf-8"),
        )
        payload = response["Payload"].read()
    print(f"{function_name} answered in {time.monotonic() - started:.1f} s", file=sys.stderr,
          flush=True)
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if response.get("FunctionError"):
        error = answer if isinstance(answer, dict) else {}
        raise Undelivered("error", (
            f"{function_name} failed: {error.get('errorType', 'error')}: "
            f"{error.get('errorMessage', payload[:200].decode('utf-8', 'replace'))} "
            "(its CloudWatch logs have the details)"), usage=False)
    if not (isinstance(answer, dict) and "ok" in answer and "message" in answer):
        raise Undelivered("error", (
            f"{function_name} did not answer with an admin answer (is it the migration "
            f"function?): {payload[:200].decode('utf-8', 'replace')}"), usage=False)
    return answer


def function_from_stack(stack_name: str) -> str:
    """The migration function's name, from the stack's MigrationFunctionName output."""
    with _aws_errors(f"Reading stack {stack_name}", not_found=(
        "ValidationError", f"Stack {stack_name!r} does not exist")):
        stacks = _client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if STACK_OUTPUT not in outputs:
        raise Undelivered("settings_error", (
            f"Stack {stack_name!r} has no output {STACK_OUTPUT!r} (its outputs: "
            f"{', '.join(sorted(outputs)) or 'none'}); name the migration stack, or the "
            "function with --function-name"), usage=True)
    return str(outputs[STACK_OUTPUT])


def _client(service: str, config: Any = None) -> Any:
    import boto3  # noqa: PLC0415 - the local mode does without boto3's import time

    return boto3.client(service, config=config)


@contextmanager
def _aws_errors(doing: str, *, not_found: tuple[str, str]) -> Iterator[None]:
    """Turn botocore's exceptions into Undelivered, with the operator's next step.

    `not_found` is the error code meaning "the name you gave does not exist" and the
    message to say so.
    """
    from botocore.exceptions import (  # noqa: PLC0415 - see _client
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )

    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    not_found_code, not_found_message = not_found
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        message = error.response.get("Error", {}).get("Message", "")
        # CloudFormation says "does not exist" with the generic ValidationError code.
        if code == not_found_code and (code != "ValidationError" or "does not exist" in message):
            raise Undelivered("settings_error", (
                f"{not_found_message} in region {region}; check the name and "
                "AWS_DEFAULT_REGION"), usage=True) from error
        raise Undelivered("error", f"{doing} failed: {error}", usage=False) from error
    except (NoRegionError, NoCredentialsError) as error:
        raise Undelivered("settings_error", (
            f"{doing}: {error} (set AWS_DEFAULT_REGION and AWS credentials, e.g. "
            "AWS_PROFILE)"), usage=True) from error
    except ReadTimeoutError as error:
        raise Undelivered("error", (
            f"{doing}: no answer within {INVOKE_READ_TIMEOUT_SECONDS} s; it may still be "
            "running: read its logs before trying again"), usage=False) from error
    except BotoCoreError as error:
        raise Undelivered("error", f"{doing} failed: {error}", usage=False) from error


def build_parser() -> argparse.ArgumentParser:
    shared = shared_arguments()
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


SOURCES = {
    "rendered": "rendered offline",
    "captured": "captured in a trial run in a scratch database",
    "not_previewed": "not previewed",
}


def _planned(step: dict[str, str]) -> str:
    """One revision of a dry run's plan: where its SQL came from, then the SQL."""
    source = SOURCES.get(step["source"], step["source"])
    text = f"\n-- SQL of revision {step['revision']} ({step['file']}, {source})"
    if step.get("note"):
        text += f"\n-- {step['note']}"
    return text + (f"\n{step['sql']}" if step["sql"] else "")


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
    plan, sql = answer.get("plan"), answer.get("sql")
    if isinstance(plan, list):
        lines.extend(_planned(step) for step in plan)
    elif isinstance(sql, dict):
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
    target = target_from_arguments(parser, args)
    configure_logging()
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
        answer = answer_event(event, target)
    except Undelivered as error:
        return finish(error.answer(event["admin_operation"]), as_json, usage=error.usage)
    return finish(answer, as_json)


# Where the full log of a local run goes, tracebacks and SQL parameters included: a revision's
# own error is shown on the terminal as one line, its traceback is for this file, in the
# user's own state folder (REMOTE_ADMIN_LOG moves it).
LOG_FOLDER = "db-migrations"
LOG_NAME = "remote_admin.log"


def default_log_file(env: Mapping[str, str]) -> Path:
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / LOG_FOLDER / LOG_NAME


def open_private_log(path: Path) -> tuple[TextIO | None, str]:
    """The log file opened for appending, readable by its owner alone; or None and why not.

    It is used only when it is a regular file of ours (never a link, never a file someone
    else created) in a folder only we can write to; a new one is made with mode 0600, and
    one of ours readable by others is made private first.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = path.parent.lstat()
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.getuid() or (
                folder.st_mode & 0o022):
            return None, f"{path.parent} is not a folder only you can write to"
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
    except OSError as error:
        return None, f"{path}: {error.strerror or error}"
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(descriptor)
        return None, f"{path} is not a file of yours"
    if info.st_mode & 0o077:
        os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "a", encoding="utf-8"), ""


class TerminalFormatter(logging.Formatter):
    """One line per record: a traceback is named, not shown (it is in the log file)."""

    def __init__(self, where: str) -> None:
        super().__init__("%(levelname)s - %(message)s")
        self.where = where

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return super().format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return f"{super().format(record)} ({self.where})"
        finally:
            record.exc_info, record.exc_text = saved


def configure_logging(env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    log_file = Path(env.get("REMOTE_ADMIN_LOG") or default_log_file(env))
    stream, why_not = open_private_log(log_file)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(TerminalFormatter(
        f"traceback in {log_file}" if stream else f"no log file: {why_not}"))
    handlers: list[logging.Handler] = [terminal]
    if stream is not None:
        full = logging.StreamHandler(stream)
        full.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
        handlers.append(full)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    if stream is None:
        # an unusable log file must not stop an operator's command, nor go unsaid
        logging.getLogger(__name__).warning("Not writing the log file: %s", why_not)
    # botocore's INFO lines (where it found credentials and endpoints) are noise here
    logging.getLogger("botocore").setLevel(logging.WARNING)


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
