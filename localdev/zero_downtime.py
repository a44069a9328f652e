"""`make deploy-local SCENARIO=zero-downtime`: expand now, contract one release later, offline.

    python -m localdev.zero_downtime [--local-dir .local/zero-downtime] [--keep]

Four releases of the sample application deploy one after the other to the production stage
(`prod`: a snapshot before every migration, destructive revisions refused unless deferred),
each a full local deploy (localdev.deploy) of its own checkout (localdev.releases), while the
deployed sample application answers requests the whole time:

1. release N-1 (its code writes and reads users.name) is created;
2. release N stops using users.name and brings two revisions: users.name nullable (expand)
   and its drop (contract). Its deploy applies the first and defers the drop;
3. release N+1 brings a unique index on display names, which the data does not allow. Its
   deploy runs the drop first, after a snapshot, then fails on the index; the stack rolls
   back and release N's code, which no longer uses the column, serves on;
4. release N+1 again, with a plain index instead: it applies, and N+1's code goes live.

The requests go to the application's function through the local Lambda Invoke API, in a
loop: create a user (the table every revision touches), then count the tasks. The scenario
prints each deploy as `make deploy-local` does, what each step was expected to leave, and at
the end how long the application was unable to serve (the time from a failed request to the
next one that succeeded) and whether every user it created is still there. It exits 0 only
when every expectation held and no request failed.

It has its own folder, PostgreSQL server and local AWS endpoint (free ports), removed at the
end unless --keep: the developer's `make deploy-local` environment is not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from localdev import deploy as local_deploy
from localdev.local_aws import LocalAwsError
from localdev.local_cloudformation import LocalClients
from localdev.postgres import PostgresUnavailable, free_port
from localdev.releases import Release, ReleaseError, RevisionFile, checkout, synthesize
from localdev.synthesized import APP_FUNCTION_OUTPUT, DeployError, read_synthesized

REPO_ROOT = Path(__file__).resolve().parents[1]
FILES = Path(__file__).resolve().parent / "scenario_files"
STAGE = "prod"
STACK = "DbMigrations-prod-Application"
APP_FUNCTION = local_deploy.application_function_name(STACK, APP_FUNCTION_OUTPUT)
# The sample history's revisions the scenario's releases end at, and the two it adds.
INDEX_EMAIL_DOMAIN = "25d7c6ee3024"  # the last revision release N-1 knows
USERS_NAME_NULLABLE = "3e9a7c1d5b20"  # release N: expand
DROP_USERS_NAME = "6f1c2a9b7d3e"  # release N: contract, its last revision
UNIQUE_DISPLAY_NAMES = "a41c7e9d2b58"  # release N+1, first try: fails on the data
INDEX_DISPLAY_NAMES = "c2d8f0b3e671"  # release N+1, as it shipped
DISPLAY_NAME = "Ada"  # every user the traffic creates has it: display names are not unique
# After a deploy, this many requests must have started before the next step: the code that
# went live (or stayed) answered.
REQUESTS_AFTER_EACH_DEPLOY = 2
WAIT_FOR_REQUESTS_SECONDS = 120
PAUSE_BETWEEN_REQUESTS_SECONDS = 0.05
CLIENTS = 2
INVOKE_TIMEOUT_SECONDS = 60


# -- the releases --------------------------------------------------------------------------
RELEASES = (
    Release("N-1", folder="n-minus-1", head=INDEX_EMAIL_DOMAIN,
            patch=FILES / "previous_release.patch"),
    Release("N", folder="n", head=DROP_USERS_NAME),
    Release("N+1", folder="n-plus-1-first-try", head=DROP_USERS_NAME, revisions=(
        RevisionFile(FILES / "unique_display_names.py",
                     f"20261206_0900_{UNIQUE_DISPLAY_NAMES}_unique_display_names.py"),)),
    Release("N+1", folder="n-plus-1", head=DROP_USERS_NAME, revisions=(
        RevisionFile(FILES / "index_display_names.py",
                     f"20261206_1100_{INDEX_DISPLAY_NAMES}_index_display_names.py"),)),
)


# -- the application's traffic ---------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic()
    seconds: float
    request: str  # "POST /users"
    status: int  # the HTTP status, 0 when the function itself failed
    release: str  # X-App-Release: which release's code answered
    note: str = ""

    @property
    def served(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Traffic:
    """Requests to the deployed application's function: `clients` threads, each sending one
    request after the other (Lambda runs concurrent invocations side by side)."""

    endpoint: str
    function: str = APP_FUNCTION
    clients: int = CLIENTS
    answers: list[Answer] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # the emails of the users created
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"traffic-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(INVOKE_TIMEOUT_SECONDS + 10)

    def since(self, mark: float) -> list[Answer]:
        return sorted((a for a in list(self.answers) if a.started >= mark),
                      key=lambda answer: answer.started)

    def wait_for(self, count: int, after: float) -> None:
        deadline = time.monotonic() + WAIT_FOR_REQUESTS_SECONDS
        while len(self.since(after)) < count and time.monotonic() < deadline:
            time.sleep(0.1)

    def _run(self) -> None:
        client = LocalClients(self.endpoint).client(
            "lambda", read_timeout=INVOKE_TIMEOUT_SECONDS)
        requests: Sequence[Callable[[Any], Answer]] = (self._create_user, self._count_tasks)
        turn = 0
        while not self._stop.is_set():
            self.answers.append(requests[turn % len(requests)](client))
            turn += 1
            time.sleep(PAUSE_BETWEEN_REQUESTS_SECONDS)

    def _create_user(self, client: Any) -> Answer:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        answer = self._invoke(client, "POST", "/users",
                              {"email": email, "display_name": DISPLAY_NAME})
        if answer.status == 201:
            self.created.append(email)
        return answer

    def _count_tasks(self, client: Any) -> Answer:
        return self._invoke(client, "GET", "/tasks")

    def _invoke(self, client: Any, method: str, path: str, body: object = None) -> Answer:
        event = {"version": "2.0", "rawPath": path,
                 "requestContext": {"http": {"method": method, "path": path}},
                 "body": None if body is None else json.dumps(body), "isBase64Encoded": False}
        started = time.monotonic()
        request = f"{method} {path}"
        try:
            result = client.invoke(FunctionName=self.function, Payload=json.dumps(event).encode())
            payload = json.loads(result["Payload"].read())
        except Exception as error:  # what a caller would see: counted, never raised
            return Answer(started, time.monotonic() - started, request, 0, "?",
                          f"{type(error).__name__}: {error}")
        seconds = time.monotonic() - started
        if result.get("FunctionError") or not isinstance(payload, dict):
            return Answer(started, seconds, request, 0, "?", str(payload)[:300])
        headers = payload.get("headers") or {}
        status = int(payload.get("statusCode", 0))
        return Answer(started, seconds, request, status, str(headers.get("X-App-Release", "?")),
                      "" if 200 <= status < 300 else str(payload.get("body", ""))[:300])


def unable_to_serve_seconds(answers: Sequence[Answer]) -> float:
    """The time from each failed request to the start of the next one that succeeded (or to
    the end of the last request, when none succeeded after it)."""
    down, since = 0.0, None
    answers = sorted(answers, key=lambda answer: answer.started)
    for answer in answers:
        if not answer.served and since is None:
            since = answer.started
        elif answer.served and since is not None:
            down += answer.started - since
            since = None
    if since is not None and answers:
        down += answers[-1].started + answers[-1].seconds - since
    return down


def by_release(answers: Sequence[Answer]) -> str:
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer.release] = counts.get(answer.release, 0) + 1
    return ", ".join(f"{release} {count}" for release, count in counts.items())


# -- what each step must leave ---------------------------------------------------------------
@dataclass(frozen=True)
class Database:
    """What the checks read: the local stage database, and the local AWS's snapshots."""

    engine: sa.Engine
    endpoint: str

    def revision(self) -> str:
        with self.engine.connect() as connection:
            return ",".join(connection.execute(sa.text(
                "SELECT version_num FROM alembic_version ORDER BY 1")).scalars())

    def users_name(self) -> str:
        """'absent', 'nullable' or 'not null'."""
        with self.engine.connect() as connection:
            columns = {c["name"]: c for c in sa.inspect(connection).get_columns("users")}
        if "name" not in columns:
            return "absent"
        return "nullable" if columns["name"]["nullable"] else "not null"

    def indexes(self) -> dict[str, bool]:
        """The users table's indexes, each with whether it is valid."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT c.relname, i.indisvalid FROM pg_catalog.pg_index i "
                "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'users'::regclass"))
            return {str(name): bool(valid) for name, valid in rows}

    def existing(self, emails: Sequence[str]) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.text(
                "SELECT count(*) FROM users WHERE email = ANY(:emails)"),
                {"emails": list(emails)}).scalar_one())

    def snapshots(self) -> int:
        rds = LocalClients(self.endpoint).client("rds")
        return len(rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"])


@dataclass(frozen=True)
class Expectation:
    text: str
    holds: Callable[[Database, int, list[Answer]], bool]  # (database, deploy's exit, answers)


@dataclass(frozen=True)
class Step:
    release: Release
    story: str
    expected: tuple[Expectation, ...]


def _serving(release: str) -> Callable[[Database, int, list[Answer]], bool]:
    def holds(database: Database, status: int, answers: list[Answer]) -> bool:
        last = answers[-REQUESTS_AFTER_EACH_DEPLOY:]
        return bool(last) and all(a.served and a.release == release for a in last)
    return holds


STEPS = (
    Step(RELEASES[0], "its code writes and reads users.name", (
        Expectation("the deploy succeeded", lambda db, rc, _: rc == 0),
        Expectation(f"the database is at {INDEX_EMAIL_DOMAIN}, users.name NOT NULL",
                    lambda db, rc, _: (db.revision(), db.users_name())
                    == (INDEX_EMAIL_DOMAIN, "not null")),
        Expectation("release N-1's code serves", _serving("N-1")),
    )),
    Step(RELEASES[1], "stops using users.name; brings users.name nullable (expand) and its "
                      "drop (contract)", (
        Expectation("the deploy succeeded", lambda db, rc, _: rc == 0),
        Expectation(f"the expand revision ran after a snapshot: {USERS_NAME_NULLABLE}, "
                    "users.name nullable",
                    lambda db, rc, _: (db.revision(), db.users_name(), db.snapshots())
                    == (USERS_NAME_NULLABLE, "nullable", 1)),
        Expectation(f"the drop {DROP_USERS_NAME} waits for the next release",
                    lambda db, rc, _: db.users_name() != "absent"),
        Expectation("release N's code serves", _serving("N")),
    )),
    Step(RELEASES[2], "brings a unique index on display names, which the data does not allow", (
        Expectation("the deploy failed and rolled back", lambda db, rc, _: rc == 1),
        Expectation(f"the deferred drop ran first, after its own snapshot: {DROP_USERS_NAME}, "
                    "users.name gone",
                    lambda db, rc, _: (db.revision(), db.users_name(), db.snapshots())
                    == (DROP_USERS_NAME, "absent", 2)),
        Expectation("nothing of the failed index is left",
                    lambda db, rc, _: "uq_users_display_name" not in db.indexes()),
        Expectation("release N's code still serves, without the column", _serving("N")),
    )),
    Step(RELEASES[3], "brings a plain index on display names instead", (
        Expectation("the deploy succeeded", lambda db, rc, _: rc == 0),
        Expectation(f"the index was built concurrently after a snapshot: {INDEX_DISPLAY_NAMES}",
                    lambda db, rc, _: (db.revision(), db.indexes().get("ix_users_display_name"),
                                       db.snapshots()) == (INDEX_DISPLAY_NAMES, True, 3)),
        Expectation("release N+1's code serves", _serving("N+1")),
    )),
)


# -- the scenario --------------------------------------------------------------------------
@dataclass
class Scenario:
    env: local_deploy.LocalEnvironment
    releases_dir: Path
    keep: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.env.aws_port}"

    def run(self) -> int:
        self._reset()
        outdirs = self._synthesize()
        traffic = Traffic(self.endpoint)
        started = time.monotonic()
        failed: list[str] = []
        engine = None
        try:
            for number, step in enumerate(STEPS, 1):
                print(f"\n== {number}. Release {step.release.name}: {step.story} ==", flush=True)
                mark = time.monotonic()
                status = local_deploy.deploy(
                    read_synthesized(outdirs[step.release.folder], STAGE), STAGE,
                    self.env, show_outputs=self.keep)
                if number == 1:  # nothing serves before the first deploy
                    traffic.start()
                traffic.wait_for(REQUESTS_AFTER_EACH_DEPLOY, after=time.monotonic())
                if engine is None:
                    engine = sa.create_engine(self.env.postgres.url_for(
                        local_deploy.stage_database(STAGE)), poolclass=sa.NullPool)
                answers = traffic.since(mark)
                served = sum(a.served for a in answers)
                print(f"Requests during this step: {len(answers)}, {served} answered "
                      f"({by_release(answers)})")
                database = Database(engine, self.endpoint)
                for expectation in step.expected:
                    holds = expectation.holds(database, status, answers)
                    print(f"Expected: {expectation.text}: {'yes' if holds else 'NO'}")
                    if not holds:
                        failed.append(f"{number}. {expectation.text}")
            traffic.stop()
            failed += self._summary(traffic, Database(engine, self.endpoint) if engine else None,
                                    time.monotonic() - started)
        finally:
            traffic.stop()
            if engine is not None:
                engine.dispose()
            if not self.keep:
                with contextlib.redirect_stdout(io.StringIO()):
                    local_deploy.destroy(self.env)
        if failed:
            print("\nThe scenario did not go as expected:\n  " + "\n  ".join(failed))
            return 1
        print("\nEvery step went as expected." + (
            "" if not self.keep else f" The local deploy stays in {self.env.local_dir}."))
        return 0

    def _reset(self) -> None:
        """From scratch every time: a left-over scenario's server and files are removed."""
        with contextlib.redirect_stdout(io.StringIO()):
            local_deploy.destroy(self.env)

    def _synthesize(self) -> dict[str, Path]:
        """Every release's checkout and `cdk synth`, two at a time."""
        print(f"Synthesizing {len(RELEASES)} releases in {self.releases_dir} ...", flush=True)
        started = time.monotonic()

        def one(release: Release) -> Path:
            return synthesize(checkout(release, self.releases_dir / release.folder), STAGE)

        with ThreadPoolExecutor(max_workers=2) as pool:
            outdirs = dict(zip((r.folder for r in RELEASES), pool.map(one, RELEASES),
                               strict=True))
        print(f"Synthesized in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{r.name} ({r.folder})" for r in RELEASES), flush=True)
        return outdirs

    @staticmethod
    def _summary(traffic: Traffic, database: Database | None, seconds: float) -> list[str]:
        answers = traffic.since(0.0)
        served = [a for a in answers if a.served]
        down = unable_to_serve_seconds(answers)
        print("\n== The application throughout ==")
        print(f"Requests: {len(answers)}, {len(served)} answered ({by_release(answers)}); "
              f"slowest {max((a.seconds for a in answers), default=0):.1f} s")
        print(f"Unable to serve: {down:.1f} s of {seconds:.0f} s")
        for answer in [a for a in answers if not a.served][:5]:
            print(f"  {answer.request} → {answer.status} from {answer.release}: {answer.note}")
        kept = database.existing(traffic.created) if database is not None else 0
        print(f"Users created by those requests: {len(traffic.created)}, {kept} still there")
        problems = []
        if len(served) != len(answers) or down > 0:
            problems.append(f"the application failed {len(answers) - len(served)} requests")
        if kept != len(traffic.created):
            problems.append(f"{len(traffic.created) - kept} created users are missing")
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.zero_downtime")
    parser.add_argument("--local-dir", type=Path, default=REPO_ROOT / ".local" / "zero-downtime")
    parser.add_argument("--postgres-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--aws-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--keep", action="store_true",
                        help="leave the local deploy running at the end (for the admin CLI)")
    args = parser.parse_args(argv)
    local_dir = args.local_dir.resolve()
    local_dir.mkdir(parents=True, exist_ok=True)
    env = local_deploy.LocalEnvironment(
        local_dir=local_dir, postgres_port=args.postgres_port or free_port(),
        aws_port=args.aws_port or free_port())
    try:
        return Scenario(env, releases_dir=local_dir / "releases", keep=args.keep).run()
    except (ReleaseError, DeployError, LocalAwsError, PostgresUnavailable) as error:
        print(f"deploy-local zero-downtime: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
