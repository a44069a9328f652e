"""How every benchmark hands over its report: stdout, the run's duration, an optional file."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def publish(report: str, output: Path | None, started: float) -> int:
    """Print the report (the part docs/BENCHMARKS.md quotes) and write it to `output`."""
    print(report)
    print(f"(whole run: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if output:
        output.write_text(report + "\n")
    return 0
