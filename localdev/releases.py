"""Release checkouts: the project as one release of the application had it, synthesized.

A release is this repository's code with three possible differences, the ones a team's
successive releases have: its migration history ends at an earlier revision (the later
revision files are not there yet), its application code differs (a patch, as `git diff`
prints it), and it brings revision files of its own. Each release writes its name into the
sample application (`sample_app/release.py`), so its answers say which release served them
and its bundle, hence its `ReleaseId`, differs from every other release's.

A checkout is synthesized as `cdk synth` does it (the checkout's own `app.py` with the
CDK CLI's environment: `CDK_OUTDIR`, `CDK_CONTEXT_JSON`), with this virtualenv's Python; the
bundles are built into the checkout's `cdk.out`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from migration_resource.revisions import RevisionCatalogue, ScriptsError

REPO_ROOT = Path(__file__).resolve().parents[1]
# What `app.py` reads: the CDK app, the engine, the sample application and its history.
PROJECT_FILES = ("app.py", "cdk.json", "cdk.context.json", "alembic.ini")
PROJECT_FOLDERS = ("alembic", "cdk_app", "migration_resource", "sample_app")
RELEASE_FILE = "sample_app/release.py"
SYNTH_TIMEOUT_SECONDS = 900  # a cold pip cache builds two bundles


class ReleaseError(RuntimeError):
    """A release checkout could not be made or synthesized; the message says why."""


@dataclass(frozen=True)
class RevisionFile:
    """A revision file a release brings: `source`, copied as `alembic/versions/<name>`."""

    source: Path
    name: str


@dataclass(frozen=True)
class Release:
    name: str  # what its answers say (X-App-Release), e.g. "N+1"
    folder: str  # its checkout's folder name
    head: str  # its history ends at this revision (later revision files are removed)
    patch: Path | None = None  # its application code's difference from this repository's
    revisions: tuple[RevisionFile, ...] = ()  # brought on top of `head`


def project_copy(destination: Path, folders: Sequence[str] = PROJECT_FOLDERS,
                 files: Sequence[str] = PROJECT_FILES) -> Path:
    """The project's sources (what a synth reads) copied to `destination`, to edit freely."""
    if destination.exists():
        shutil.rmtree(destination)
    for folder in folders:
        shutil.copytree(REPO_ROOT / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        shutil.copy2(REPO_ROOT / name, destination / name)
    return destination


def end_history_at(project: Path, head: str) -> None:
    """Remove the revision files that `head` does not stand on from `alembic/versions`."""
    folder = project / "alembic"
    try:
        catalogue = RevisionCatalogue.load(folder)
    except ScriptsError as error:
        raise ReleaseError(str(error)) from None
    if not catalogue.is_known(head):
        raise ReleaseError(f"the history in {folder} has no revision {head}")
    keep = catalogue.ancestry((head,))
    for revision in catalogue.ordered:
        if revision not in keep:
            catalogue.file_path(revision).unlink()


def apply_patch(project: Path, patch: Path) -> None:
    """`git apply` the patch to the checkout (and never to a repository around it)."""
    result = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", str(patch)], cwd=project, text=True,
        capture_output=True, check=False, timeout=60,
        # the checkout may sit inside this repository (.local/): git must not look above it
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(project.parent)})
    if result.returncode != 0:
        said = result.stderr.strip().splitlines() or ["git apply failed"]
        raise ReleaseError(f"{patch.name} no longer applies to this repository's code "
                           f"({said[0]}); refresh it as its first lines say")


def checkout(release: Release, destination: Path) -> Path:
    """The project as `release` has it, in `destination` (made again from scratch)."""
    project = project_copy(destination)
    end_history_at(project, release.head)
    if release.patch is not None:
        apply_patch(project, release.patch)
    for revision in release.revisions:
        shutil.copy2(revision.source, project / "alembic" / "versions" / revision.name)
    (project / RELEASE_FILE).write_text(
        '"""Which release of the application this code is (written by localdev.releases)."""'
        f"\n\nfrom __future__ import annotations\n\nRELEASE = {release.name!r}\n")
    return project


def synthesize(project: Path, stage: str, *, python: str = sys.executable) -> Path:
    """`cdk synth -c stage=<stage>` of the checkout, into its `cdk.out`; the folder."""
    outdir = project / "cdk.out"
    environment = {**os.environ, "CDK_OUTDIR": str(outdir),
                   "CDK_CONTEXT_JSON": json.dumps({"stage": stage}),
                   "CDK_DISABLE_CLI_TELEMETRY": "true", "AWS_EC2_METADATA_DISABLED": "true",
                   "JSII_SILENCE_WARNING_DEPRECATED_NODE": "1"}
    result = subprocess.run([python, "app.py"], cwd=project, env=environment, text=True,
                            capture_output=True, check=False, timeout=SYNTH_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise ReleaseError(f"synth of {project.name} failed:\n{result.stderr.strip()[-3000:]}")
    return outdir
