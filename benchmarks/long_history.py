#!/usr/bin/env python3
"""Time the engine on a long team-style history against plain `alembic upgrade head`.

    python benchmarks/long_history.py [--repeat N] [--count N] [--output FILE]

The history is `localdev.team_history` (264 revisions by default): tables, columns, indexes
and foreign keys added over years, concurrent indexes and enum values in autocommit blocks,
data migrations that read rows, a split and a merge. Four cases, each run on a fresh
database of one server (created untimed, from an empty or a prepared template database):

1. plain Alembic, ``alembic.command.upgrade(config, "head")`` empty → head, through the
   history's own env.py on a fresh NullPool engine: the baseline;
2. the engine's ``dry_run()`` on an empty database;
3. the engine's ``migrate()`` empty → head;
4. the same with production rules (the change gate judges every statement);
5. the same as a deploy runs it: from a copy of the folder carrying ``code-checksums.json``,
   the checksums the synth writes into the Lambda bundle (`cdk_app.bundling`), so a cold
   process hashes bytes instead of computing them; cases 2-4 are what the CLI on an
   operator's machine pays, computing every checksum;
6. the engine's ``dry_run()`` on a database at a trunk revision in the middle of the history.

Each engine case builds a fresh ``MigrationEngine`` inside the timed region, as a deploy does.
The cases are taken round-robin (1 warm-up round, then ``--repeat`` timed rounds), so drift on
the machine spreads over all of them alike; the warm-up also leaves every case the same
compiled ``.pyc`` files. Every answer is checked (version at head, a dry run changing
nothing), so a wrong result cannot pass for a fast one. An engine case that raises or answers
``ok: false`` is reported as failed, in one line, and the run goes on.

Then the schema and rows the engine's ``migrate()`` left are compared with plain Alembic's:
``pg_dump --schema-only`` without the engine's ``migration_audit`` table and without
pg_dump's random ``\\restrict``/``\\unrestrict`` lines, and every table's rows without its
timestamp columns (``now()`` defaults differ between runs). Ratios are against (1), measured
in the same run. The server at DATABASE_URL is used when set (databases are created and
dropped there); otherwise a throwaway server is started and stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import gc
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alembic
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from report import (  # benchmarks/report.py, beside this script
    CaseFailed,
    expect_ok,
    findings_summary,
    publish,
)

from localdev.history_env import NAMING_CONVENTION, write_script_directory
from localdev.postgres import database_server, find_bin_dir
from localdev.team_history import DEFAULT_COUNT, TeamHistory, write_team_history
from migration_resource import checksums
from migration_resource.audit import AUDIT_TABLE
from migration_resource.dsn import mask_text, normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings, versions_location

DEFAULT_REPEAT = 3
# The team-style histories the tests run (their revision files are data, read from there).
TEST_HISTORIES_DIR = Path(__file__).resolve().parents[1] / "tests" / "histories"
TEST_HISTORIES = ("branchy", "concurrent_indexes", "flask_app", "seeded_service")
WARMUPS = 1
REASON_LIMIT = 200
WARNING_LIMIT = 160
DIFF_LINES = 20
ENGINE_LOGGER = "migration_resource"
# The generated history or one of the tests': `as_deployed` copies either.
HistoryT = TypeVar("HistoryT", "TeamHistory", "Folder")


@dataclass
class Case:
    name: str
    # Untimed: a database in the state the case starts from.
    prepare: Callable[[], sa.URL]
    # Timed: one run; returns a short summary of the answer (findings, pending...).
    run: Callable[[sa.URL], str]
    # Untimed: raises CaseFailed when the run left the database in the wrong state.
    check: Callable[[sa.URL], None]
    engine: bool
    samples: list[float] = field(default_factory=list)
    failure: str | None = None
    summary: str = ""
    warnings: int = 0
    first_warning: str = ""
    last_url: sa.URL | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


class WarningCounter(logging.Handler):
    """Counts what the engine logs at WARNING and above; the report says how much, not all of it
    (the gate warns once per finding, hundreds of lines on a long history)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        if not self.count:
            self.first = _one_line(record.getMessage(), WARNING_LIMIT)
        self.count += 1

    def reset(self) -> None:
        self.count, self.first = 0, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed runs per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"revisions in the generated history (default {DEFAULT_COUNT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="long-history-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    try:
        history = write_team_history(work / "history", args.count)
        team_histories = [test_history(work, name) for name in TEST_HISTORIES]
        with database_server(work) as url, Databases(normalize_url(url)) as databases:
            report = run(history, databases, args.repeat)
            report += "\n\n" + run_test_histories(team_histories, databases, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return publish(report, args.output, started)


class Databases:
    """Fresh databases on one server, all dropped at the end."""

    def __init__(self, server_url: sa.URL) -> None:
        self.server_url = server_url
        self.admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *_: object) -> None:
        with self.admin.connect() as connection:
            for name in reversed(self.names):
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()

    def create(self, template: sa.URL | None = None) -> sa.URL:
        name = f"bench_long_{uuid.uuid4().hex[:8]}"
        copy = f' TEMPLATE "{template.database}"' if template is not None else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        self.names.append(name)
        return self.server_url.set(database=name)


