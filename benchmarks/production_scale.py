#!/usr/bin/env python3
"""The engine's dry run and deploy on a production-sized table, under a writing application.

    python benchmarks/production_scale.py [--rows N] [--repeat N] [--output FILE]

A template database is built once, untimed: the sample application's schema brought by the
engine (``MigrationEngine.migrate(target="b33d0b47f2df")``) to revision ``b33d0b47f2df``,
``users`` filled with ``--rows`` rows (default 5,000,000) by one ``INSERT ... SELECT`` from
``generate_series`` (``email_domain`` NULL, as the column was just added; one display name in
5,000 saved with trailing spaces), then ``VACUUM ANALYZE``. Every run of every case gets its
own database, ``CREATE DATABASE ... TEMPLATE`` of it (untimed, followed by a ``CHECKPOINT``
and an OS ``sync`` so that no case pays for the copy's writes), dropped after its checks.

While a case runs, a probe session updates a random ``users`` row every 10 ms and records
how long each UPDATE took (its COMMIT, which waits for the disk and not for a lock, is left
out), as ``benchmarks/backfill.py`` does; its longest wait is the longest an application
write was blocked. Unlike there, the probe runs in a process of its own, so that the
engine's Python work in this one (parsing, rendering, the gate) cannot delay it by holding
the GIL: what it records is the database's wait. The cases:

- ``idle``: the probe alone for 5 s, the baseline of the dry-run target;
- for two histories, each pending from ``b33d0b47f2df``: the engine's ``dry_run()``, the
  engine's deploy (``migrate()``) and plain Alembic's ``command.upgrade(config, "head")``
  through the folder's own env.py on a fresh NullPool engine.

History (a) is the sample's own ``alembic/`` (a batched backfill of ``email_domain``, a CHECK
added NOT VALID then validated, an index built concurrently, ``users.name`` made nullable
then dropped). History (b) is a temporary folder holding copies of the sample's revisions up
to ``b33d0b47f2df`` and two revisions written here: a data fix that reads rows
(``op.get_bind().execute(...).fetchall()``) and then updates them one by one, and an index
built the usual Alembic way (``op.create_index(..., postgresql_concurrently=True)`` in an
``autocommit_block()``).

The engine runs with the settings the migration Lambda of a production stage gets
(``EngineSettings.from_environment``: ``STAGE=production``, the sample's naming convention,
the construct's default timeouts). ``ALLOW_DESTRUCTIVE`` is decided once, untimed, on a copy
of the template: true when a production dry run of history (a) without it is refused (the
drop of ``users.name``), and the report quotes the refusal. Each engine case builds a fresh
``MigrationEngine`` inside its timed region, as a deploy does.

Every answer is checked, so a wrong result cannot pass for a fast one: a dry run answers ok
and leaves ``alembic_version``, the row count and the rows its history would change as they
were; a deploy and plain Alembic both leave the database at head with the rows changed. A
wrong answer fails the script (exit status 1, after the report); a missed target does not.
Targets: a dry run adds at most 50 ms to the probe's longest wait over the idle case; a
deploy's longest wait is at most plain Alembic's plus 100 ms. ``--repeat N`` runs every case
N times, round-robin; the table shows each run's wall time and, past one run, each run's
longest wait (on a durable server a disk stall during a checkpoint can make one run's longest
wait a second long, in any case). At 5,000,000 rows a run takes about 22 minutes, most of it
the two real runs of history (a), whose backfill pauses 0.1 s after each of its 5,000 batches.

``migration_resource``, ``localdev`` and ``sample_app`` are imported from the first
``PYTHONPATH`` entry that holds them (another checkout, e.g. a worktree of an earlier commit),
else from the checkout this script is in; the sample's ``alembic/`` is that copy's, and the
report names it and its commit. The server at DATABASE_URL is used when set (databases are
created and dropped there); otherwise a throwaway server is started with PostgreSQL's durable
defaults (``fsync``, ``synchronous_commit``, ``full_page_writes`` on), as for the backfill.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from pathlib import Path

# After PYTHONPATH: a checkout named there (PYTHONPATH=/tmp/before) is the one measured.
sys.path.append(str(Path(__file__).resolve().parents[1]))

import alembic
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from report import (  # benchmarks/report.py, beside this script
    CaseFailed,
    DurablePostgres,
    expect_ok,
    findings_summary,
    publish,
)

import migration_resource
from localdev.postgres import database_server
from migration_resource.dsn import mask_text, normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
from sample_app.models import NAMING_CONVENTION

PROJECT = Path(migration_resource.__file__).resolve().parents[1]
SAMPLE_SCRIPTS = PROJECT / "alembic"
DEFAULT_ROWS = 5_000_000
DEFAULT_REPEAT = 1
START = "b33d0b47f2df"  # the sample's revision the template database is at
PROBE_INTERVAL_SECONDS = 0.01
PROBE_START_SECONDS = 0.2  # the probe is writing this long before the case starts
PROBE_READY_SECONDS = 60.0
PROBE_STOP_SECONDS = 600.0
IDLE_SECONDS = 5.0
DRY_RUN_BUDGET_SECONDS = 0.050  # a dry run adds at most this to the probe's longest wait
DEPLOY_BUDGET_SECONDS = 0.100  # a deploy's longest wait exceeds plain Alembic's by at most this
UNTRIMMED_EVERY = 5000  # one display name in this many saved with trailing spaces
DATA_FIX_LIMIT = 1000  # what history (b)'s data fix reads and fixes at most
INDEX_B = "ix_users_display_name"
REASON_LIMIT = 240


@dataclass(frozen=True)
class History:
    label: str  # "a" or "b"
    description: str
    folder: Path  # a script directory: env.py and versions/
    head: str
    pending: tuple[str, ...]  # from START to head, in the order they run


@dataclass
class Run:
    seconds: float
    waits: list[float]


@dataclass
class Case:
    name: str
    kind: str  # idle, dry_run, deploy, plain
    history: History | None
    # Timed, on a fresh database at START: returns a short summary of the answer.
    run: Callable[[sa.URL], str]
    # Untimed: raises CaseFailed when the run left the database in the wrong state.
    check: Callable[[sa.URL], None]
    runs: list[Run] = field(default_factory=list)
    failure: str | None = None
    summary: str = ""

    @property
    def waits(self) -> list[float]:
        return [wait for run in self.runs for wait in run.waits]

    @property
    def probe_max(self) -> float:
        return max(self.waits, default=0.0)

    @property
    def probe_p99(self) -> float:
        waits = self.waits
        if len(waits) < 2:
            return self.probe_max
        return statistics.quantiles(waits, n=100, method="inclusive")[98]


# -- the databases ----------------------------------------------------------------------------
class Databases:
    """The template and its copies on one server, all dropped at the end."""

    def __init__(self, server_url: sa.URL) -> None:
        self.server_url = server_url
        self.admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT",
                                      poolclass=sa.NullPool)
        self.names: list[str] = []
        self.template: str | None = None
        self.copy_seconds: list[float] = []

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *_: object) -> None:
        for name in reversed(self.names):
            self.drop(name)
        self.admin.dispose()

    def server_version(self) -> str:
        with self.admin.connect() as connection:
            return str(connection.exec_driver_sql("SHOW server_version").scalar())

    def settings(self) -> str:
        with self.admin.connect() as connection:
            return ", ".join(
                f"{setting} {connection.exec_driver_sql(f'SHOW {setting}').scalar()}"
                for setting in ("fsync", "synchronous_commit", "full_page_writes"))

    def create(self, *, template: str | None = None) -> sa.URL:
        name = f"bench_scale_{uuid.uuid4().hex[:8]}"
        copy = f' TEMPLATE "{template}"' if template is not None else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
            # The copy's writes go to disk now, not during the case that follows.
            with suppress(sa.exc.DBAPIError):  # CHECKPOINT needs a superuser (or pg_checkpoint)
                connection.exec_driver_sql("CHECKPOINT")
        os.sync()
        self.names.append(name)
        return self.server_url.set(database=name)

    def copy(self) -> sa.URL:
        if self.template is None:
            raise RuntimeError("no template database yet")
        started = time.perf_counter()
        url = self.create(template=self.template)
        self.copy_seconds.append(time.perf_counter() - started)
        return url

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.names:
            self.names.remove(name)


@contextmanager
def connected(url: sa.URL) -> Iterator[sa.Connection]:
    database = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with database.connect() as connection:
            yield connection
    finally:
        database.dispose()


def build_template(databases: Databases, rows: int) -> None:
    """The sample's schema at START by the engine, `rows` users, vacuumed and analysed."""
    url = databases.create()
    engine = MigrationEngine(engine_settings(url, SAMPLE_SCRIPTS, stage="development"))
    try:
        outcome = engine.migrate(target=START)
    finally:
        engine.close()
    if not outcome.ok or outcome.final != (START,):
        raise SystemExit(f"the template did not reach {START}: {outcome.message}")
    with connected(url) as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (email, name, display_name) "
            "SELECT 'user' || g || '@Example' || mod(g, 97) || '.COM', 'User ' || g, "
            f"'User ' || g || CASE WHEN mod(g, {UNTRIMMED_EVERY}) = 0 THEN '  ' ELSE '' END "
            f"FROM generate_series(1, {rows}) g")
        connection.commit()
        first, last, count = connection.execute(
            sa.text("SELECT min(id), max(id), count(*) FROM users")).one()
    if (first, last, count) != (1, rows, rows):
        raise SystemExit(f"users holds ids {first}..{last} ({count} rows), not 1..{rows}")
    with connected(url) as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE")
    databases.template = url.database


