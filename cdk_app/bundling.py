"""The Lambda bundle (migration and sample-app functions share it), built without Docker.

What goes in:
- the runtime packages of `migration_resource/requirements.txt`, installed by pip for the
  Lambda's platform (`manylinux2014_x86_64`, CPython 3.12, binary wheels only, no .pyc);
- `migration_resource/` and `sample_app/` (alembic/env.py imports `sample_app.models`);
- the migration scripts (`alembic/env.py`, `script.py.mako`, `versions/`) copied to
  `migrations/`: pip puts the alembic *library* at `<bundle>/alembic/`, and
  `migration_resource.settings` looks for the scripts in `migrations/` first.

The asset hash is computed here from exactly those files, the requirements, the pip options
and this module's own source, so CDK reuses `cdk.out/asset.<hash>` until one of them changes
(a warm synth does not run pip), and a change to the bundler itself rebuilds the bundle.
Docker (the Lambda build image) is only the fallback when the local pip install fails.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

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


def bundle_fingerprint(project_root: Path) -> str:
    """The asset hash: every bundled source file, the requirements, the pip options and this
    bundler's own code."""
    items = [(target, source.read_bytes()) for source, target in bundle_sources(project_root)]
    items.append((REQUIREMENTS, (project_root / REQUIREMENTS).read_bytes()))
    items.append(("pip-options", " ".join(PIP_OPTIONS).encode()))
    items.append(("bundler", Path(__file__).read_bytes()))
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


@jsii.implements(cdk.ILocalBundling)
class LocalPythonBundler:
    """Builds the bundle with the pip of the Python running the CDK app; no Docker.

    Returns False (so CDK falls back to Docker) only when pip cannot install the wheels,
    after saying why on stderr.
    """

    def __init__(self, project_root: Path, python: str = sys.executable) -> None:
        self.project_root = project_root
        self.python = python

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        out = Path(output_dir)
        command = [self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   *PIP_OPTIONS, "--target", str(out),
                   "--requirement", str(self.project_root / REQUIREMENTS)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"Local bundling failed ({' '.join(command[2:5])} ...), trying Docker:\n"
                  f"{result.stderr.strip()[-2000:]}", file=sys.stderr)
            return False
        copy_sources(self.project_root, out)
        return True


def docker_command() -> list[str]:
    """The fallback: the same layout built inside the Lambda build image."""
    scripts = f"/asset-output/{SCRIPTS_TARGET}"
    return ["bash", "-c", " && ".join([
        f"pip install --no-compile --only-binary=:all: -r {REQUIREMENTS} -t /asset-output",
        f"cp -r {' '.join(PACKAGES)} /asset-output/",
        f"mkdir -p {scripts}/versions",
        f"cp {' '.join(f'{SCRIPTS_SOURCE}/{name}' for name in SCRIPT_FILES)} {scripts}/",
        f"cp {SCRIPTS_SOURCE}/versions/*.py {scripts}/versions/",
        "find /asset-output -name __pycache__ -prune -exec rm -rf {} +",
    ])]


def bundle_code(project_root: Path) -> lambda_.Code:
    """One `Code` for both functions: same source and options, so one asset."""
    return lambda_.Code.from_asset(
        str(project_root),
        asset_hash=bundle_fingerprint(project_root),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            image=RUNTIME.bundling_image,
            command=docker_command(),
            # jsii calls try_bundle(output_dir, options) with the options as one object
            local=cast(cdk.ILocalBundling, LocalPythonBundler(project_root)),
        ),
    )
