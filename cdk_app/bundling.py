"""The Lambda bundles, one per function, built without Docker.

What goes in:
- the runtime packages of `migration_resource/requirements.txt`, installed by pip for the
  Lambda's platform (`manylinux2014_x86_64`, CPython 3.12, binary wheels only, no .pyc),
  less the ones the function never imports (`BundleSpec.leaves_out`);
- the packages of the spec (`BundleSpec.packages`): `migration_resource/` (the engine, with
  its own Alembic environment in `migration_resource/alembic_env/`), and for the sample
  application's function `sample_app/`;
- the revision files of the migrations folder (`migrations`: a Flask-Migrate or plain Alembic
  script directory, whose `versions/` is taken, or a folder of revision files; by default
  the repository's `alembic/`), copied to `migrations/versions/`, where the engine's default
  discovery finds them (`migration_resource.settings`). Not `alembic/`: pip puts the alembic
  *library* at `<bundle>/alembic/`. The folder's own env.py is not packed: the engine never
  runs it. Beside them, `code-checksums.json` (`migration_resource.checksums.write_manifest`):
  their code checksums, computed here once rather than by every cold start.
Then `bundle_slim` leaves out what never runs in Lambda (build sources, type stubs, tests,
caches, install bookkeeping) and strips the shared objects.

Two bundles:
- the migration function's (`MIGRATION_BUNDLE`): the engine and the revisions; a team whose
  MIGRATION_METADATA names its own package adds it (`MIGRATION_BUNDLE.including("myapp")`);
- the application function's (`application_bundle`): `sample_app/` too, without crhelper
  (only the custom resource uses it) and, unless the stage auto-migrates, without pglast
  (the change gate, which only a migration runs; a check-only application never imports it).

The asset hash is computed here from exactly those files, the requirements the bundle
installs, the pip options, the bundle's spec and the bundler's own source (this module and
`bundle_slim.py`), so CDK reuses `cdk.out/asset.<hash>` until one of them changes (a warm
synth does not run pip), and a change to the bundler itself rebuilds the bundle.
Docker (the Lambda build image) is only the fallback when the local build fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
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
from migration_resource.checksums import history_digest, write_manifest
from migration_resource.revisions import RevisionCatalogue
from migration_resource.settings import versions_location

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.X86_64
REQUIREMENTS = "migration_resource/requirements.txt"
ENGINE_PACKAGES = ("migration_resource",)
SAMPLE_APP_PACKAGES = ("migration_resource", "sample_app")
SCRIPTS_SOURCE = "alembic"  # the repository's migrations folder: the default
SCRIPTS_TARGET = "migrations"  # in the bundle (not "alembic": that is the library)
VERSIONS_TARGET = f"{SCRIPTS_TARGET}/versions"
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
    # Folders of the project copied into the bundle as they are (Python packages).
    packages: tuple[str, ...] = ENGINE_PACKAGES

    def including(self, *packages: str) -> BundleSpec:
        """This bundle with more of the project's packages (e.g. the one MIGRATION_METADATA
        imports)."""
        extra = tuple(p for p in packages if p not in self.packages)
        return dataclasses.replace(self, packages=self.packages + extra)

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
                          why="crhelper serves only the custom resource",
                          packages=SAMPLE_APP_PACKAGES)
    return BundleSpec("application", leaves_out=("crhelper", "pglast"),
                      packages=SAMPLE_APP_PACKAGES,
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


def migrations_folder(project_root: Path, migrations: Path | None = None) -> Path:
    """The folder the team points at (either layout); by default the repository's alembic/.
    A relative path is taken from `project_root`."""
    if migrations is None:
        return project_root / SCRIPTS_SOURCE
    return migrations if migrations.is_absolute() else project_root / migrations


def revision_files(project_root: Path, migrations: Path | None = None) -> list[tuple[Path, str]]:
    """(file, path inside the bundle) for every file of the folder's revisions: its versions/
    (or the folder itself, a folder of revision files), into `migrations/versions/`."""
    versions = versions_location(migrations_folder(project_root, migrations))
    if not versions.is_dir():
        raise BundleError(f"The migrations folder {versions} does not exist")
    return [(path, f"{VERSIONS_TARGET}/{path.relative_to(versions).as_posix()}")
            for path in _files(versions)]


def bundle_sources(project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE, *,
                   migrations: Path | None = None) -> list[tuple[Path, str]]:
    """(source file, path inside the bundle) for every file copied from the project."""
    sources: list[tuple[Path, str]] = []
    for package in spec.packages:
        sources += [(path, path.relative_to(project_root).as_posix())
                    for path in _files(project_root / package)]
    return sources + revision_files(project_root, migrations)


def _digest(items: Sequence[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in items:
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def migrations_hash(project_root: Path, *, migrations: Path | None = None) -> str:
    """SHA-256 of what decides what a migration run does: the migrations folder's revision
    files (every file of its versions/) and the engine (`migration_resource/**/*.py`, its own
    Alembic environment included).

    It is the custom resource's `MigrationsHash` property: any change to those files changes
    it, so CloudFormation sends an Update and the migration Lambda runs. The folder's env.py
    is not part of it: the engine never runs it.
    """
    items = [(target, source.read_bytes())
             for source, target in revision_files(project_root, migrations)]
    items += [(path.relative_to(project_root).as_posix(), path.read_bytes())
              for path in _files(project_root / "migration_resource", "**/*.py")]
    return _digest(items)


def bundle_fingerprint(project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE, *,
                       migrations: Path | None = None) -> str:
    """The asset hash: every bundled source file (the revision files included), the
    requirements the bundle installs, the pip options, the bundle's spec and the bundler's
    own code."""
    items = [(target, source.read_bytes())
             for source, target in bundle_sources(project_root, spec, migrations=migrations)]
    items.append((REQUIREMENTS, "\n".join(spec.requirements(project_root)).encode()))
    items.append(("pip-options", " ".join(PIP_OPTIONS).encode()))
    items.append(("bundle", f"{spec.name}\0{','.join(spec.leaves_out)}\0"
                            f"{','.join(spec.packages)}".encode()))
    items += [(f"bundler/{path.name}", path.read_bytes()) for path in BUNDLER_FILES]
    return _digest(items)


def target_revision(project_root: Path, *, migrations: Path | None = None) -> str:
    """The head revision id of the migrations folder, resolved at synth (a folder with several
    heads fails synth with alembic's advice to merge them)."""
    return RevisionCatalogue.load(migrations_folder(project_root, migrations)).head


def scripts_history_digest(project_root: Path, *, migrations: Path | None = None) -> str:
    """The digest of what the folder's revisions do (`migration_resource.checksums`), the
    custom resource's `HistoryDigest`."""
    return history_digest(versions_location(migrations_folder(project_root, migrations)))


def copy_sources(project_root: Path, output_dir: Path, spec: BundleSpec = MIGRATION_BUNDLE, *,
                 migrations: Path | None = None) -> None:
    for source, target in bundle_sources(project_root, spec, migrations=migrations):
        destination = output_dir / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    # The checksums the synth computes anyway, so a cold Lambda does not compute them again.
    versions = output_dir / VERSIONS_TARGET
    versions.mkdir(parents=True, exist_ok=True)
    write_manifest(versions)


def build_bundle(project_root: Path, out: Path, spec: BundleSpec,
                 python: str = sys.executable, *,
                 migrations: Path | None = None) -> bundle_slim.SlimReport:
    """pip install, our sources, then `bundle_slim`: the bundle `spec` describes, in `out`.

    Raises BundleError when pip fails or `strip` is missing.
    """
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               *PIP_OPTIONS, "--target", str(out), *spec.requirements(project_root)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundleError(f"pip install for the {spec.name} bundle failed:\n"
                          f"{result.stderr.strip()[-2000:]}")
    copy_sources(project_root, out, spec, migrations=migrations)
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
                 python: str = sys.executable, *, migrations: Path | None = None) -> None:
        self.project_root = project_root
        self.spec = spec
        self.python = python
        self.migrations = migrations

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        try:
            build_bundle(self.project_root, Path(output_dir), self.spec, self.python,
                         migrations=self.migrations)
        except BundleError as error:
            print(f"Local bundling failed, trying Docker: {error}", file=sys.stderr)
            return False
        return True