# -- the histories ----------------------------------------------------------------------------
def load_history(label: str, description: str, folder: Path) -> History:
    script = ScriptDirectory(str(folder))
    head = script.get_current_head()
    if head is None:
        raise SystemExit(f"{folder}: no single head")
    pending = tuple(reversed([r.revision for r in script.iterate_revisions(head, START)]))
    return History(label, description, folder, head, pending)


DATA_FIX = '''"""Data fix: trim the display names saved with trailing spaces, at most {limit} a run.

Written by benchmarks/production_scale.py: a revision that reads rows, then updates them.

Revision ID: {revision}
Revises: {down}
Create Date: 2026-12-10 09:00:00.000000

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id FROM users WHERE display_name <> rtrim(display_name) LIMIT {limit}"
    )).fetchall()
    for (user_id,) in rows:
        bind.execute(sa.text("UPDATE users SET display_name = rtrim(display_name) "
                             "WHERE id = :id"), {{"id": user_id}})


def downgrade() -> None:
    pass
'''

CONCURRENT_INDEX = '''"""Index users.display_name, built concurrently: writes to users go on.

Written by benchmarks/production_scale.py: the usual Alembic way, no engine helper.

Revision ID: {revision}
Revises: {down}
Create Date: 2026-12-10 09:05:00.000000

"""

from __future__ import annotations

from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("{index}", "users", ["display_name"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("{index}", table_name="users", postgresql_concurrently=True)
'''

