"""What the benchmarks share: how a report is handed over (stdout, the run's duration, an
optional file) and how an engine answer is checked and summed up."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from localdev.postgres import LocalPostgres

if TYPE_CHECKING:
    from migration_resource.outcomes import Outcome


def publish(report: str, output: Path | None, started: float) -> int:
    """Print the report (the part docs/BENCHMARKS.md quotes) and write it to `output`."""
    print(report)
    print(f"(whole run: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if output:
        output.write_text(report + "\n")
    return 0


class CaseFailed(Exception):
    """A case's answer was wrong or refused: its time would mean nothing."""


def expect_ok(outcome: Outcome) -> None:
    if not outcome.ok:
        raise CaseFailed(outcome.message)


def findings_summary(outcome: Outcome) -> str:
    """The change gate's findings of an engine answer, counted by rule."""
    rules = Counter(finding["rule"] for finding in outcome.findings)
    if not rules:
        return "no gate findings"
    shown = ", ".join(f"{rule} {n}" for rule, n in rules.most_common())
    return f"{sum(rules.values())} gate findings ({shown})"


class DurablePostgres(LocalPostgres):
    """The throwaway server with PostgreSQL's durable defaults: a COMMIT waits for the disk."""

    def start(self) -> None:
        self._prepare_data_dir()
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        self._run(["pg_ctl", "-D", str(self.data_dir), "-o", options, "-l",
                   str(self.data_dir / "server.log"), "-w", "start"], check=True)