def docker_command(spec: BundleSpec = MIGRATION_BUNDLE,
                   project_root: Path | None = None, *,
                   migrations: Path | None = None) -> list[str]:
    """The fallback: the same layout built inside the Lambda build image, slimmed by the same
    `bundle_slim.py` (the project is mounted at /asset-input, the working folder). A
    migrations folder outside the project is not mounted: the command then says so and fails.
    """
    root = project_root or Path(__file__).resolve().parents[1]
    versions = versions_location(migrations_folder(root, migrations))
    requirements = " ".join(f"'{line}'" for line in spec.requirements(root))
    try:
        source = versions.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        message = (f"The migrations folder {versions} is outside {root}, which is all the "
                   "Docker build sees; fix the local build instead")
        return ["bash", "-c", f"echo {shlex.quote(message)} >&2; exit 1"]
    return ["bash", "-c", " && ".join([
        f"pip install --no-compile --only-binary=:all: {requirements} -t /asset-output",
        f"cp -r {' '.join(spec.packages)} /asset-output/",
        f"mkdir -p /asset-output/{VERSIONS_TARGET}",
        f"cp -r {shlex.quote(source)}/. /asset-output/{VERSIONS_TARGET}/",
        "python -c 'import pathlib, migration_resource.checksums as c; "
        f"c.write_manifest(pathlib.Path(\"/asset-output/{VERSIONS_TARGET}\"))'",
        "python cdk_app/bundle_slim.py /asset-output",
    ])]


def bundle_code(project_root: Path, spec: BundleSpec = MIGRATION_BUNDLE, *,
                migrations: Path | None = None, fingerprint: str | None = None) -> lambda_.Code:
    """The `Code` of one bundle: its own asset, rebuilt only when its fingerprint changes.

    `migrations` is the team's migrations folder (either layout; by default the repository's
    alembic/); its revision files go to `migrations/versions/` in the bundle. `fingerprint`:
    `bundle_fingerprint`'s, when the caller has it already.
    """
    return lambda_.Code.from_asset(
        str(project_root),
        asset_hash=fingerprint or bundle_fingerprint(project_root, spec, migrations=migrations),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            image=RUNTIME.bundling_image,
            command=docker_command(spec, project_root, migrations=migrations),
            # jsii calls try_bundle(output_dir, options) with the options as one object
            local=cast(cdk.ILocalBundling,
                       LocalPythonBundler(project_root, spec, migrations=migrations)),
        ),
    )