DATA_FIX_REVISION = "c7d1e2f3a4b5"
INDEX_REVISION = "d8e2f3a4b5c6"


def write_history_b(folder: Path) -> History:
    """The sample's revisions up to START (copies) and two revisions of our own after it."""
    versions = folder / "versions"
    versions.mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy2(SAMPLE_SCRIPTS / name, folder / name)
    sample = ScriptDirectory(str(SAMPLE_SCRIPTS))
    kept = {r.revision for r in sample.iterate_revisions(START, "base")}
    for revision in kept:
        path = sample.get_revision(revision).path
        shutil.copy2(path, versions / Path(path).name)
    (versions / f"20261210_0900_{DATA_FIX_REVISION}_fix_users_display_name.py").write_text(
        DATA_FIX.format(revision=DATA_FIX_REVISION, down=START, limit=DATA_FIX_LIMIT))
    (versions / f"20261210_0905_{INDEX_REVISION}_index_users_display_name.py").write_text(
        CONCURRENT_INDEX.format(revision=INDEX_REVISION, down=DATA_FIX_REVISION,
                                index=INDEX_B))
    return load_history("b", f"copies of the sample's {len(kept)} revisions up to {START}, "
                        "then a data fix reading rows and updating them, and "
                        "`op.create_index(..., postgresql_concurrently=True)`", folder)


