#!/usr/bin/env python3
"""Time the migration Lambda's cold import and a no-change Update against a database at head.

    python benchmarks/no_change_update.py [--repeat N] [--import-repeat N] [--output FILE]

Cold import: ``python -X importtime -c "import migration_resource.handler"`` in a fresh
interpreter, ``--import-repeat`` times after a warm-up, taking the cumulative microseconds of
the ``migration_resource.handler`` line; ``import sqlalchemy`` is measured alike as the
in-run baseline, and the driver's import after the handler (``import psycopg2.extras``, which
imports psycopg2, for ``migration_resource.dsn.DRIVER``: SQLAlchemy's dialect imports it only
at the first ``create_engine``, so the handler's import does not include it). The biggest
contributors are the top-level packages the handler's import pulls in, ranked by the
cumulative time of their first import.

No-change Update: a real PostgreSQL database brought to head by a Create through the
handler, the moto server (RDS instance, IAM role, Lambda function, CloudFormation stack) and
an HTTPS recorder as the ResponseURL, set up as ``tests/migration_resource/test_handler.py``
does. Then
``handler(update_event, context)`` is timed end to end, PUT of the answer included, for an
Update whose properties changed only in ``MigrationsHash``:

- warm container: the crhelper object (``handler._resource``) kept between invocations;
- new container: ``handler._resource`` reset before each invocation, in this process (the
  Python modules, boto3's default session and the logging setup stay);
- new process: a fresh interpreter imports the handler and answers two Updates; its import
  and both invocations are timed inside it;
- the application's new process: a fresh interpreter imports ``sample_app.handler`` and
  answers two ``GET /tasks`` (AUTO_MIGRATE=true, as dev: its first request checks the schema,
  which is at head, then serves);
- the AWS SDK alone: a fresh interpreter imports boto3 and builds a CloudFormation client,
  what a no-change Update needs for its one AWS call (is the stack rolling back?).

The new-process cases are taken round-robin, one round each, with ``import sqlalchemy``
timed the same way (wall time in a fresh interpreter) as a second in-run baseline: the time
to the first answer is reported against both it and the ``-X importtime`` figure.

The baseline, measured in the same run, is the engine's no-change path on the same
database: a fresh ``MigrationEngine`` and ``migrate(target_heads=(head,))``. The in-process
cases are taken round-robin, ``--repeat`` times after 2 warm-ups. The server at DATABASE_URL
is used when set (one database is created and dropped there); otherwise a throwaway server is
started and stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alembic
import boto3
import sqlalchemy as sa
from report import publish  # benchmarks/report.py, beside this script

from localdev.aws_records import ensure_database_record, ensure_function_record
from localdev.https_recorder import HttpsRecorder
from localdev.moto_server import MotoServer
from localdev.postgres import database_server, free_port
from migration_resource import handler as handler_module
from migration_resource.dsn import DRIVER, normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.revisions import RevisionCatalogue
from migration_resource.settings import EngineSettings
from migration_resource.states import DatabaseState

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "alembic"
HANDLER_MODULE = "migration_resource.handler"
WARMUPS = 2
DEFAULT_REPEAT = 20
IMPORT_WARMUPS = 1
DEFAULT_IMPORT_REPEAT = 7
TOP_CONTRIBUTORS = 5
REGION = "us-east-1"
FUNCTION = "migration-function"
TEMPLATE = json.dumps({
    "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
    "Outputs": {"MigrationFunctionName": {"Value": FUNCTION}},
})

ENGINE = "engine only: migrate(target_heads), fresh engine"
WARM = "handler Update, warm container"
NEW_CONTAINER = "handler Update, new container (_resource reset)"
IN_PROCESS = (ENGINE, WARM, NEW_CONTAINER)
PROCESS_IMPORT = "new process: import migration_resource.handler"
PROCESS_FIRST = "new process: 1st Update"
PROCESS_SECOND = "new process: 2nd Update"
PROCESS_TOTAL = "new process: import + 1st Update"
APP_IMPORT = "application, new process: import sample_app.handler"
APP_FIRST = "application, new process: 1st request (GET /tasks)"
APP_SECOND = "application, new process: 2nd request"
APP_TOTAL = "application, new process: import + 1st request"
BASELINE_WALL = "new process: import sqlalchemy (no -X importtime)"
SDK = "new process: import boto3 + a CloudFormation client"
COLD_TOTALS = (PROCESS_TOTAL, APP_TOTAL, SDK)
# Loaded by a first answer only if it really needed them; the report says which were.
WATCHED_MODULES = ("alembic", "mako", "pglast", "crhelper", "boto3", "sqlalchemy.orm")
APP_EVENT = {"version": "2.0", "rawPath": "/tasks",
             "requestContext": {"http": {"method": "GET", "path": "/tasks"}}}

# Runs in a fresh interpreter: nothing is imported before the handler is.
CHILD = """
import json, sys, time
started = time.perf_counter()
import {module} as entry
imported = time.perf_counter()

