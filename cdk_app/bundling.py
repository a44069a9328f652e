"""The Lambda bundles, one per function, built without Docker.

What goes in:
- the runtime packages of `migration_resource/requirements.txt`, installed by pip for the
  Lambda's platform (`manylinux2014_x86_64`, CPython 3.12, binary wheels only, no .pyc),
  less the ones the function never imports (`BundleSpec.leaves_out`);
- `migration_resource/` and `sample_app/` (alembic/env.py imports `sample_app.models`);
- the migration scripts (`alembic/env.py`, `script.py.mako`, `versions/`) copied to
  `migrations/`: pip puts the alembic *library* at `<bundle>/alembic/`, and
  `migration_resource.settings` looks for the scripts in `migrations/` first.
Then `bundle_slim` leaves out what never runs in Lambda (build sources, type stubs, tests,
caches, install bookkeeping) and strips the shared objects.

Two bundles:
- the migration function's (`MIGRATION_BUNDLE`): everything above;
- the application function's (`application_bundle`): without crhelper (only the custom
  resource uses it) and, unless the stage auto-migrates, without pglast (the change gate,
  which only a migration runs; a check-only application never imports it).

The asset hash is computed here from exactly those files, the requirements the bundle
installs, the pip options, the bundle's spec and the bundler's own source (this module and
`bundle_slim.py`), so CDK reuses `cdk.out/asset.<hash>` until one of them changes (a warm
synth does not run pip), and a change to the bundler itself rebuilds the bundle.
Docker (the Lambda build image) is only the fallback when the local build fails.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

from cdk_app import bundle_slim
from cdk_app.lambda_platform import PIP_OPTIONS
from migration_resource.checksums import history_digest
from migration_resource.revisions import RevisionCatalogue

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.X86_64
REQUIREMENTS = "migration_resource/requirements.txt"
PACKAGES = ("migration_resource", "sample_app")
SCRIPTS_SOURCE = "alembic"  # in the repository
SCRIPTS_TARGET = "migrations"  # in the bundle (not "alembic": that is the library)
SCRIPT_FILES = ("env.py", "script.py.mako")
SKIPPED_PARTS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")

MIGRATION_HANDLER = "migration_resource.handler.handler"
SAMPLE_APP_HANDLER = "sample_app.handler.handler"
# The bundler's own code: a change to either rebuilds every bundle.
BUNDLER_FILES = (Path(__file__), Path(bundle_slim.__file__))


@dataclass(frozen=True)
class BundleSpec:
    """One function's bundle: which of the runtime requirements it leaves out, and why."""

    name: str
    leaves_out: tuple[str, ...] = ()  # requirement names, as in REQUIREMENTS
    why: str = ""

    def requirements(self, project_root: Path) -> tuple[str, ...]:
        """The pinned requirement lines this bundle installs, in the file's order."""
        left_out = {_canonical(name) for name in self.leaves_out}
        lines = [line.split("#", 1)[0].strip()
                 for line in (project_root / REQUIREMENTS).read_text().splitlines()]
        return tuple(line for line in lines
                     if line and _canonical(_requirement_name(line)) not in left_out)


MIGRATION_BUNDLE = BundleSpec("migration")


def application_bundle(*, auto_migrate: bool) -> BundleSpec:
    """The sample application's bundle: what its imports and `ensure_schema` need."""
    if auto_migrate:
        return BundleSpec("application", leaves_out=("crhelper",),
                          why="crhelper serves only the custom resource")
    return BundleSpec("application", leaves_out=("crhelper", "pglast"),
                      why="crhelper serves only the custom resource; pglast is the change "
                          "gate, which only a migration runs, and this stage's application "
                          "only checks the schema (autoMigrate false)")