# -- the probe --------------------------------------------------------------------------------
def probe_loop(url: str, rows: int, stop: Event, results: Pipe) -> None:
    """A writer updating a random row every 10 ms (in its own process); how long each UPDATE
    took is sent back when `stop` is set."""
    chooser = random.Random(16)  # noqa: S311 - which rows the probe writes, no secret
    waits: list[float] = []
    database = sa.create_engine(url, poolclass=sa.NullPool)
    with database.connect() as conn:
        statement = sa.text("UPDATE users SET display_name = display_name WHERE id = :id")
        conn.execute(statement, {"id": 1})  # connected, statement prepared: ready
        conn.commit()
        results.send("ready")
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute(statement, {"id": chooser.randint(1, rows)})
            waits.append(time.perf_counter() - started)  # the UPDATE: its row lock wait
            conn.commit()  # not timed: a COMMIT waits for the disk, not for a lock
            stop.wait(PROBE_INTERVAL_SECONDS)
    database.dispose()
    results.send(waits)


@contextmanager
def probe(url: sa.URL, rows: int) -> Iterator[list[float]]:
    """The probe writing while the block runs; the list holds its waits once the block ends."""
    context = multiprocessing.get_context("spawn")  # nothing of this process is inherited
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=probe_loop, args=(url.render_as_string(hide_password=False), rows, stop, sender),
        daemon=True)
    process.start()
    sender.close()
    waits: list[float] = []
    try:
        if not receiver.poll(PROBE_READY_SECONDS) or receiver.recv() != "ready":
            raise CaseFailed("the probe did not start")
        time.sleep(PROBE_START_SECONDS)
        yield waits
    finally:
        stop.set()
        try:
            if receiver.poll(PROBE_STOP_SECONDS):
                waits.extend(receiver.recv())
        except EOFError:
            pass  # the probe died: no waits, reported below
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()
        receiver.close()
    if not waits:
        raise CaseFailed(f"the probe recorded nothing (exit code {process.exitcode})")


# -- the cases --------------------------------------------------------------------------------
def engine_settings(
    url: sa.URL, folder: Path, *, stage: str = "production", allow_destructive: bool = False
) -> EngineSettings:
    """What the migration Lambda of a stage reads from its environment (the construct's
    defaults for the timeouts, the sample's naming convention)."""
    return EngineSettings.from_environment({
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "MIGRATIONS_PATH": str(folder),
        "STAGE": stage,
        "ALLOW_DESTRUCTIVE": str(allow_destructive).lower(),
        "MIGRATION_NAMING_CONVENTION": json.dumps(NAMING_CONVENTION, sort_keys=True),
    })


def idle(_: sa.URL) -> str:
    time.sleep(IDLE_SECONDS)
    return f"the probe alone for {IDLE_SECONDS:g} s"


def allow_destructive_needed(history: History, databases: Databases) -> tuple[bool, str]:
    """Whether a production run of `history` needs ALLOW_DESTRUCTIVE, and the refusal
    without it: a dry run on a copy of the template, untimed."""
    url = databases.copy()
    try:
        engine = MigrationEngine(engine_settings(url, history.folder))
        try:
            outcome = engine.dry_run()
        finally:
            engine.close()
    finally:
        databases.drop(str(url.database))
    # "Dry run: the migration would be refused. <state>: <revision>: <rule> ...; what to do"
    return not outcome.ok, failure_reason(CaseFailed(outcome.message.split(";")[0]))