class Context:
    function_name = "migration-function"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:migration-function"

    def __init__(self, request_id):
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self):
        return 900_000

times, answers = [], []
for number, event in enumerate(json.loads(sys.argv[2])):
    context = Context(f"child-{{number}}")
    begun = time.perf_counter()
    answer = entry.handler(event, context)
    times.append(time.perf_counter() - begun)
    answers.append(answer.get("statusCode") if isinstance(answer, dict) else None)
with open(sys.argv[1], "w") as out:
    json.dump({{"import": imported - started, "updates": times, "answers": answers,
               "modules": sorted(sys.modules)}}, out)
"""
CHILD_UPDATES = 2
# The in-run baseline as wall time, and the AWS SDK a no-change Update needs for its one
# call (DescribeStacks: is the stack rolling back?), each in a fresh interpreter.
TIMED_CHILD = """
import json, sys, time
started = time.perf_counter()
{code}
with open(sys.argv[1], "w") as out:
    json.dump({{"seconds": time.perf_counter() - started}}, out)
"""
BASELINE_CODE = "import sqlalchemy"
SDK_CODE = "import boto3\nboto3.client('cloudformation')"


@dataclass(frozen=True)
class Samples:
    name: str
    values_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values_ms)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.values_ms, n=10, method="inclusive")[8]


# -- cold import ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportLine:
    self_us: int
    cumulative_us: int
    depth: int
    name: str


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[ImportLine]:
    lines = []
    for text in stderr.splitlines():
        match = _IMPORT_LINE.match(text)
        if match:
            lines.append(ImportLine(int(match[1]), int(match[2]), len(match[3]) // 2, match[4]))
    return lines


def import_subtree(lines: list[ImportLine], module: str) -> list[ImportLine]:
    """The top-level import of ``module`` and everything it imported first (post-order);
    empty when the module was not imported at the top level (already imported before)."""
    for index, line in enumerate(lines):
        if line.depth == 0 and line.name == module:
            start = index
            while start > 0 and lines[start - 1].depth > 0:
                start -= 1
            return lines[start:index + 1]
    return []


def package_times(subtree: list[ImportLine]) -> dict[str, tuple[int, int]]:
    """Per top-level package below the root: (cumulative of its entry imports, own self time).

    An entry import is a line of the package whose importer belongs to another package: its
    cumulative time includes whatever it imported first, of any package.
    """
    result: dict[str, tuple[int, int]] = {}
    root = subtree[-1]
    for index, line in enumerate(subtree[:-1]):
        package = line.name.split(".")[0]
        # post-order: the importer is the next line one level up
        parent = next(p for p in subtree[index + 1:] if p.depth < line.depth)
        entry = parent is root or parent.name.split(".")[0] != package
        cumulative, own = result.get(package, (0, 0))
        result[package] = (cumulative + (line.cumulative_us if entry else 0),
                           own + line.self_us)
    return result


@dataclass(frozen=True)
class ImportCase:
    label: str
    code: str
    module: str  # the top-level import whose cumulative time is measured


HANDLER_IMPORT = ImportCase(f"`import {HANDLER_MODULE}`", f"import {HANDLER_MODULE}",
                            HANDLER_MODULE)
# The driver a plain postgresql:// URL selects (psycopg2), imported as SQLAlchemy's dialect
# does at the first create_engine: psycopg2.extras, which imports psycopg2 (one top-level line).
DRIVER_NAME = DRIVER.partition("+")[2]
DRIVER_MODULE = {"psycopg2": "psycopg2.extras"}.get(DRIVER_NAME, DRIVER_NAME)
DRIVER_IMPORT = ImportCase(
    f"`import {DRIVER_MODULE}` after the handler (SQLAlchemy's first `create_engine` imports "
    "it)", f"import {HANDLER_MODULE}; import {DRIVER_MODULE}", DRIVER_MODULE)
BASELINE_IMPORT = ImportCase("`import sqlalchemy` (baseline)", "import sqlalchemy", "sqlalchemy")
IMPORT_CASES = (HANDLER_IMPORT, DRIVER_IMPORT, BASELINE_IMPORT)


@dataclass(frozen=True)
class ImportRun:
    cumulative_us: int
    wall_s: float
    packages: dict[str, tuple[int, int]]


def import_once(case: ImportCase) -> ImportRun:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", case.code],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{case.code} failed:\n{done.stderr[-2000:]}")
    subtree = import_subtree(parse_importtime(done.stderr), case.module)
    if not subtree:
        return ImportRun(0, wall, {})
    return ImportRun(subtree[-1].cumulative_us, wall, package_times(subtree))


def measure_imports(repeat: int) -> dict[ImportCase, list[ImportRun]]:
    runs: dict[ImportCase, list[ImportRun]] = {case: [] for case in IMPORT_CASES}
    # Round-robin, as for the Updates: drift on the machine spreads over every case.
    for round_number in range(IMPORT_WARMUPS + repeat):
        for case, found in runs.items():
            run = import_once(case)
            if round_number >= IMPORT_WARMUPS:
                found.append(run)
    return runs


# -- the deploy's surroundings ---------------------------------------------------------------------
@dataclass
class LambdaContext:
    remaining_ms: int = 900_000
    function_name: str = FUNCTION
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Stack:
    """Plays CloudFormation: builds the events and reads the answers from the recorder."""

    recorder: HttpsRecorder
    stack_id: str
    properties: dict[str, str]

    def event(self, request_type: str, **changes: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}",
            "ResponseURL": self.recorder.url(f"/responses/{uuid.uuid4().hex}"),
            "StackId": self.stack_id,
            "RequestId": uuid.uuid4().hex,
            "LogicalResourceId": "DatabaseMigration",
            "ResourceType": "Custom::DatabaseMigration",
            "ResourceProperties": {**self.properties, **changes},
        }
        if request_type != "Create":
            event["PhysicalResourceId"] = "app-DatabaseMigration"
            event["OldResourceProperties"] = dict(self.properties)
        return event

    def no_change_update(self) -> dict[str, Any]:
        return self.event("Update", MigrationsHash=uuid.uuid4().hex)

    def check_answers(self, before: int, count: int, state: str, head: str) -> None:
        """Exactly ``count`` answers since ``before``, each SUCCESS in ``state`` at head."""
        answers = self.recorder.requests[before:]
        if len(answers) != count:
            raise RuntimeError(f"expected {count} answers, the recorder got {len(answers)}")
        for answer in answers:
            body = answer.body if isinstance(answer.body, dict) else {}
            data = body.get("Data", {})
            if (answer.status != 200 or body.get("Status") != "SUCCESS"
                    or data.get("State") != state or data.get("ToRevision") != head
                    or data.get("SnapshotId") != ""
                    or (state == "up_to_date" and data.get("Applied") != "0")):
                raise RuntimeError(f"unexpected answer: {body}")




@contextlib.contextmanager
def scratch_database(server_url: sa.URL) -> Iterator[sa.URL]:
    name = f"bench_update_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server_url.set(database=name)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextlib.contextmanager
def environment(values: dict[str, str], removed: Sequence[str]) -> Iterator[None]:
    saved = dict(os.environ)
    for name in removed:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def create_aws_resources(endpoint: str) -> str:
    """What the handler reaches in AWS, as the test fixture makes it; returns the stack id."""
    def client(name: str) -> Any:
        return boto3.client(name, endpoint_url=endpoint, region_name=REGION)

    ensure_database_record(client, instance="appdb")
    ensure_function_record(client, FUNCTION)
    stack = client("cloudformation").create_stack(StackName="app", TemplateBody=TEMPLATE)
    return str(stack["StackId"])


def manual_snapshots(endpoint: str) -> list[str]:
    rds = boto3.client("rds", endpoint_url=endpoint, region_name=REGION)
    found = rds.describe_db_snapshots(DBInstanceIdentifier="appdb", SnapshotType="manual")
    return [str(s["DBSnapshotIdentifier"]) for s in found["DBSnapshots"]]


# -- the no-change Update --------------------------------------------------------------------------
@dataclass
class UpdateRun:
    samples: list[Samples]
    head: str
    catalogue_loads: dict[str, int]
    snapshots: list[str]
    processes: ProcessRun


def run_updates(server_url: sa.URL, work: Path, repeat: int, child_repeat: int) -> UpdateRun:
    head = RevisionCatalogue.load(SCRIPTS).head
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(server_url))
        moto = stack.enter_context(MotoServer(port=free_port(), log_path=work / "moto.log"))
        recorder = stack.enter_context(HttpsRecorder())
        stack.enter_context(environment({
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "ALEMBIC_SCRIPT_LOCATION": str(SCRIPTS),
            "CFN_RESPONSE_CA_BUNDLE": str(recorder.ca_file),
            "POWERTOOLS_SERVICE_NAME": "db-migrations",
            "STAGE": "development",
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }, removed=("DATABASE_SECRET_ARN", "AWS_SESSION_TOKEN", "AWS_PROFILE")))
        cfn = Stack(recorder=recorder, stack_id=create_aws_resources(moto.endpoint),
                    properties={
                        "TargetRevision": head,
                        "SnapshotBeforeMigrate": "true",
                        "AllowDestructive": "false",
                        "Stage": "development",
                        "DbInstanceIdentifier": "appdb",
                    })
        # The Lambda writes its JSON logs and metrics to stdout; keep them out of the report.
        log = stack.enter_context((work / "handler-stdout.log").open("w"))
        stack.enter_context(contextlib.redirect_stdout(log))
        stack.callback(observability_reset)
        handler_module._resource = None
        stack.callback(setattr, handler_module, "_resource", None)
        before = len(recorder.requests)
        handler_module.handler(cfn.event("Create"), LambdaContext())
        cfn.check_answers(before, 1, "empty", head)
        print(f"Create brought the database to head {head}", file=sys.stderr)
        settings = EngineSettings(database_url=database_url, script_location=SCRIPTS)
        samples, loads = measure_in_process(cfn, settings, head, repeat)
        processes = measure_new_processes(cfn, work, head, child_repeat)
        return UpdateRun(samples=samples + processes.samples, head=head, catalogue_loads=loads,
                         snapshots=manual_snapshots(moto.endpoint), processes=processes)


def observability_reset() -> None:
    from migration_resource import observability  # noqa: PLC0415 - imported by the handler

    observability.reset()  # its handler writes to the log file about to be closed


def measure_in_process(
    cfn: Stack, settings: EngineSettings, head: str, repeat: int
) -> tuple[list[Samples], dict[str, int]]:
    timed: dict[str, list[float]] = {case: [] for case in IN_PROCESS}
    loads = dict.fromkeys(IN_PROCESS, 0)
    warm: Any = None  # the warm container's crhelper object, kept between its invocations

    def engine_only() -> float:
        gc.collect()
        started = time.perf_counter()
        engine = MigrationEngine(settings)
        try:
            outcome = engine.migrate(target_heads=(head,))
        finally:
            engine.close()
        elapsed = time.perf_counter() - started
        if outcome.classification.state is not DatabaseState.UP_TO_DATE or outcome.applied:
            raise RuntimeError(f"engine path: {outcome.classification.state}, {outcome.applied}")
        return elapsed

    def update(resource: Any) -> float:
        event, context = cfn.no_change_update(), LambdaContext()
        handler_module._resource = resource
        before = len(cfn.recorder.requests)
        gc.collect()
        started = time.perf_counter()
        handler_module.handler(event, context)
        elapsed = time.perf_counter() - started
        cfn.check_answers(before, 1, "up_to_date", head)
        return elapsed

    with mock.patch.object(RevisionCatalogue, "load", wraps=RevisionCatalogue.load) as load:
        # Round-robin over the cases, so drift on the machine spreads over all of them alike.
        for round_number in range(WARMUPS + repeat):
            for case in IN_PROCESS:
                calls = load.call_count
                if case == ENGINE:
                    elapsed = engine_only()
                elif case == WARM:
                    elapsed = update(warm)
                    warm = handler_module._resource
                else:
                    elapsed = update(None)
                if round_number >= WARMUPS:
                    timed[case].append(elapsed * 1000)
                    loads[case] += load.call_count - calls
    return [Samples(case, tuple(values)) for case, values in timed.items()], loads


@dataclass
class ProcessRun:
    samples: list[Samples]
    loaded: dict[str, list[str]]  # child -> WATCHED_MODULES loaded by its first answers
    ratios: list[float]  # per round: import + 1st Update / import sqlalchemy (wall)


def run_child(code: str, work: Path, *args: str, env: dict[str, str] | None = None
              ) -> dict[str, Any]:
    result_file = work / "child.json"
    done = subprocess.run(
        [sys.executable, "-c", code, str(result_file), *args],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        check=False, env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the new process failed:\n{done.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(result_file.read_text())
    return found


def measure_new_processes(cfn: Stack, work: Path, head: str, repeat: int) -> ProcessRun:
    """Round-robin per round: the baseline, the migration function's import and two
    Updates, the application's import and two requests, the SDK setup alone."""
    names = (PROCESS_IMPORT, PROCESS_FIRST, PROCESS_SECOND, PROCESS_TOTAL, APP_IMPORT,
             APP_FIRST, APP_SECOND, APP_TOTAL, BASELINE_WALL, SDK)
    timed: dict[str, list[float]] = {name: [] for name in names}
    loaded: dict[str, list[str]] = {}
    ratios: list[float] = []
    app_env = {"POWERTOOLS_SERVICE_NAME": "sample-app", "AUTO_MIGRATE": "true"}
    for round_number in range(IMPORT_WARMUPS + repeat):
        baseline = run_child(TIMED_CHILD.format(code=BASELINE_CODE), work)["seconds"]
        events = [cfn.no_change_update() for _ in range(CHILD_UPDATES)]
        before = len(cfn.recorder.requests)
        update = run_child(CHILD.format(module=HANDLER_MODULE), work, json.dumps(events))
        cfn.check_answers(before, CHILD_UPDATES, "up_to_date", head)
        app = run_child(CHILD.format(module="sample_app.handler"), work,
                        json.dumps([APP_EVENT] * CHILD_UPDATES), env=app_env)
        if app["answers"] != [200] * CHILD_UPDATES:
            raise RuntimeError(f"the application answered {app['answers']}")
        sdk = run_child(TIMED_CHILD.format(code=SDK_CODE), work)["seconds"]
        loaded = {name: [m for m in WATCHED_MODULES if m in found["modules"]]
                  for name, found in (("migration", update), ("application", app))}
        if round_number < IMPORT_WARMUPS:
            continue
        for name, seconds in (
            (PROCESS_IMPORT, update["import"]), (PROCESS_FIRST, update["updates"][0]),
            (PROCESS_SECOND, update["updates"][1]),
            (PROCESS_TOTAL, update["import"] + update["updates"][0]),
            (APP_IMPORT, app["import"]), (APP_FIRST, app["updates"][0]),
            (APP_SECOND, app["updates"][1]), (APP_TOTAL, app["import"] + app["updates"][0]),
            (BASELINE_WALL, baseline), (SDK, sdk),
        ):
            timed[name].append(float(seconds) * 1000)
        ratios.append((update["import"] + update["updates"][0]) / baseline)
    return ProcessRun(samples=[Samples(name, tuple(values)) for name, values in timed.items()],
                      loaded=loaded, ratios=ratios)


