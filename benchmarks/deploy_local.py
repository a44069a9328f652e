#!/usr/bin/env python3
"""Where the time of `make deploy-local` goes: synth, then the played deploy, step by step.

    python benchmarks/deploy_local.py [--repeat N] [--output FILE]

Everything runs in a scratch folder with its own ports (never the checkout's `.local` or
`cdk.out`), as a user's commands would:

- baseline: `npx cdk synth --quiet -c stage=dev -o <scratch>/cdk.out` with the bundle already
  in that folder (a warm synth, which every `make deploy-local` runs first);
- Create: `python -m localdev.deploy deploy` on an empty folder (initdb, PostgreSQL and the
  local AWS endpoint started, six revisions applied), once;
- no change: the same command again, `--repeat` times;
- Update with nothing to apply: the last deployed `MigrationsHash` in the deploy state is
  altered before each run, so the deploy sends an Update that finds the database up to date
  (what a change to the engine's code costs on a database already at head), `--repeat` times;
- after a restart: the endpoint stopped (as by a reboot), then a no-change deploy, which
  starts it again and re-creates moto's records, `--repeat` times;
- admin status: `scripts/remote_admin.py --stack-name ... status` through the endpoint (one
  cold Lambda process per invocation), `--repeat` times.

Each is a new process timed from outside (wall clock), like a user's command. Ratios are
against the warm synth's median measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from report import publish  # noqa: E402 - benchmarks/report.py, beside this script

from localdev.local_aws import LocalAwsFiles, stop  # noqa: E402
from localdev.local_cloudformation import CREDENTIALS  # noqa: E402
from localdev.postgres import free_port  # noqa: E402

STACK = "DbMigrations-dev-Application"


@dataclass(frozen=True)
class Case:
    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass(frozen=True)
class Scratch:
    folder: Path
    postgres_port: int
    aws_port: int

    @property
    def cdk_out(self) -> Path:
        return self.folder / "cdk.out"

    @property
    def local_dir(self) -> Path:
        return self.folder / "local"

    def environment(self) -> dict[str, str]:
        node_major = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                    check=True).stdout.strip().lstrip("v").split(".")[0]
        return {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true",
                "AWS_EC2_METADATA_DISABLED": "true",
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": node_major,
                "JSII_SILENCE_WARNING_DEPRECATED_NODE": "1"}

    def synth(self) -> None:
        run(["npx", "cdk", "synth", "--no-notices", "--quiet", "-c", "stage=dev",
             "-o", str(self.cdk_out)], self.environment())

    def deploy(self, command: str = "deploy") -> str:
        return run([sys.executable, "-m", "localdev.deploy", command, "--stage", "dev",
                    "--cdk-out", str(self.cdk_out), "--local-dir", str(self.local_dir),
                    "--postgres-port", str(self.postgres_port),
                    "--aws-port", str(self.aws_port)], self.environment())

    def admin_status(self) -> str:
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("AWS_")}
        environment.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.aws_port}",
                           AWS_DEFAULT_REGION="us-east-1")
        return run([sys.executable, "scripts/remote_admin.py", "--stack-name", STACK,
                    "status"], environment)

    def alter_deployed_hash(self) -> None:
        state_file = self.local_dir / "deploy-state-dev.json"
        state = json.loads(state_file.read_text())
        state["properties"]["MigrationsHash"] = f"benchmark-{time.monotonic_ns()}"
        state_file.write_text(json.dumps(state))

    def stop_endpoint(self) -> None:
        stop(LocalAwsFiles.under(self.local_dir))


def run(argv: list[str], environment: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def timed(action: Callable[[], object], *, before: Callable[[], object] | None = None,
          expect: str | None = None, repeat: int = 1) -> list[float]:
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        output = action()
        samples.append(time.perf_counter() - started)
        if expect is not None and expect not in str(output):
            raise SystemExit(f"expected {expect!r} in:\n{output}")
    return samples


def measure(scratch: Scratch, repeat: int) -> list[Case]:
    print("Synthesizing once (the bundle is built into the scratch cdk.out)...", file=sys.stderr)
    scratch.synth()
    print("Timing...", file=sys.stderr)
    synth = timed(scratch.synth, repeat=repeat)
    create = timed(scratch.deploy, expect="CREATE_COMPLETE")
    no_change = timed(scratch.deploy, expect="no changes", repeat=repeat)
    update = timed(scratch.deploy, before=scratch.alter_deployed_hash, expect="UPDATE_COMPLETE",
                   repeat=repeat)
    restart = timed(scratch.deploy, before=scratch.stop_endpoint, expect="no changes",
                    repeat=repeat)
    status = timed(scratch.admin_status, expect="up_to_date", repeat=repeat)
    return [
        Case("warm synth (`npx cdk synth`, bundle reused): baseline", synth),
        Case("Create on an empty folder (initdb, servers, 6 revisions)", create),
        Case("no change (`... (local): no changes`)", no_change),
        Case("Update with nothing to apply (database at head)", update),
        Case("no change after the endpoint stopped (restart, moto records)", restart),
        Case("`remote_admin.py --stack-name ... status` through the endpoint", status),
    ]


def render(cases: list[Case], repeat: int) -> str:
    baseline = cases[0].median
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        f"Each case {repeat} runs (Create once); wall time of a new process, seconds.",
        "",
        "| step | median | min | max | / warm synth |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        lines.append(f"| {case.name} | {case.median:.2f} | {min(case.seconds):.2f} | "
                     f"{max(case.seconds):.2f} | {case.median / baseline:.2f}x |")
    no_change = cases[2].median
    lines += ["", f"A no-change `make deploy-local` is about synth + no change: "
                  f"{baseline + no_change:.1f} s, of which the played deploy is "
                  f"{no_change / (baseline + no_change):.0%}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat must be at least 2")
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="deploy-local-bench-"))
    folder.chmod(0o755)  # the postgres user must reach the data folder when we are root
    scratch = Scratch(folder=folder, postgres_port=free_port(), aws_port=free_port())
    try:
        report = render(measure(scratch, args.repeat), args.repeat)
    finally:
        scratch.deploy("destroy")
        shutil.rmtree(folder, ignore_errors=True)
    return publish(report, args.output, started)


if __name__ == "__main__":
    sys.exit(main())