def engine_dry_run(history: History, url: sa.URL, *, allow_destructive: bool) -> str:
    settings = engine_settings(url, history.folder, allow_destructive=allow_destructive)
    engine = MigrationEngine(settings)
    try:
        outcome = engine.dry_run(allow_destructive=settings.allow_destructive)
    finally:
        engine.close()
    expect_ok(outcome)
    if outcome.classification.pending != history.pending:
        raise CaseFailed(f"pending {outcome.classification.pending}, not {history.pending}")
    sources = Counter(str(step.get("source", "?")) for step in outcome.plan or ())
    shown = ", ".join(f"{source} {n}" for source, n in sources.most_common())
    return f"{findings_summary(outcome)}; plan: {shown or 'none'}"


def engine_deploy(history: History, url: sa.URL, *, allow_destructive: bool) -> str:
    settings = engine_settings(url, history.folder, allow_destructive=allow_destructive)
    engine = MigrationEngine(settings)
    try:
        outcome = engine.migrate(allow_destructive=settings.allow_destructive)
    finally:
        engine.close()
    expect_ok(outcome)
    if outcome.final != (history.head,) or not outcome.complete or outcome.deferred:
        raise CaseFailed(f"migrate() ended at {outcome.final} (complete: {outcome.complete}, "
                         f"deferred: {outcome.deferred}), not at {history.head}")
    return f"{findings_summary(outcome)}; {len(outcome.applied)} revisions applied"


def plain_upgrade(history: History, url: sa.URL) -> str:
    """What a team runs by hand: its script directory, its env.py, a fresh engine."""
    config = Config()
    config.set_main_option("script_location", str(history.folder))
    database = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        config.attributes["connection"] = database  # env.py connects, runs and commits
        command.upgrade(config, "head")
    finally:
        database.dispose()
    return ""


@dataclass(frozen=True)
class Expected:
    """What each check compares against, from the template's size."""

    rows: int

    @property
    def untrimmed(self) -> int:
        return self.rows // UNTRIMMED_EVERY


def facts(url: sa.URL) -> dict[str, object]:
    """What the checks look at: the version, the rows, what each history changes."""
    with connected(url) as connection:
        return {
            "version": connection.scalars(
                sa.text("SELECT version_num FROM alembic_version")).all(),
            "rows": connection.scalar(sa.text("SELECT count(*) FROM users")),
            "no_domain": connection.scalar(
                sa.text("SELECT count(*) FROM users WHERE email_domain IS NULL")),
            "untrimmed": connection.scalar(sa.text(
                "SELECT count(*) FROM users WHERE display_name <> rtrim(display_name)")),
            "index_b": connection.scalar(sa.text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = "
                "to_regclass(:name)"), {"name": INDEX_B}),
        }


def expect(found: dict[str, object], wanted: dict[str, object]) -> None:
    wrong = [f"{key} {found[key]!r}, not {value!r}" for key, value in wanted.items()
             if found[key] != value]
    if wrong:
        raise CaseFailed("; ".join(wrong))


def untouched(expected: Expected, url: sa.URL) -> None:
    """A dry run changes nothing."""
    expect(facts(url), {"version": [START], "rows": expected.rows,
                        "no_domain": expected.rows, "untrimmed": expected.untrimmed,
                        "index_b": None})


def at_head(history: History, expected: Expected, url: sa.URL) -> None:
    """At head, with the rows the history changes changed."""
    wanted: dict[str, object] = {"version": [history.head], "rows": expected.rows}
    if history.label == "a":
        wanted["no_domain"] = 0
    else:
        wanted["untrimmed"] = max(0, expected.untrimmed - DATA_FIX_LIMIT)
        wanted["index_b"] = True
    expect(facts(url), wanted)


