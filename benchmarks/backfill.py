#!/usr/bin/env python3
"""The batched backfill helper on a table of a million rows, against one UPDATE of it all.

    python benchmarks/backfill.py [--rows N] [--cases ROWS:PAUSE,...] [--output FILE]

Each case gets its own fresh table of ``--rows`` rows (default 1,000,000: an id, an email, a
NULL ``email_domain`` to fill, a counter), created, vacuumed and analysed untimed. Then:

1. baseline: ``UPDATE t SET email_domain = lower(split_part(email, '@', 2)) WHERE
   email_domain IS NULL`` in one transaction, as a plain revision would write it;
2. ``migration_resource.online.backfill`` with the same SET and WHERE, for each
   ``batch_rows:pause_seconds`` of ``--cases`` (default ``1000:0.1`` (the helper's defaults),
   ``1000:0``, ``10000:0``), through Alembic's ``Operations`` on its own connection.

Measured for each: rows per second (rows updated / wall time), and the longest time a row
stayed locked, two ways. On the server: the baseline's transaction from its start to its
COMMIT (``clock_timestamp() - transaction_timestamp()`` just before it, plus the COMMIT), and
for the helper the longest batch transaction as the server timed it (the statement reports
``clock_timestamp() - transaction_timestamp()``; each batch is one autocommit statement). From
the application's side: a probe session updates a random row of the table every 10 ms while
the case runs and records how long its UPDATE took (its COMMIT, which waits for the disk,
not for a lock, is left out); its longest is the longest a write was blocked. Every case is
checked: every row filled, each exactly as the SQL says.

Ratios are against the baseline measured in the same run. The server at DATABASE_URL is used
when set (a database is created and dropped there); otherwise a throwaway server is started
with PostgreSQL's durable defaults (``fsync``, ``synchronous_commit`` and
``full_page_writes`` on, unlike the tests' server), so that each batch's COMMIT costs what it
costs on a real disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from report import DurablePostgres, publish  # benchmarks/report.py, beside this script

from localdev.postgres import database_server
from migration_resource.dsn import normalize_url
from migration_resource.online import backfill

DEFAULT_ROWS = 1_000_000
DEFAULT_CASES = "1000:0.1,1000:0,10000:0"
SET = {"email_domain": "lower(split_part(email, '@', 2))"}
WHERE = "email_domain IS NULL"
PROBE_INTERVAL_SECONDS = 0.01


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    lock_seconds: float  # the longest a row stayed locked, as the server timed it
    probe_waits: list[float] = field(default_factory=list)
    batches: int = 1

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def probe_max(self) -> float:
        return max(self.probe_waits, default=0.0)

    @property
    def probe_p99(self) -> float:
        if len(self.probe_waits) < 2:
            return self.probe_max
        return statistics.quantiles(self.probe_waits, n=100, method="inclusive")[98]


def create_table(engine: sa.Engine, table: str, rows: int) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, email text NOT NULL, "
            "email_domain text, touched int NOT NULL DEFAULT 0)")
        conn.exec_driver_sql(
            f"INSERT INTO {table} (id, email) SELECT g, 'user' || g || '@Example' || mod(g, 97) "
            f"|| '.COM' FROM generate_series(1, {rows}) g")
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def check_table(engine: sa.Engine, table: str, rows: int) -> None:
    with engine.connect() as conn:
        wrong = conn.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE email_domain IS DISTINCT FROM "
            "lower(split_part(email, '@', 2))").scalar()
        total = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
    if wrong or total != rows:
        raise SystemExit(f"{table}: {wrong} rows not backfilled as expected of {total}")


@contextmanager
def probe(engine: sa.Engine, table: str, rows: int, waits: list[float]) -> Iterator[None]:
    """A writer updating a random row every 10 ms; how long each UPDATE took is recorded."""
    stop = threading.Event()

    def run() -> None:
        chooser = random.Random(16)  # noqa: S311 - which rows the probe writes, no secret
        with engine.connect() as conn:
            statement = sa.text(f"UPDATE {table} SET touched = touched + 1 WHERE id = :id")
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(statement, {"id": chooser.randint(1, rows)})
                waits.append(time.perf_counter() - started)  # the UPDATE: its row lock wait
                conn.commit()  # not timed: a COMMIT waits for the disk, not for a lock
                stop.wait(PROBE_INTERVAL_SECONDS)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.2)  # the probe is writing before the case starts
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=600)


def baseline(engine: sa.Engine, table: str, rows: int) -> Result:
    waits: list[float] = []
    set_sql = ", ".join(f"{column} = {expression}" for column, expression in SET.items())
    with probe(engine, table, rows, waits), engine.connect() as conn:
        started = time.perf_counter()
        updated = conn.exec_driver_sql(
            f"UPDATE {table} SET {set_sql} WHERE {WHERE}").rowcount
        held = conn.exec_driver_sql(
            "SELECT CAST(EXTRACT(epoch FROM clock_timestamp() - transaction_timestamp()) AS "
            "double precision)").scalar_one()
        committing = time.perf_counter()
        conn.commit()
        done = time.perf_counter()
    return Result("one UPDATE of the whole table (baseline)", updated, done - started,
                  float(held) + (done - committing), waits)


def helper(engine: sa.Engine, table: str, rows: int, batch_rows: int, pause: float) -> Result:
    waits: list[float] = []
    with probe(engine, table, rows, waits), engine.connect() as conn:
        operations = Operations(MigrationContext.configure(conn))
        started = time.perf_counter()
        result = backfill(operations, table=table, set_=SET, where=WHERE,
                          batch_rows=batch_rows, pause_seconds=pause, revision="benchmark",
                          log_every=10**9)
        done = time.perf_counter()
    name = f"`backfill(batch_rows={batch_rows}, pause_seconds={pause:g})`"
    return Result(name, result.rows, done - started, result.longest_batch_seconds, waits,
                  result.batches)


def _helper_case(
    engine: sa.Engine, rows: int, batch_rows: int, pause: float, table: str
) -> Result:
    return helper(engine, table, rows, batch_rows, pause)


def parse_cases(text: str) -> list[tuple[int, float]]:
    cases = []
    for item in text.split(","):
        batch, _, pause = item.partition(":")
        cases.append((int(batch), float(pause or 0)))
    return cases


def report(results: list[Result], rows: int, server: str, fsync: str) -> str:
    base = results[0]
    lines = [
        f"Python {platform.python_version()}, SQLAlchemy {sa.__version__}, {server} "
        f"({fsync}), {os.cpu_count()} CPUs, {platform.platform()}; each case on a fresh "
        f"table of {rows:,} rows; a probe session updates a random row every "
        f"{PROBE_INTERVAL_SECONDS * 1000:.0f} ms.",
        "",
        "| case | batches | s | rows/s | rows/s vs baseline | longest lock (server) "
        "| vs baseline | probe's longest wait | probe p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.batches:,} | {r.seconds:.1f} | {r.rows_per_second:,.0f} | "
            f"{r.rows_per_second / base.rows_per_second:.2f}x | {r.lock_seconds * 1000:,.1f} ms | "
            f"{r.lock_seconds / base.lock_seconds:.4f}x | {r.probe_max * 1000:,.1f} ms | "
            f"{r.probe_p99 * 1000:,.1f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows in each table (default {DEFAULT_ROWS:,})")
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help=f"batch_rows:pause_seconds of the helper runs (default "
                             f"{DEFAULT_CASES})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    cases = parse_cases(args.cases)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    work.chmod(0o755)  # the postgres user must reach the data folder when we are root
    name = f"bench_backfill_{uuid.uuid4().hex[:8]}"
    try:
        with database_server(work, server=DurablePostgres, kind=" (durable settings)") as url:
            admin = sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT",
                                     poolclass=sa.NullPool)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                server = "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar())
            engine = sa.create_engine(sa.make_url(normalize_url(url)).set(database=name),
                                      poolclass=sa.NullPool)
            try:
                with engine.connect() as conn:
                    fsync = ", ".join(
                        f"{setting} {conn.exec_driver_sql(f'SHOW {setting}').scalar()}"
                        for setting in ("fsync", "synchronous_commit", "full_page_writes"))
                results = []
                runs: list[tuple[str, Callable[[str], Result]]] = [
                    ("baseline", lambda table: baseline(engine, table, args.rows))]
                for batch_rows, pause in cases:
                    runs.append((f"b{batch_rows}_{int(pause * 1000)}",
                                 partial(_helper_case, engine, args.rows, batch_rows, pause)))
                for label, run in runs:
                    table = f"items_{label}"
                    print(f"Preparing {table} ({args.rows:,} rows)...", file=sys.stderr)
                    create_table(engine, table, args.rows)
                    print(f"Running {label}...", file=sys.stderr)
                    result = run(table)
                    check_table(engine, table, args.rows)
                    results.append(result)
                    with engine.connect().execution_options(
                            isolation_level="AUTOCOMMIT") as conn:
                        conn.exec_driver_sql(f"DROP TABLE {table}")
            finally:
                engine.dispose()
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return publish(report(results, args.rows, server, fsync), args.output, started)


if __name__ == "__main__":
    raise SystemExit(main())
