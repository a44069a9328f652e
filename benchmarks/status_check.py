#!/usr/bin/env python3
"""Time a no-change deploy's status check at 10 and 1,000 generated revisions.

    python benchmarks/status_check.py [--repeat N] [--output FILE]

For each history the database is first brought to head; then every measurement builds a
fresh MigrationEngine, as a new deploy would, and times:

- deploy path: ``migrate(target_heads=(head,))``, what the custom resource calls with the
  head ids resolved at synth; it should cost the same whatever the length of the history;
- full status: ``status()`` without head ids, which loads every revision script; once from
  a copy of the scripts without ``.pyc`` files (each file is compiled, as in a read-only
  bundle shipped without bytecode) and once from a copy compiled beforehand.

Ratios are against the deploy path at the smallest history, measured in the same run. The
server at DATABASE_URL is used when set; otherwise a throwaway server is started and stopped.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alembic
import sqlalchemy as sa

from localdev.postgres import database_server
from localdev.synthetic_history import write_history
from migration_resource.dsn import normalize_url
from migration_resource.engine import MigrationEngine, Outcome
from migration_resource.settings import EngineSettings
from migration_resource.states import DatabaseState

SIZES = (10, 1000)
WARMUPS = 2
DEFAULT_REPEAT = 30
DEPLOY = "deploy path: migrate(target_heads)"
FULL_COLD = "full status(), no .pyc"
FULL_WARM = "full status(), .pyc present"
PATHS = (DEPLOY, FULL_COLD, FULL_WARM)


@dataclass(frozen=True)
class History:
    size: int
    head: str
    database_url: sa.URL
    cold_scripts: Path  # never compiled: every load compiles every revision file
    warm_scripts: Path  # compiled once before measuring


@dataclass(frozen=True)
class Result:
    size: int
    path: str
    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.samples_ms, n=10, method="inclusive")[8]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed runs per measurement (default {DEFAULT_REPEAT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat must be at least 2")

    # Otherwise the first load of the "no .pyc" copy writes __pycache__ and the cold case
    # silently turns warm; the warm copy is compiled explicitly with compileall.
    sys.dont_write_bytecode = True
    work = Path(tempfile.mkdtemp(prefix="status-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    try:
        with database_server(work) as url:
            server_url = normalize_url(url)
            report = run(server_url, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0




def run(server_url: sa.URL, work: Path, repeat: int) -> str:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    names: list[str] = []
    try:
        histories = []
        for size in SIZES:
            name = f"bench_{size}_{uuid.uuid4().hex[:8]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            names.append(name)
            histories.append(prepare(size, server_url.set(database=name), work))
        results = measure(histories, repeat)
        bytecode = {h.size: (pyc_count(h.cold_scripts), pyc_count(h.warm_scripts))
                    for h in histories}
        return render(results, bytecode, repeat)
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def prepare(size: int, database_url: sa.URL, work: Path) -> History:
    cold = work / f"history_{size}" / "cold"
    warm = work / f"history_{size}" / "warm"
    ids = write_history(cold, size)
    shutil.copytree(cold, warm)
    compileall.compile_dir(warm / "versions", quiet=1)
    started = time.perf_counter()
    outcome = with_engine(database_url, cold, lambda engine: engine.migrate())
    if outcome.final != (ids[-1],):
        raise RuntimeError(f"history {size}: migrate() ended at {outcome.final}, not {ids[-1]}")
    print(f"{size} revisions: brought to head in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return History(size=size, head=ids[-1], database_url=database_url,
                   cold_scripts=cold, warm_scripts=warm)


def with_engine(
    database_url: sa.URL, scripts: Path, call: Callable[[MigrationEngine], Outcome]
) -> Outcome:
    engine = MigrationEngine(EngineSettings(database_url=database_url, script_location=scripts))
    try:
        return call(engine)
    finally:
        engine.close()


def measure(histories: list[History], repeat: int) -> list[Result]:
    samples: dict[tuple[int, str], list[float]] = {
        (h.size, path): [] for h in histories for path in PATHS
    }
    # Round-robin over every case, so drift on the machine spreads over all of them alike.
    for round_number in range(WARMUPS + repeat):
        for history in histories:
            for path in PATHS:
                elapsed = time_once(history, path)
                if round_number >= WARMUPS:
                    samples[(history.size, path)].append(elapsed * 1000)
    return [Result(size, path, tuple(values)) for (size, path), values in samples.items()]


def time_once(history: History, path: str) -> float:
    """One fresh engine, one call; checks the answer so a wrong fast path cannot look fast."""
    scripts = history.cold_scripts if path == FULL_COLD else history.warm_scripts
    settings = EngineSettings(database_url=history.database_url, script_location=scripts)
    gc.collect()  # so one case does not pay for the garbage another left behind
    # The engine is built inside the timed region: a new deploy pays for that too.
    started = time.perf_counter()
    engine = MigrationEngine(settings)
    try:
        if path == DEPLOY:
            outcome = engine.migrate(target_heads=(history.head,))
        else:
            outcome = engine.status()
    finally:
        engine.close()
    elapsed = time.perf_counter() - started
    # A peek at the private cache: the claim measured is that the scripts stay unread.
    scripts_loaded = engine.scripts_loaded
    if outcome.classification.state is not DatabaseState.UP_TO_DATE:
        raise RuntimeError(f"{path} at {history.size}: state {outcome.classification.state}")
    if path == DEPLOY and scripts_loaded:
        raise RuntimeError(f"{path} at {history.size} loaded the revision scripts")
    return elapsed


def pyc_count(scripts: Path) -> int:
    return len(list((scripts / "versions").glob("__pycache__/*.pyc")))


def render(results: list[Result], bytecode: dict[int, tuple[int, int]], repeat: int) -> str:
    by_key = {(r.size, r.path): r for r in results}
    small, large = SIZES[0], SIZES[-1]
    baseline = by_key[(small, DEPLOY)].median
    lines = [
        f"Python {platform.python_version()}, alembic {alembic.__version__}, "
        f"SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"{WARMUPS} warm-up + {repeat} timed runs per row, a fresh MigrationEngine each.",
        "",
        "| revisions | path | median ms | p90 ms | median / baseline |",
        "|---:|---|---:|---:|---:|",
    ]
    for size in SIZES:
        for path in PATHS:
            r = by_key[(size, path)]
            lines.append(f"| {size} | {path} | {r.median:.1f} | {r.p90:.1f} | "
                         f"{r.median / baseline:.2f}x |")
    lines += ["", f"Baseline: deploy path at {small} revisions, median {baseline:.1f} ms.", ""]
    for path in PATHS:
        ratio = by_key[(large, path)].median / by_key[(small, path)].median
        lines.append(f"- {path}: {large} / {small} revisions = {ratio:.2f}x")
    for size in SIZES:
        deploy = by_key[(size, DEPLOY)].median
        cold = by_key[(size, FULL_COLD)].median / deploy
        warm = by_key[(size, FULL_WARM)].median / deploy
        lines.append(f"- full status / deploy path at {size} revisions: {cold:.1f}x without "
                     f".pyc, {warm:.1f}x with .pyc")
    for size, (cold_pyc, warm_pyc) in bytecode.items():
        lines.append(f"- .pyc files in versions/__pycache__ at {size} revisions after the run: "
                     f"{cold_pyc} in the no-.pyc copy, {warm_pyc} in the compiled copy")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