def history_cases(history: History, expected: Expected, *, allow_destructive: bool
                  ) -> list[Case]:
    name = f"({history.label})"

    def dry_run(url: sa.URL) -> str:
        return engine_dry_run(history, url, allow_destructive=allow_destructive)

    def deploy(url: sa.URL) -> str:
        return engine_deploy(history, url, allow_destructive=allow_destructive)

    def plain(url: sa.URL) -> str:
        return plain_upgrade(history, url)

    def check_untouched(url: sa.URL) -> None:
        untouched(expected, url)

    def check_head(url: sa.URL) -> None:
        at_head(history, expected, url)

    return [
        Case(f"{name} engine `dry_run()`", "dry_run", history, dry_run, check_untouched),
        Case(f"{name} engine deploy: `migrate()`", "deploy", history, deploy, check_head),
        Case(f"{name} plain Alembic `upgrade head`", "plain", history, plain, check_head),
    ]


# -- measuring --------------------------------------------------------------------------------
def measure(cases: list[Case], databases: Databases, rows: int, repeat: int) -> None:
    """Round-robin over the cases, each run on a fresh copy of the template."""
    for round_number in range(repeat):
        for case in cases:
            if case.failure is None:
                run_once(case, databases, rows)
        print(f"round {round_number + 1}/{repeat} done", file=sys.stderr)


def run_once(case: Case, databases: Databases, rows: int) -> None:
    print(f"Running {case.name}...", file=sys.stderr)
    url = databases.copy()
    try:
        with probe(url, rows) as waits:
            started = time.perf_counter()
            summary = case.run(url)
            elapsed = time.perf_counter() - started
        case.check(url)
    except Exception as error:  # any failure is reported, in one line
        case.failure = failure_reason(error)
        print(f"{case.name}: FAILED: {case.failure}", file=sys.stderr)
        return
    finally:
        databases.drop(str(url.database))
    case.summary = summary
    case.runs.append(Run(elapsed, waits))
    print(f"  {elapsed:.1f} s, probe's longest wait {max(waits) * 1000:.1f} ms",
          file=sys.stderr)


def failure_reason(error: Exception) -> str:
    text = str(error)
    reason = text if isinstance(error, CaseFailed) else f"{type(error).__name__}: {text}"
    flat = " ".join(mask_text(reason).split())
    return flat if len(flat) <= REASON_LIMIT else flat[: REASON_LIMIT - 3] + "..."


