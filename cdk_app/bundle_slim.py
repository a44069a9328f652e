"""Leave out of a Lambda bundle what never runs in Lambda, and strip its shared objects.

Runs on the folder pip installed into (`pip install --target`), after our own sources were
copied in. Standard library only, and runnable as a script (`python bundle_slim.py FOLDER`), so
the Docker fallback runs the very same rules inside the Lambda build image.

What goes (and why it is safe):
- bytecode caches (`__pycache__/`, `*.pyc`): `/var/task` is read-only, and a cache built by
  another interpreter is never used;
- build sources and type stubs (`*.c`, `*.h`, `*.pyx`, `*.pxd`, `*.pyi`, `py.typed`): read by
  compilers and type checkers, never by an import;
- console scripts (`bin/`): never run in Lambda, and their first line names the Python of the
  machine that built the bundle, so keeping them would make the bundle machine-dependent;
- the install bookkeeping in `*.dist-info/` (RECORD, INSTALLER, REQUESTED, WHEEL,
  direct_url.json); METADATA, entry_points.txt and top_level.txt stay (importlib.metadata
  reads them: SQLAlchemy's and Alembic's plugin entry points, `version()`), and so do the
  licence files and SBOMs (the licences of what we redistribute);
- the test support of SQLAlchemy, Alembic and Mako (`TEST_SUPPORT`): imported only by their
  own pytest plugins; SQLAlchemy's dialect `provision.py` modules import nothing else and are
  imported only by its test support;
- Powertools' Swagger UI assets (`WEB_ASSETS`): served only by an API Gateway resolver with
  `enable_swagger()`, which neither function has;
- debugging symbols of every ELF shared object (`strip --strip-unneeded`): the dynamic symbol
  table, which the loader and Python's import use, stays. pglast's parser goes from 27 MB to
  3.7 MB.

Deterministic: files are visited in sorted order, every file gets mode 0644 and every folder
0755 (CDK's zip keeps the mode), and every timestamp below the bundle folder is set to
1980-01-01 (the zip epoch), so the same inputs give the same bytes. The bundle folder's own
timestamp stays the build's (the zip holds no folder entries): cleaning up old bundles can
tell a fresh one by it. Returns what it left out, per rule, for the benchmark.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BUILD_SOURCE_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".pyi")
TYPE_MARKERS = ("py.typed",)
CACHE_FOLDERS = ("__pycache__",)
CACHE_SUFFIXES = (".pyc", ".pyo")
SCRIPTS_FOLDER = "bin"
# What importlib.metadata does not read; pip writes them for its own uninstall and upgrade.
INSTALL_BOOKKEEPING = frozenset({"RECORD", "INSTALLER", "REQUESTED", "WHEEL", "direct_url.json"})
# Relative to the bundle; each only imported by the package's own pytest plugin.
TEST_SUPPORT = ("sqlalchemy/testing", "alembic/testing", "mako/testing")
TEST_SUPPORT_GLOBS = ("sqlalchemy/dialects/*/provision.py",)
WEB_ASSETS = ("aws_lambda_powertools/event_handler/openapi/swagger_ui/*.js",
              "aws_lambda_powertools/event_handler/openapi/swagger_ui/*.css")
ELF_MAGIC = b"\x7fELF"
STRIP_COMMAND = ("strip", "--strip-unneeded")
EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest date a zip entry can carry
FILE_MODE, FOLDER_MODE = 0o644, 0o755


class SlimError(RuntimeError):
    """The bundle cannot be slimmed here (e.g. no `strip`); the message says what is missing."""


@dataclass
class SlimReport:
    """Bytes and files left out per rule, and the shared objects stripped."""

    removed_bytes: dict[str, int] = field(default_factory=dict)
    removed_files: dict[str, int] = field(default_factory=dict)
    stripped: int = 0
    stripped_saved_bytes: int = 0

    def count(self, rule: str, path: Path) -> None:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        self.removed_bytes[rule] = self.removed_bytes.get(rule, 0) + sum(
            p.stat().st_size for p in files)
        self.removed_files[rule] = self.removed_files.get(rule, 0) + len(files)


def strip_available() -> bool:
    return shutil.which(STRIP_COMMAND[0]) is not None


def slim(bundle: Path) -> SlimReport:
    """Apply every rule of the module docstring to `bundle`, in place."""
    if not strip_available():
        raise SlimError(f"`{STRIP_COMMAND[0]}` is not on PATH (binutils); without it the "
                        "bundle's shared objects keep their debugging symbols")
    report = SlimReport()
    for rule, paths in _removals(bundle):
        for path in paths:
            if path.exists() or path.is_symlink():
                report.count(rule, path)
                _remove(path)
    for path in _files(bundle):
        if _is_elf(path):
            before = path.stat().st_size
            subprocess.run([*STRIP_COMMAND, str(path)], check=True, capture_output=True)
            report.stripped += 1
            report.stripped_saved_bytes += before - path.stat().st_size
    _normalise(bundle)
    return report


def _removals(bundle: Path) -> Iterator[tuple[str, list[Path]]]:
    everything = sorted(bundle.rglob("*"))
    yield "bytecode caches", [p for p in everything if p.is_dir() and p.name in CACHE_FOLDERS]
    yield "bytecode caches", [p for p in everything
                              if p.is_file() and p.name.endswith(CACHE_SUFFIXES)]
    yield "build sources and type stubs", [
        p for p in everything if p.is_file()
        and (p.name.endswith(BUILD_SOURCE_SUFFIXES) or p.name in TYPE_MARKERS)]
    yield "console scripts (bin/)", [bundle / SCRIPTS_FOLDER]
    yield "dist-info install bookkeeping", [
        p for p in everything if p.is_file() and p.parent.name.endswith(".dist-info")
        and p.name in INSTALL_BOOKKEEPING]
    yield "test support of SQLAlchemy, Alembic, Mako", [
        *(bundle / folder for folder in TEST_SUPPORT),
        *(p for pattern in TEST_SUPPORT_GLOBS for p in sorted(bundle.glob(pattern)))]
    yield "Powertools' Swagger UI assets", [
        p for pattern in WEB_ASSETS for p in sorted(bundle.glob(pattern))]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _files(bundle: Path) -> Iterator[Path]:
    for path in sorted(bundle.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _is_elf(path: Path) -> bool:
    # By content, not name: auditwheel's vendored libraries are named libfoo-1a2b.so.3.
    with path.open("rb") as handle:
        return handle.read(4) == ELF_MAGIC


def _normalise(bundle: Path) -> None:
    # Deepest first, so a folder's timestamp is set after its content was touched.
    for path in sorted(bundle.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink():
            continue
        path.chmod(FOLDER_MODE if path.is_dir() else FILE_MODE)
        os.utime(path, (EPOCH, EPOCH))
    bundle.chmod(FOLDER_MODE)


def tree_digest(bundle: Path) -> str:
    """SHA-256 over every file's path, mode and bytes, in sorted order: equal for equal trees."""
    import hashlib  # noqa: PLC0415 - only the tests and the benchmark compare trees

    digest = hashlib.sha256()
    for path in _files(bundle):
        mode = stat.S_IMODE(path.stat().st_mode)
        digest.update(f"{path.relative_to(bundle).as_posix()}\0{mode:o}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: bundle_slim.py BUNDLE_FOLDER", file=sys.stderr)
        return 2
    try:
        report = slim(Path(argv[0]))
    except SlimError as error:
        print(f"bundle_slim: {error}", file=sys.stderr)
        return 1
    left_out = sum(report.removed_bytes.values())
    print(f"bundle_slim: left out {left_out} bytes, stripped {report.stripped} shared objects "
          f"(-{report.stripped_saved_bytes} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
