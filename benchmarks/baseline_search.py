#!/usr/bin/env python3
"""Time a baseline search for the sample migrations and for 10 and 100 generated revisions.

    python benchmarks/baseline_search.py [--repeat N] [--output FILE]

A baseline search (`migration_resource.baseline.find_baseline`) replays the history into a
scratch schema and compares the live schema with it after every revision. Each case gets
its own database holding "tables without migration history": the migrations bring it to a
revision, then ``alembic_version`` is dropped; some cases then add a column no revision has.

- sample migrations (``alembic/``, 6 revisions): tables at revision 2 (matches revisions 2
  and 3, the backfill; the replay stops at revision 4, the first that differs after a
  match), tables at head, and tables at head plus an extra column (no match: every
  revision is replayed and compared);
- generated histories (`localdev.synthetic_history`): revision 1 creates the tables and
  every later revision only inserts a row, so tables at the last revision match EVERY
  revision and the replay never meets a difference to stop at; plus the no-match case.

Every measurement is one `find_baseline` call on a fresh NullPool engine, as a deploy makes
it; the revision scripts are loaded by each call. Ratios are against the 10-revision history
with tables at its last revision, measured in the same run. The server at DATABASE_URL is
used when set; otherwise a throwaway server is started and stopped.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alembic
import sqlalchemy as sa
from alembic import command

from localdev.postgres import database_server
from localdev.synthetic_history import write_history
from migration_resource.baseline import BaselineResult, find_baseline
from migration_resource.dsn import normalize_url
from migration_resource.revisions import RevisionCatalogue, alembic_config

SAMPLE = "sample"
SAMPLE_SCRIPTS = Path(__file__).resolve().parents[1] / "alembic"
SYNTHETIC_SIZES = (10, 100)
WARMUPS = 1
DEFAULT_REPEAT = 5
EXTRA_COLUMN = "benchmark_extra"


@dataclass(frozen=True)
class History:
    name: str
    scripts: Path
    ordered: tuple[str, ...]
    extra_table: str  # where the no-match cases add a column


@dataclass(frozen=True)
class Case:
    history: History
    label: str
    tables_at: int  # 1-based position of the revision the tables were migrated to
    extra_column: bool
    expected_match: int | None  # 1-based position of the revision that must be stamped
    database_url: sa.URL


@dataclass(frozen=True)
class Result:
    case: Case
    samples_s: tuple[float, ...]
    compared: int
    matches: int
    summary: str

    @property
    def median(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.samples_s, n=10, method="inclusive")[8]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed runs per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat must be at least 2")

    work = Path(tempfile.mkdtemp(prefix="baseline-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    started = time.perf_counter()
    try:
        with database_server(work) as url:
            server_url = normalize_url(url)
            report = run(server_url, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Whole run: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0




def histories(work: Path) -> list[History]:
    found = [History(SAMPLE, SAMPLE_SCRIPTS, RevisionCatalogue.load(SAMPLE_SCRIPTS).ordered,
                     "users")]
    for size in SYNTHETIC_SIZES:
        folder = work / f"history_{size}"
        ids = tuple(write_history(folder, size))
        found.append(History("generated", folder, ids, "items"))
    return found


def case_plan(history: History) -> list[tuple[str, int, bool, int | None]]:
    """(label, tables at, extra column, expected match) for one history."""
    last = len(history.ordered)
    if history.name == SAMPLE:
        return [
            # Revision 3 is a backfill: same schema as 2, so both match and 4 ends the replay.
            ("tables at revision 2", 2, False, 2),
            (f"tables at head (revision {last})", last, False, last),
            ("tables at head + extra column", last, True, None),
        ]
    # Every revision after the first only inserts a row: the earliest match is revision 1.
    return [
        (f"tables at revision {last}", last, False, 1),
        (f"tables at revision {last} + extra column", last, True, None),
    ]


def run(server_url: sa.URL, work: Path, repeat: int) -> str:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    names: list[str] = []
    try:
        cases = []
        for history in histories(work):
            for label, tables_at, extra, expected in case_plan(history):
                name = f"bench_baseline_{uuid.uuid4().hex[:8]}"
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                names.append(name)
                case = Case(history, label, tables_at, extra, expected,
                            server_url.set(database=name))
                prepare(case)
                cases.append(case)
        return render(measure(cases, repeat), repeat)
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def prepare(case: Case) -> None:
    """Tables without migration history: migrate, then forget alembic_version."""
    database = sa.create_engine(case.database_url, poolclass=sa.NullPool)
    try:
        with database.connect() as connection:
            config = alembic_config(case.history.scripts)
            config.attributes["connection"] = connection
            command.upgrade(config, case.history.ordered[case.tables_at - 1])
            connection.exec_driver_sql("DROP TABLE alembic_version")
            if case.extra_column:
                connection.exec_driver_sql(
                    f"ALTER TABLE {case.history.extra_table} ADD COLUMN {EXTRA_COLUMN} integer"
                )
            connection.commit()
    finally:
        database.dispose()


def measure(cases: list[Case], repeat: int) -> list[Result]:
    samples: dict[int, list[float]] = {index: [] for index in range(len(cases))}
    last: dict[int, BaselineResult] = {}
    # Round-robin over every case, so drift on the machine spreads over all of them alike.
    for round_number in range(WARMUPS + repeat):
        for index, case in enumerate(cases):
            elapsed, result = time_once(case)
            if round_number >= WARMUPS:
                samples[index].append(elapsed)
            last[index] = result
        print(f"round {round_number + 1}/{WARMUPS + repeat} done", file=sys.stderr)
    return [
        Result(case, tuple(samples[index]), last[index].revisions_compared,
               len(last[index].matches), last[index].summary())
        for index, case in enumerate(cases)
    ]


def time_once(case: Case) -> tuple[float, BaselineResult]:
    """One fresh engine, one search; checks the answer so a wrong result cannot look fast."""
    gc.collect()  # so one case does not pay for the garbage another left behind
    started = time.perf_counter()
    database = sa.create_engine(case.database_url, poolclass=sa.NullPool)
    try:
        result = find_baseline(database, case.history.scripts, case.history.ordered)
    finally:
        database.dispose()
    elapsed = time.perf_counter() - started
    expected = (None if case.expected_match is None
                else case.history.ordered[case.expected_match - 1])
    if result.matched != expected:
        raise RuntimeError(f"{case.history.name}, {case.label}: {result.summary()}")
    return elapsed, result


def render(results: list[Result], repeat: int) -> str:
    small, large = SYNTHETIC_SIZES
    by_key = {(len(r.case.history.ordered), r.case.extra_column): r for r in results
              if r.case.history.name != SAMPLE}
    baseline = by_key[(small, False)]
    lines = [
        f"Python {platform.python_version()}, alembic {alembic.__version__}, "
        f"SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"{WARMUPS} warm-up + {repeat} timed runs per row, a fresh engine each.",
        "",
        "| history | revisions | live tables | matched | revisions compared | median s "
        "| p90 s | median / baseline |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.case.expected_match is None:
            matched = "none"
        else:
            matched = f"revision {r.case.expected_match}"
            if r.matches > 1:
                matched += f" (+{r.matches - 1} more)"
        lines.append(
            f"| {r.case.history.name} | {len(r.case.history.ordered)} | {r.case.label} "
            f"| {matched} | {r.compared} | {r.median:.3f} | {r.p90:.3f} "
            f"| {r.median / baseline.median:.2f}x |"
        )
    lines += ["", f"Baseline: {small} generated revisions, tables at the last revision, median "
              f"{baseline.median:.3f} s.", ""]
    for extra, what in ((False, "tables at the last revision"), (True, "extra column")):
        a, b = by_key[(small, extra)], by_key[(large, extra)]
        per_revision = (b.median - a.median) / (b.compared - a.compared) * 1000
        lines.append(
            f"- {what}: {large} / {small} generated revisions = {b.median / a.median:.2f}x; "
            f"{per_revision:.1f} ms per extra revision compared"
        )
    for r in results:
        lines.append(f"- {r.case.history.name} {len(r.case.history.ordered)}, {r.case.label}: "
                     f"{r.summary}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