# -- the report -------------------------------------------------------------------------------
def checkout() -> str:
    """Where the engine was imported from, and at which commit."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True,
                                text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "not a git checkout"
    changed = git("status", "--porcelain", "--", "migration_resource", "alembic")
    state = (f"{len(changed.splitlines())} uncommitted changes in migration_resource/ and "
             "alembic/" if changed else "clean")
    return f"`{Path(migration_resource.__file__).resolve().parent}` (commit {commit}, {state})"


def copy_seconds(setup: Setup) -> str:
    if not setup.copy_seconds:
        return "-"
    return (f"{statistics.median(setup.copy_seconds):.1f} s (median of "
            f"{len(setup.copy_seconds)}, with its CHECKPOINT and sync)")


def target_line(name: str, case: Case, base: Case, budget: float) -> str:
    if case.failure is not None or base.failure is not None or not case.runs or not base.runs:
        return f"| {name} | - | {budget * 1000:.0f} ms | not measured (a case failed) |"
    difference = case.probe_max - base.probe_max
    verdict = "PASS" if difference <= budget else "MISS"
    return (f"| {name} | {case.probe_max * 1000:,.1f} - {base.probe_max * 1000:,.1f} = "
            f"{difference * 1000:+,.1f} ms | ≤ {budget * 1000:.0f} ms | {verdict} |")


@dataclass
class Setup:
    """What the run found before the cases: the server, the template, the destructive rule."""

    server: str = ""
    durability: str = ""
    template_seconds: float = 0.0
    copy_seconds: list[float] = field(default_factory=list)
    allow_destructive: bool = False
    refusal: str = ""


def render(cases: list[Case], histories: list[History], setup: Setup, *, rows: int,
           repeat: int) -> str:
    lines = [
        f"Python {platform.python_version()}, alembic {alembic.__version__}, SQLAlchemy "
        f"{sa.__version__}, {setup.server} ({setup.durability}), {os.cpu_count()} CPUs, "
        f"{platform.platform()}; engine imported from {checkout()}.",
        "",
        f"Each run on a fresh copy of a template database at {START} with {rows:,} rows in "
        f"`users`; {repeat} run(s) per case, round-robin; a probe session (its own process) "
        f"updates a random `users` row every {PROBE_INTERVAL_SECONDS * 1000:.0f} ms and times "
        "each UPDATE (not its COMMIT). The template took "
        f"{setup.template_seconds:.0f} s to build, a copy {copy_seconds(setup)} (untimed).",
        "",
        "Engine: `STAGE=production`, the sample's naming convention, the construct's default "
        f"timeouts; `ALLOW_DESTRUCTIVE={str(setup.allow_destructive).lower()}`: "
        + (f"without it a production dry run of (a) is refused: {setup.refusal}"
           if setup.allow_destructive else
           "a production dry run of (a) is not refused without it"),
        "",
    ]
    for history in histories:
        lines.append(f"- history ({history.label}): {history.description}; "
                     f"{len(history.pending)} pending from {START} to {history.head}.")
    lines += [
        "",
        "| case | wall time s (each run) | probe's longest wait (each run) | probe p99 "
        "| probe UPDATEs |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in cases:
        if case.failure is not None or not case.runs:
            lines.append(f"| {case.name} | failed | - | - | - |")
            continue
        seconds = ", ".join(f"{run.seconds:.2f}" if run.seconds < 10 else f"{run.seconds:.1f}"
                            for run in case.runs)
        longest = f"{case.probe_max * 1000:,.1f} ms"
        if len(case.runs) > 1:  # a single stall decides a longest wait: show each run's
            longest += " (" + ", ".join(f"{max(run.waits) * 1000:,.0f}" for run in case.runs) + ")"
        lines.append(f"| {case.name} | {seconds} | {longest} | "
                     f"{case.probe_p99 * 1000:,.1f} ms | {len(case.waits):,} |")
    by_kind = {(case.kind, case.history.label if case.history else ""): case for case in cases}
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|"]
    for history in histories:
        label = history.label
        lines.append(target_line(
            f"({label}) dry run's longest wait - idle's", by_kind["dry_run", label],
            by_kind["idle", ""], DRY_RUN_BUDGET_SECONDS))
        lines.append(target_line(
            f"({label}) deploy's longest wait - plain Alembic's", by_kind["deploy", label],
            by_kind["plain", label], DEPLOY_BUDGET_SECONDS))
    lines.append("")
    for case in cases:
        if case.failure is not None:
            lines.append(f"- {case.name}: FAILED: {case.failure}")
        elif case.summary:
            lines.append(f"- {case.name}: {case.summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows in users (default {DEFAULT_ROWS:,})")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"runs per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    print(f"Engine from {Path(migration_resource.__file__).resolve().parent}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="production-scale-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    try:
        histories = [
            load_history("a", "the sample's own `alembic/versions/`", SAMPLE_SCRIPTS),
            write_history_b(work / "history_b"),
        ]
        expected = Expected(args.rows)
        setup = Setup()
        with (database_server(work, server=DurablePostgres, kind=" (durable settings)") as url,
              Databases(normalize_url(url)) as databases):
            setup.server = f"PostgreSQL {databases.server_version()}"
            setup.durability = databases.settings()
            print(f"Building the template database ({args.rows:,} users)...", file=sys.stderr)
            building = time.perf_counter()
            build_template(databases, args.rows)
            setup.template_seconds = time.perf_counter() - building
            print(f"  {setup.template_seconds:.0f} s", file=sys.stderr)
            setup.allow_destructive, setup.refusal = allow_destructive_needed(
                histories[0], databases)
            cases = [Case("idle: the probe alone", "idle", None, idle, lambda _: None)]
            for history in histories:
                cases += history_cases(history, expected,
                                       allow_destructive=setup.allow_destructive)
            measure(cases, databases, args.rows, args.repeat)
            setup.copy_seconds = databases.copy_seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(cases, histories, setup, rows=args.rows, repeat=args.repeat)
    publish(report, args.output, started)
    return 1 if any(case.failure is not None for case in cases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
