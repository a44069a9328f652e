#!/usr/bin/env python3
"""The Lambda assets' sizes, before and after slimming, per package; and their cold import.

    python benchmarks/bundle_size.py [--repeat N] [--output FILE]

Builds, each in a scratch folder, with the bundler's own functions (cdk_app/bundling.py):

- before: what the bundler shipped before issue 15, pip's install plus our sources as they
  are, no slimming (`build_bundle` without `bundle_slim`);
- the migration function's bundle (`MIGRATION_BUNDLE`), twice, to show that two builds of the
  same inputs give the same bytes;
- the application function's bundles: the auto-migrating one (dev) and the check-only one
  (prod, no pglast).

Sizes: unzipped (the bytes of the files), zipped (deflate at zlib's default level, as CDK's
zip; the whole archive, headers included), and per package (a distribution's folders, its
`.dist-info` and its vendored `.libs`, zipped as their entries' compressed bytes).

Cold import from the bundle under the Lambda's Python 3.12 (LAMBDA_PYTHON, or pyenv's
3.12.1), as a new Lambda container would: the bundle first on sys.path, boto3 from the
runtime's pinned version (compiled, as the runtime's own files are assumed to be), the
standard library's own bytecode, ``-B -X importtime``, a fresh interpreter each time,
``--repeat`` runs after a warm-up. Two cases per handler: as shipped (the bundle has no
bytecode and /var/task is read-only, so every bundled module the import touches is compiled
on every cold start), and compiled (a copy of the bundle with `compileall`'s bytecode, as a
bundle shipping `.pyc` files would be). The driver (psycopg2) is timed after the migration
handler's import, as its first `create_engine` loads it (`import psycopg2.extras`, which imports
psycopg2). The baseline, in the same runs, is `import sqlalchemy` from the same bundle alike.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import publish  # benchmarks/report.py, beside this script

from cdk_app import bundle_slim, bundling
from localdev import deploy as local_deploy
from localdev.lambda_python import LambdaPythonMissing, find_lambda_python
from migration_resource.dsn import DRIVER

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPEAT = 5
IMPORT_WARMUPS = 1
BEFORE = "before (pip install + sources)"
MIGRATION = "migration function"
APP_AUTO = "application, auto-migrate (dev)"
APP_CHECK = "application, check only (prod)"
IMPORTS = {
    MIGRATION: "migration_resource.handler",
    APP_CHECK: "sample_app.handler",
}
BASELINE_MODULE = "sqlalchemy"
# What SQLAlchemy's dialect imports at the first create_engine for the driver a plain
# postgresql:// URL selects: psycopg2.extras (which imports psycopg2; one top-level line).
DRIVER_NAME = DRIVER.partition("+")[2]
DRIVER_MODULE = {"psycopg2": "psycopg2.extras"}.get(DRIVER_NAME, DRIVER_NAME)


# -- building -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    name: str
    folder: Path
    seconds: float
    report: bundle_slim.SlimReport | None


def build(name: str, folder: Path, spec: bundling.BundleSpec, *, slim: bool = True) -> Built:
    started = time.perf_counter()
    if slim:
        report: bundle_slim.SlimReport | None = bundling.build_bundle(REPO_ROOT, folder, spec)
    else:
        nothing = bundle_slim.SlimReport()
        with mock.patch.object(bundle_slim, "slim", lambda bundle: nothing):
            bundling.build_bundle(REPO_ROOT, folder, spec)
        report = None
    return Built(name, folder, time.perf_counter() - started, report)


# -- measuring ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    files: int
    unzipped: int
    zipped: int
    packages: dict[str, tuple[int, int]]  # package -> (unzipped, zipped entries)


def package_of(relative: str) -> str:
    """`sqlalchemy-2.1.9.dist-info/...`, `psycopg_binary.libs/...` -> their package."""
    top = relative.split("/", 1)[0]
    top = re.sub(r"-[^-]+\.dist-info$", "", top)
    top = top.removesuffix(".libs").removesuffix(".py")
    return top.lower().replace("-", "_")


def measure(folder: Path) -> Sizes:
    buffer = io.BytesIO()
    packages: dict[str, list[int]] = {}
    files = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            archive.write(path, name)
            sizes = packages.setdefault(package_of(name), [0, 0])
            sizes[0] += path.stat().st_size
            sizes[1] += archive.getinfo(name).compress_size
            files += 1
    return Sizes(files=files, unzipped=sum(s[0] for s in packages.values()),
                 zipped=len(buffer.getvalue()),
                 packages={name: (s[0], s[1]) for name, s in packages.items()})


# -- cold import under Python 3.12 ---------------------------------------------------------------
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S+)\s*$")


def import_ms(python: str, bundle: Path, runtime: Path, module: str, after: str = "") -> float:
    """Cumulative ms of `module`'s top-level import in a fresh interpreter from `bundle`,
    imported after `after` (a module whose import is not counted) when given."""
    path = [str(bundle), str(runtime)]
    first = f"import {after}; " if after else ""
    code = f"import sys; sys.path[:0] = {path!r}; {first}import {module}"
    done = subprocess.run(
        # -B: nothing is written, so a bundle without bytecode stays without
        [python, "-I", "-B", "-X", "importtime", "-c", code], cwd=bundle,
        capture_output=True, text=True, check=False, timeout=300,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1",
             "AWS_REGION": "eu-west-1"})
    if done.returncode != 0:
        raise RuntimeError(f"import {module} from {bundle} failed:\n{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match[2] == module:
            return int(match[1]) / 1000
    raise RuntimeError(f"no top-level import line for {module}")


@dataclass(frozen=True)
class ImportCase:
    label: str
    bundle: Path
    module: str
    compiled: bool
    after: str = ""  # imported first, not counted


def compiled_copy(python: str, folder: Path, target: Path) -> Path:
    """`folder` copied to `target` with every module compiled by `python` (compileall)."""
    if not target.exists():
        shutil.copytree(folder, target)
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", str(target)],
                       check=True, capture_output=True, timeout=600)
    return target


def measure_imports(python: str, runtime: Path, cases: list[ImportCase], repeat: int,
                    work: Path) -> dict[ImportCase, list[float]]:
    timed: dict[ImportCase, list[float]] = {case: [] for case in cases}
    for case in cases:
        assert case.compiled or not list(case.bundle.glob("**/__pycache__")), case.bundle
    for round_number in range(IMPORT_WARMUPS + repeat):
        for case in cases:  # round-robin: drift on the machine spreads over every case
            value = import_ms(python, case.bundle, runtime, case.module, case.after)
            if round_number >= IMPORT_WARMUPS:
                timed[case].append(value)
    return timed


# -- the report ------------------------------------------------------------------------------------
def mb(value: float) -> str:
    return f"{value / 1e6:.2f}"


def render(built: dict[str, Built], sizes: dict[str, Sizes], *, identical: bool,
           imports: dict[ImportCase, list[float]], repeat: int, python: str,
           compiled: Sizes) -> str:
    from importlib.metadata import version  # noqa: PLC0415

    lines = [f"Python {platform.python_version()} (pip {version('pip')}) builds, "
             f"{python} imports; {shutil.which('strip')} "
             f"({_first_line(['strip', '--version'])}); {os.cpu_count()} CPUs, "
             f"{platform.platform()}.", ""]
    order = [BEFORE, MIGRATION, APP_AUTO, APP_CHECK]
    before = sizes[BEFORE]
    lines += ["| asset | files | unzipped MB | zipped MB | zipped / before | build s |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in order:
        found = sizes[name]
        lines.append(f"| {name} | {found.files} | {mb(found.unzipped)} | {mb(found.zipped)} | "
                     f"{found.zipped / before.zipped:.2f}x | {built[name].seconds:.1f} |")
    packages = sorted(set().union(*(s.packages for s in sizes.values())),
                      key=lambda name: -before.packages.get(name, (0, 0))[0])
    lines += ["", "Per package, MB unzipped / zipped (a dash: not in that bundle):", "",
              "| package | " + " | ".join(order) + " |",
              "|---|" + "---:|" * len(order)]
    for package in packages:
        cells = []
        for name in order:
            pair = sizes[name].packages.get(package)
            cells.append(f"{mb(pair[0])} / {mb(pair[1])}" if pair else "-")
        lines.append(f"| {package} | " + " | ".join(cells) + " |")
    report = built[MIGRATION].report
    assert report is not None
    lines += ["", "What slimming left out of the migration bundle:", "",
              "| rule | files | MB |", "|---|---:|---:|"]
    for rule, count in report.removed_files.items():
        lines.append(f"| {rule} | {count} | {mb(report.removed_bytes[rule])} |")
    lines.append(f"| `strip --strip-unneeded` on {report.stripped} shared objects | | "
                 f"{mb(report.stripped_saved_bytes)} |")
    lines += ["", f"- two builds of the migration bundle, same bytes "
              f"(`bundle_slim.tree_digest`): {'yes' if identical else 'NO'}"]
    for name in (APP_AUTO, APP_CHECK):
        left_out = sorted(set(sizes[MIGRATION].packages) - set(sizes[name].packages))
        lines.append(f"- {name} leaves out: {', '.join(left_out)}")
    lines.append(f"- the migration bundle with bytecode (`compileall` by Python 3.12, as the "
                 f"compiled rows below use it; not what is shipped): {mb(compiled.unzipped)} MB "
                 f"unzipped, {mb(compiled.zipped)} MB zipped")
    lines += ["", f"Cold import from the bundle under Python 3.12, `-X importtime`: "
              f"{IMPORT_WARMUPS} warm-up + {repeat} runs per case, round-robin, a fresh "
              "interpreter each; cumulative ms of the module's top-level line.", "",
              "| import | bytecode | median ms | min ms | max ms | / `import sqlalchemy` alike |",
              "|---|---|---:|---:|---:|---:|"]
    baselines = {case.compiled: statistics.median(values) for case, values in imports.items()
                 if case.module == BASELINE_MODULE}
    for case, values in imports.items():
        median = statistics.median(values)
        lines.append(f"| {case.label} | {'compiled' if case.compiled else 'none (as shipped)'}"
                     f" | {median:.0f} | {min(values):.0f} | {max(values):.0f} | "
                     f"{median / baselines[case.compiled]:.2f}x |")
    return "\n".join(lines)


def _first_line(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout.splitlines() or ["?"])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed imports per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    started = time.perf_counter()
    try:
        python = find_lambda_python()
    except LambdaPythonMissing as missing:
        parser.error(str(missing))
    work = Path(tempfile.mkdtemp(prefix="bundle-bench-"))
    try:
        specs: list[tuple[str, bundling.BundleSpec, bool]] = [
            (BEFORE, bundling.MIGRATION_BUNDLE, False),
            (MIGRATION, bundling.MIGRATION_BUNDLE, True),
            (APP_AUTO, bundling.application_bundle(auto_migrate=True), True),
            (APP_CHECK, bundling.application_bundle(auto_migrate=False), True),
        ]
        built: dict[str, Built] = {}
        for index, (name, spec, slim) in enumerate(specs):
            print(f"Building {name}...", file=sys.stderr)
            built[name] = build(name, work / f"bundle-{index}", spec, slim=slim)
        again = build("again", work / "bundle-again", bundling.MIGRATION_BUNDLE)
        identical = (bundle_slim.tree_digest(again.folder)
                     == bundle_slim.tree_digest(built[MIGRATION].folder))
        sizes = {name: measure(found.folder) for name, found in built.items()}
        runtime = compiled_copy(python, local_deploy.lambda_runtime(
            local_deploy.LocalEnvironment(local_dir=REPO_ROOT / ".local", python=python))[1],
            work / "runtime")
        print("Timing cold imports under Python 3.12...", file=sys.stderr)
        folders = {(name, compiled): compiled_copy(python, built[name].folder,
                                                   work / f"compiled-{index}")
                   if compiled else built[name].folder
                   for index, name in enumerate(IMPORTS) for compiled in (False, True)}
        handler_module = IMPORTS[MIGRATION]
        cases: list[ImportCase] = []
        for compiled in (False, True):
            cases += [ImportCase(f"`import {module}` ({name})", folders[name, compiled], module,
                                 compiled)
                      for name, module in IMPORTS.items()]
            cases.append(ImportCase(
                f"`import {DRIVER_MODULE}` after `import {handler_module}` ({MIGRATION})",
                folders[MIGRATION, compiled], DRIVER_MODULE, compiled, after=handler_module))
            cases.append(ImportCase(f"`import {BASELINE_MODULE}` ({MIGRATION})",
                                    folders[MIGRATION, compiled], BASELINE_MODULE, compiled))
        imports = measure_imports(python, runtime, cases, args.repeat, work)
        report = render(built, sizes, identical=identical, imports=imports,
                        repeat=args.repeat, python=python,
                        compiled=measure(folders[MIGRATION, True]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return publish(report, args.output, started)


if __name__ == "__main__":
    sys.exit(main())