def _requirement_name(line: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    if match is None:
        raise ValueError(f"{REQUIREMENTS}: cannot read a package name from {line!r}")
    return match.group(0)


def _canonical(name: str) -> str:
    # PEP 503: case, '-', '_' and '.' do not distinguish two package names.
    return re.sub(r"[-_.]+", "-", name).lower()


def _files(folder: Path, pattern: str = "**/*") -> Iterator[Path]:
    for path in sorted(folder.glob(pattern)):
        relative = path.relative_to(folder)
        if (path.is_file() and not SKIPPED_PARTS & set(relative.parts)
                and not path.name.endswith(SKIPPED_SUFFIXES)):
            yield path


def bundle_sources(project_root: Path) -> list[tuple[Path, str]]:
    """(source file, path inside the bundle) for every file copied from the repository."""
    sources: list[tuple[Path, str]] = []
    for package in PACKAGES:
        sources += [(path, path.relative_to(project_root).as_posix())
                    for path in _files(project_root / package)]
    scripts = project_root / SCRIPTS_SOURCE
    for name in SCRIPT_FILES:
        sources.append((scripts / name, f"{SCRIPTS_TARGET}/{name}"))
    sources += [(path, f"{SCRIPTS_TARGET}/versions/{path.relative_to(scripts / 'versions')}")
                for path in _files(scripts / "versions", "*.py")]
    return sources


def _digest(items: Sequence[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in items:
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def migrations_hash(project_root: Path) -> str:
    """SHA-256 of what decides what a migration run does: `alembic/versions/*.py`,
    `alembic/env.py` and the engine (`migration_resource/**/*.py`).

    It is the custom resource's `MigrationsHash` property: any change to those files changes
    it, so CloudFormation sends an Update and the migration Lambda runs.
    """
    scripts = project_root / SCRIPTS_SOURCE
    files = [scripts / "env.py", *_files(scripts / "versions", "*.py"),
             *_files(project_root / "migration_resource", "**/*.py")]
    return _digest([(path.relative_to(project_root).as_posix(), path.read_bytes())
                    for path in files])


def bundle_fingerprint(project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE) -> str:
    """The asset hash: every bundled source file, the requirements the bundle installs, the
    pip options, the bundle's spec and the bundler's own code."""
    items = [(target, source.read_bytes()) for source, target in bundle_sources(project_root)]
    items.append((REQUIREMENTS, "\n".join(spec.requirements(project_root)).encode()))
    items.append(("pip-options", " ".join(PIP_OPTIONS).encode()))
    items.append(("bundle", f"{spec.name}\0{','.join(spec.leaves_out)}".encode()))
    items += [(f"bundler/{path.name}", path.read_bytes()) for path in BUNDLER_FILES]
    return _digest(items)


def target_revision(project_root: Path) -> str:
    """The scripts' head revision id, resolved at synth (a repository with several heads
    fails synth with alembic's advice to merge them)."""
    return RevisionCatalogue.load(project_root / SCRIPTS_SOURCE).head


def scripts_history_digest(project_root: Path) -> str:
    return history_digest(project_root / SCRIPTS_SOURCE / "versions")


def copy_sources(project_root: Path, output_dir: Path) -> None:
    for source, target in bundle_sources(project_root):
        destination = output_dir / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def build_bundle(project_root: Path, out: Path, spec: BundleSpec,
                 python: str = sys.executable) -> bundle_slim.SlimReport:
    """pip install, our sources, then `bundle_slim`: the bundle `spec` describes, in `out`.

    Raises BundleError when pip fails or `strip` is missing.
    """
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               *PIP_OPTIONS, "--target", str(out), *spec.requirements(project_root)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundleError(f"pip install for the {spec.name} bundle failed:\n"
                          f"{result.stderr.strip()[-2000:]}")
    copy_sources(project_root, out)
    try:
        return bundle_slim.slim(out)
    except bundle_slim.SlimError as error:
        raise BundleError(str(error)) from None


class BundleError(RuntimeError):
    """The bundle could not be built locally; the message says why."""


@jsii.implements(cdk.ILocalBundling)
class LocalPythonBundler:
    """Builds the bundle with the pip of the Python running the CDK app; no Docker.

    Returns False (so CDK falls back to Docker) only when the local build fails (pip cannot
    install the wheels, or `strip` is missing), after saying why on stderr.
    """

    def __init__(self, project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE,
                 python: str = sys.executable) -> None:
        self.project_root = project_root
        self.spec = spec
        self.python = python

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        try:
            build_bundle(self.project_root, Path(output_dir), self.spec, self.python)
        except BundleError as error:
            print(f"Local bundling failed, trying Docker: {error}", file=sys.stderr)
            return False
        return True


def docker_command(spec: BundleSpec = MIGRATION_BUNDLE,
                   project_root: Path | None = None) -> list[str]:
    """The fallback: the same layout built inside the Lambda build image, slimmed by the same
    `bundle_slim.py` (the project is mounted at /asset-input, the working folder)."""
    root = project_root or Path(__file__).resolve().parents[1]
    scripts = f"/asset-output/{SCRIPTS_TARGET}"
    requirements = " ".join(f"'{line}'" for line in spec.requirements(root))
    return ["bash", "-c", " && ".join([
        f"pip install --no-compile --only-binary=:all: {requirements} -t /asset-output",
        f"cp -r {' '.join(PACKAGES)} /asset-output/",
        f"mkdir -p {scripts}/versions",
        f"cp {' '.join(f'{SCRIPTS_SOURCE}/{name}' for name in SCRIPT_FILES)} {scripts}/",
        f"cp {SCRIPTS_SOURCE}/versions/*.py {scripts}/versions/",
        "python cdk_app/bundle_slim.py /asset-output",
    ])]


def bundle_code(project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE) -> lambda_.Code:
    """The `Code` of one bundle: its own asset, rebuilt only when its fingerprint changes."""
    return lambda_.Code.from_asset(
        str(project_root),
        asset_hash=bundle_fingerprint(project_root, spec),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            image=RUNTIME.bundling_image,
            command=docker_command(spec, project_root),
            # jsii calls try_bundle(output_dir, options) with the options as one object
            local=cast(cdk.ILocalBundling, LocalPythonBundler(project_root, spec)),
        ),
    )