# -- the report ---------------------------------------------------------------------------------
def render(imports: dict[ImportCase, list[ImportRun]], updates: UpdateRun, repeat: int,
           import_repeat: int) -> str:
    lines = [machine_line(), ""]
    lines += render_imports(imports, import_repeat)
    lines += [""]
    lines += render_updates(updates, repeat, import_repeat)
    lines += [""]
    lines += render_cold_start(imports, updates)
    return "\n".join(lines)


def machine_line() -> str:
    from importlib.metadata import packages_distributions, version  # noqa: PLC0415

    driver = packages_distributions()[DRIVER_NAME][0]  # psycopg2 -> psycopg2-binary
    packages = ", ".join(f"{name} {version(name)}" for name in (
        driver, "boto3", "crhelper", "aws-lambda-powertools"))
    return (f"Python {platform.python_version()}, alembic {alembic.__version__}, "
            f"SQLAlchemy {sa.__version__}, {packages}; {os.cpu_count()} CPUs, "
            f"{platform.platform()}.")


def render_imports(imports: dict[ImportCase, list[ImportRun]], import_repeat: int) -> list[str]:
    handler_runs = imports[HANDLER_IMPORT]
    baseline = statistics.median(r.cumulative_us for r in imports[BASELINE_IMPORT]) / 1000
    lines = [
        f"Cold import, `python -X importtime -c CODE`: {IMPORT_WARMUPS} warm-up + "
        f"{import_repeat} runs, a fresh interpreter each; the cumulative time of the "
        "measured module's top-level line.",
        "",
        "| import | median ms | p90 ms | median / baseline | whole process, median ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, runs in imports.items():
        timed = Samples(case.label, tuple(r.cumulative_us / 1000 for r in runs))
        wall = statistics.median(r.wall_s for r in runs) * 1000
        lines.append(f"| {case.label} | {timed.median:.0f} | {timed.p90:.0f} | "
                     f"{timed.median / baseline:.2f}x | {wall:.0f} |")
    handler_total = statistics.median(r.cumulative_us for r in handler_runs) / 1000
    packages = {name for run in handler_runs for name in run.packages}
    medians = {
        name: (statistics.median(run.packages.get(name, (0, 0))[0] for run in handler_runs)
               / 1000,
               statistics.median(run.packages.get(name, (0, 0))[1] for run in handler_runs)
               / 1000)
        for name in packages
    }
    own_package = HANDLER_MODULE.split(".", maxsplit=1)[0]
    ranked = sorted((name for name in medians if name != own_package),
                    key=lambda name: medians[name][0], reverse=True)
    lines += [
        "",
        f"Biggest contributors to `import {HANDLER_MODULE}` (medians over the runs):",
        "",
        "| package | cumulative ms, first import | own modules ms | own / handler import |",
        "|---|---:|---:|---:|",
    ]
    for name in ranked[:TOP_CONTRIBUTORS]:
        cumulative, own = medians[name]
        lines.append(f"| {name} | {cumulative:.0f} | {own:.0f} | {own / handler_total:.0%} |")
    mine = medians.get(own_package, (0.0, 0.0))[1]
    lines.append(f"| ({own_package}'s own modules) | | {mine:.0f} | "
                 f"{mine / handler_total:.0%} |")
    return lines


def render_updates(updates: UpdateRun, repeat: int, process_repeat: int) -> list[str]:
    by_name = {s.name: s for s in updates.samples}
    baseline = by_name[ENGINE].median
    lines = [
        f"No-change Update (only `MigrationsHash` changed, TargetRevision = head "
        f"{updates.head}): in-process cases {WARMUPS} warm-up + {repeat} runs round-robin; "
        f"new-process cases {IMPORT_WARMUPS} warm-up + {process_repeat} processes.",
        "",
        "| path | runs | median ms | p90 ms | median / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for sample in updates.samples:
        label = sample.name + (" (baseline)" if sample.name == ENGINE else "")
        lines.append(f"| {label} | {len(sample.values_ms)} | {sample.median:.1f} | "
                     f"{sample.p90:.1f} | {sample.median / baseline:.2f}x |")
    lines += ["", f"Baseline: the engine's no-change path, median {baseline:.1f} ms.", ""]
    loads = ", ".join(f"{case}: {count}" for case, count in updates.catalogue_loads.items())
    lines.append(f"- revision scripts loaded (RevisionCatalogue.load) during the timed "
                 f"in-process runs: {loads}")
    lines.append(f"- manual RDS snapshots taken: {len(updates.snapshots)}")
    warm, fresh = by_name[WARM].median, by_name[NEW_CONTAINER].median
    lines.append(f"- new container / warm container: {fresh / warm:.2f}x ({fresh - warm:+.1f} ms: "
                 "a new crhelper object, which builds no client, and a new CloudFormation "
                 "client for the rollback check)")
    for child, modules in updates.processes.loaded.items():
        lines.append(f"- loaded by the {child} function's first answers, of "
                     f"{', '.join(WATCHED_MODULES)}: {', '.join(modules) or 'none'}")
    return lines


def render_cold_start(imports: dict[ImportCase, list[ImportRun]], updates: UpdateRun) -> list[str]:
    """A new process's time to its first answer against `import sqlalchemy`, in this run."""
    by_name = {s.name: s for s in updates.samples}
    importtime = statistics.median(r.cumulative_us for r in imports[BASELINE_IMPORT]) / 1000
    wall = by_name[BASELINE_WALL].median
    lines = [
        "Time to the first answer of a new process, against `import sqlalchemy` measured in "
        f"this run: {importtime:.0f} ms under `-X importtime` (the cold-import table; the "
        f"baseline issue 15 states its target against), {wall:.0f} ms as wall time in a fresh "
        "process (timed like the rows here, round-robin with them).",
        "",
        "| new process | median ms | p90 ms | / `import sqlalchemy` (importtime) "
        "| / `import sqlalchemy` (wall) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in (*COLD_TOTALS, BASELINE_WALL):
        sample = by_name[name]
        lines.append(f"| {name} | {sample.median:.0f} | {sample.p90:.0f} | "
                     f"{sample.median / importtime:.2f}x | {sample.median / wall:.2f}x |")
    ratios = updates.processes.ratios
    lines += ["", f"- import + 1st Update / `import sqlalchemy` (wall), per round: median "
              f"{statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max "
              f"{max(ratios):.2f}x"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed in-process Updates per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--import-repeat", type=int, default=DEFAULT_IMPORT_REPEAT,
                        help="fresh interpreters per import and for the new-process Update "
                             f"(default {DEFAULT_IMPORT_REPEAT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 2 or args.import_repeat < 2:
        parser.error("--repeat and --import-repeat must be at least 2")

    started = time.perf_counter()
    print("Timing cold imports...", file=sys.stderr)
    imports = measure_imports(args.import_repeat)
    work = Path(tempfile.mkdtemp(prefix="update-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    try:
        with database_server(work) as url:
            server_url = normalize_url(url)
            updates = run_updates(server_url, work, args.repeat, args.import_repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(imports, updates, args.repeat, args.import_repeat)
    return publish(report, args.output, started)


if __name__ == "__main__":
    sys.exit(main())