# -- the cases --------------------------------------------------------------------------------
def as_deployed(history: HistoryT) -> HistoryT:
    """A copy of the folder with the checksum manifest the synth puts in the Lambda bundle."""
    copy = history.folder.with_name(history.folder.name + "-deployed")
    shutil.copytree(history.folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    checksums.write_manifest(versions_location(copy))
    return dataclasses.replace(history, folder=copy)


def run(history: TeamHistory, databases: Databases, repeat: int) -> str:
    deployed = as_deployed(history)
    middle = middle_revision(history)
    position = history.ordered.index(middle) + 1
    at_middle = databases.create()
    plain_upgrade(history, at_middle, middle)  # once; every run starts from a copy of it
    after_middle = len(history.ordered) - position
    cases = [
        Case("plain `alembic upgrade head`, empty → head (baseline)", databases.create,
             lambda url: plain_upgrade(history, url, "head"),
             lambda url: expect_version(url, history.head), engine=False),
        Case("engine `dry_run()`, empty database", databases.create,
             lambda url: engine_dry_run(history, url, len(history.ordered)),
             lambda url: expect_untouched(url, None), engine=True),
        Case("engine `migrate()`, empty → head", databases.create,
             lambda url: engine_migrate(history, url),
             lambda url: expect_version(url, history.head), engine=True),
        Case("engine `migrate()` with production rules, empty → head", databases.create,
             lambda url: engine_migrate(history, url, stage="production"),
             lambda url: expect_version(url, history.head), engine=True),
        Case("engine `migrate()` with production rules as deployed (checksum manifest), "
             "empty → head", databases.create,
             lambda url: engine_migrate(deployed, url, stage="production"),
             lambda url: expect_version(url, history.head), engine=True),
        Case(f"engine `dry_run()` at revision {position} of {len(history.ordered)}",
             lambda: databases.create(template=at_middle),
             lambda url: engine_dry_run(history, url, after_middle),
             lambda url: expect_untouched(url, middle), engine=True),
    ]
    measure(cases, repeat)
    return render(history, cases, repeat, compare(cases[0], cases[2]))


@dataclass(frozen=True)
class Folder:
    """A migrations folder and its head: what the plain and the engine runs need of a history."""

    folder: Path
    head: str
    revisions: int


def test_history(work: Path, name: str) -> Folder:
    """One of the tests' team-style histories (tests/histories/NAME) as a script directory."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - alembic is loaded already

    folder = write_script_directory(work / name, versions_from=TEST_HISTORIES_DIR / name)
    config = Config()
    config.set_main_option("script_location", str(folder))
    script = ScriptDirectory.from_config(config)
    return Folder(folder, script.get_current_head() or "",
                  sum(1 for _ in script.walk_revisions()))


def run_test_histories(histories: list[Folder], databases: Databases, repeat: int) -> str:
    """Plain Alembic and the engine's migrate() from empty on each of the tests' histories,
    the engine as the CLI runs it and as a deploy does (with the checksum manifest)."""
    triples = [cases_for(history, databases) for history in histories]
    measure([case for triple in triples for case in triple], repeat)
    lines = [
        "Team-style histories of the tests (tests/histories), empty → head; the engine with "
        "production rules, as the CLI runs it and as deployed (checksum manifest):",
        "",
        "| history | revisions | plain Alembic median s | engine (CLI) median s "
        "| CLI / plain | engine as deployed median s | deployed / plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for history, (plain, cli, deployed) in zip(histories, triples, strict=True):
        failed = next((c for c in (plain, cli, deployed) if not c.samples), None)
        if failed is not None:
            lines.append(f"| {history.folder.name} | {history.revisions} | failed "
                         f"({failed.name}): {failed.failure} | - | - | - | - |")
            continue
        lines.append(f"| {history.folder.name} | {history.revisions} | {plain.median:.3f} "
                     f"| {cli.median:.3f} | {cli.median / plain.median:.2f}x "
                     f"| {deployed.median:.3f} | {deployed.median / plain.median:.2f}x |")
    return "\n".join(lines)


def cases_for(history: Folder, databases: Databases) -> tuple[Case, Case, Case]:
    deployed = as_deployed(history)

    def plain(url: sa.URL) -> str:
        return plain_upgrade(history, url, "head")

    def engine(url: sa.URL) -> str:
        return engine_migrate(history, url, stage="production")

    def engine_deployed(url: sa.URL) -> str:
        return engine_migrate(deployed, url, stage="production")

    def at_head(url: sa.URL) -> None:
        expect_version(url, history.head)

    name = history.folder.name
    return (Case(f"{name}: plain", databases.create, plain, at_head, engine=False),
            Case(f"{name}: engine", databases.create, engine, at_head, engine=True),
            Case(f"{name}: engine as deployed", databases.create, engine_deployed, at_head,
                 engine=True))


def middle_revision(history: TeamHistory) -> str:
    """The trunk revision nearest the middle: a database there has one current revision."""
    middle = len(history.ordered) // 2
    trunk = [i for i, r in enumerate(history.ordered) if r not in history.branched]
    return history.ordered[min(trunk, key=lambda i: abs(i - middle))]


def plain_upgrade(history: TeamHistory | Folder, url: sa.URL, target: str) -> str:
    """What a team runs by hand: its script directory, its env.py, a fresh engine."""
    config = Config()
    config.set_main_option("script_location", str(history.folder))
    database = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        config.attributes["connection"] = database  # env.py connects, runs and commits
        command.upgrade(config, target)
    finally:
        database.dispose()
    return ""


def engine_settings(history: TeamHistory | Folder, url: sa.URL,
                    stage: str = "development") -> EngineSettings:
    """The engine runs its own Alembic environment: the history's env.py is not run, and the
    naming convention its revisions rely on is a setting."""
    return EngineSettings(database_url=url, script_location=history.folder,
                          naming_convention=NAMING_CONVENTION, stage=stage)


def fresh_process_caches() -> None:
    """What a new Lambda process starts without: the checksums of the revision files."""
    checksums.clear_caches()


def engine_dry_run(history: TeamHistory, url: sa.URL, pending: int) -> str:
    fresh_process_caches()
    engine = MigrationEngine(engine_settings(history, url))
    try:
        outcome = engine.dry_run()
    finally:
        engine.close()
    expect_ok(outcome)
    if len(outcome.classification.pending) != pending:
        raise CaseFailed(f"{len(outcome.classification.pending)} pending, not {pending}")
    return findings_summary(outcome)


def engine_migrate(history: TeamHistory | Folder, url: sa.URL,
                   stage: str = "development") -> str:
    fresh_process_caches()
    engine = MigrationEngine(engine_settings(history, url, stage))
    try:
        outcome = engine.migrate()
    finally:
        engine.close()
    expect_ok(outcome)
    if outcome.final != (history.head,):
        raise CaseFailed(f"migrate() ended at {outcome.final}, not {history.head}")
    return findings_summary(outcome)


def expect_version(url: sa.URL, revision: str) -> None:
    with connected(url) as connection:
        found = connection.scalars(sa.text("SELECT version_num FROM alembic_version")).all()
    if found != [revision]:
        raise CaseFailed(f"alembic_version holds {found}, not {revision}")


def expect_untouched(url: sa.URL, revision: str | None) -> None:
    """A dry run changes nothing: an empty database stays empty, the middle one at its revision."""
    with connected(url) as connection:
        tables = connection.scalars(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    if revision is None:
        if tables:
            raise CaseFailed(f"the dry run left tables behind: {', '.join(sorted(tables))}")
        return
    expect_version(url, revision)


@contextmanager
def connected(url: sa.URL) -> Iterator[sa.Connection]:
    database = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with database.connect() as connection:
            yield connection
    finally:
        database.dispose()


# -- measuring --------------------------------------------------------------------------------
def measure(cases: list[Case], repeat: int) -> None:
    counter = WarningCounter()
    engine_logger = logging.getLogger(ENGINE_LOGGER)
    engine_logger.addHandler(counter)
    engine_logger.propagate = False  # counted, not printed
    try:
        for round_number in range(WARMUPS + repeat):
            for case in cases:
                if case.failure is None:
                    counter.reset()
                    time_once(case, timed=round_number >= WARMUPS)
                    if case.engine:
                        case.warnings, case.first_warning = counter.count, counter.first
            print(f"round {round_number + 1}/{WARMUPS + repeat} done", file=sys.stderr)
    finally:
        engine_logger.removeHandler(counter)
        engine_logger.propagate = True


def time_once(case: Case, *, timed: bool) -> None:
    url = case.prepare()
    gc.collect()  # so one case does not pay for the garbage another left behind
    started = time.perf_counter()
    try:
        summary = case.run(url)
        elapsed = time.perf_counter() - started
        case.check(url)
    except Exception as error:  # any failure is reported, in one line
        case.failure = failure_reason(error)
        print(f"{case.name}: FAILED: {case.failure}", file=sys.stderr)
        return
    case.summary, case.last_url = summary, url
    if timed:
        case.samples.append(elapsed)


def failure_reason(error: Exception) -> str:
    text = str(error)
    reason = text if isinstance(error, CaseFailed) else f"{type(error).__name__}: {text}"
    return _one_line(mask_text(reason), REASON_LIMIT)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- the engine's result against plain Alembic's ------------------------------------------------
def compare(plain: Case, engine: Case) -> list[str]:
    if plain.last_url is None or engine.last_url is None:
        failed = plain if plain.last_url is None else engine
        return [f"- schema and rows: not compared ({failed.name} failed)"]
    lines = []
    try:
        expected, found = schema_dump(plain.last_url), schema_dump(engine.last_url)
    except (OSError, subprocess.CalledProcessError) as error:
        lines.append(f"- schema: not compared (pg_dump failed: {failure_reason(error)})")
    else:
        if expected == found:
            lines.append(f"- schema: the engine's `migrate()` left the same schema as plain "
                         f"Alembic (`pg_dump --schema-only`, {len(expected)} lines, "
                         f"`{AUDIT_TABLE}` and `\\restrict` lines left out)")
        else:
            diff = list(difflib.unified_diff(expected, found, "plain alembic", "engine",
                                             lineterm="", n=0))
            lines.append(f"- schema: DIFFERS ({len(diff)} diff lines; first {DIFF_LINES}):")
            lines += [f"      {line}" for line in diff[:DIFF_LINES]]
    plain_rows, engine_rows = table_rows(plain.last_url), table_rows(engine.last_url)
    total = sum(len(rows) for rows in plain_rows.values())
    if plain_rows == engine_rows:
        lines.append(f"- rows: the same in all {len(plain_rows)} tables ({total} rows, "
                     "timestamp columns left out)")
    else:
        differing = sorted(t for t in plain_rows.keys() | engine_rows.keys()
                           if plain_rows.get(t) != engine_rows.get(t))
        lines.append(f"- rows: DIFFER in {len(differing)} tables: {', '.join(differing)}")
    return lines


def schema_dump(url: sa.URL) -> list[str]:
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)  # not on the command line, where ps shows it
    libpq = url.set(drivername="postgresql", password=None).render_as_string()
    result = subprocess.run(
        [str(pg_dump()), "--schema-only", "--no-owner", "--no-privileges",
         f"--exclude-table=public.{AUDIT_TABLE}", f"--dbname={libpq}"],
        capture_output=True, text=True, check=True, env=env,
    )
    # pg_dump 15.18 writes a random key after \restrict; it says nothing about the schema.
    return [line for line in result.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))]


def pg_dump() -> Path:
    found = shutil.which("pg_dump")
    return Path(found) if found else find_bin_dir() / "pg_dump"


def table_rows(url: sa.URL) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, sorted, without timestamp columns (now() differs between runs)."""
    with connected(url) as connection:
        columns = connection.execute(sa.text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> :audit "
            "AND data_type NOT LIKE 'timestamp%' ORDER BY table_name, ordinal_position"),
            {"audit": AUDIT_TABLE}).all()
        by_table: dict[str, list[str]] = {}
        for table, column in columns:
            by_table.setdefault(table, []).append(column)
        rows: dict[str, list[tuple[object, ...]]] = {}
        for table, names in by_table.items():
            selected = ", ".join(f'"{name}"' for name in names)
            order = ", ".join(str(n) for n in range(1, len(names) + 1))
            result = connection.execute(sa.text(
                f'SELECT {selected} FROM "{table}" ORDER BY {order}'))
            rows[table] = [tuple(row) for row in result]
    return rows


# -- the report -------------------------------------------------------------------------------
def render(history: TeamHistory, cases: list[Case], repeat: int, checks: list[str]) -> str:
    counts = ", ".join(f"{kind} {n}" for kind, n in history.counts().items())
    lines = [
        f"Python {platform.python_version()}, alembic {alembic.__version__}, "
        f"SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"{WARMUPS} warm-up + {repeat} timed runs per row, round-robin, each on a fresh "
        "database.",
        "",
        f"History: {len(history.ordered)} revisions ({counts}); "
        f"{len(history.autocommit)} with an autocommit block, {len(history.data_migrations)} "
        "reading rows.",
        "",
        "| case | median s | min s | max s | median / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    baseline = cases[0]
    for case in cases:
        if case.failure is not None or not case.samples:
            lines.append(f"| {case.name} | failed | - | - | - |")
            continue
        ratio = (f"{case.median / baseline.median:.2f}x" if baseline.samples
                 else "n/a (no baseline)")
        lines.append(f"| {case.name} | {case.median:.3f} | {min(case.samples):.3f} "
                     f"| {max(case.samples):.3f} | {ratio} |")
    lines.append("")
    if baseline.samples:
        per_revision = baseline.median / len(history.ordered) * 1000
        lines.append(f"Baseline: plain Alembic, {len(history.ordered)} revisions empty → head, "
                     f"median {baseline.median:.3f} s ({per_revision:.1f} ms per revision).")
        lines.append("")
    for case in cases:
        if case.failure is not None:
            lines.append(f"- {case.name}: FAILED: {case.failure}")
        elif case.engine:
            warned = (f"; {case.warnings} warnings logged, the first: {case.first_warning}"
                      if case.warnings else "; no warnings logged")
            lines.append(f"- {case.name}: {case.summary}{warned}")
    lines += checks
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
