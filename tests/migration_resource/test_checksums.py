"""Revision checksums: formatting never changes the code checksum, a changed statement does,
and every Python version that computes it (3.11 synth and CLI, 3.12 Lambda) agrees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from localdev.lambda_python import LambdaPythonMissing, find_lambda_python
from migration_resource.checksums import (
    MANIFEST_NAME,
    clear_caches,
    code_checksum,
    file_checksum,
    history_digest,
    write_manifest,
)
from tests.alembic.support import REPO_ROOT

REVISION = '''"""Add tasks.due_date and backfill it from the project's deadline.

Revision ID: 3c9e1f0a7b21
Revises: eb3af3cb1028
Create Date: 2026-11-14 10:02:11.004512

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3c9e1f0a7b21"
down_revision: str | Sequence[str] | None = "eb3af3cb1028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("due_date", sa.Date(), nullable=True))
    # copy the project's deadline; tasks without a project keep NULL
    op.execute(
        "UPDATE tasks SET due_date = projects.deadline FROM projects "
        "WHERE projects.id = tasks.project_id"
    )
    op.create_index("ix_tasks_due_date", "tasks", ["due_date"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_due_date", table_name="tasks")
    op.drop_column("tasks", "due_date")
'''

FORMATTING_ONLY = {
    "added comment": REVISION.replace(
        "def upgrade() -> None:\n",
        "def upgrade() -> None:\n    # reviewed by the data team, ticket DATA-1234\n"),
    "edited comment": REVISION.replace(
        "# copy the project's deadline; tasks without a project keep NULL",
        "# backfill from projects.deadline (NULL where there is none)"),
    "allow-destructive marker": REVISION.replace(
        'op.drop_column("tasks", "due_date")',
        'op.drop_column("tasks", "due_date")  # migration-gate: allow-destructive'),
    "blank lines": REVISION.replace("\n\ndef ", "\n\n\n\n\ndef ").replace(
        "    op.create_index", "\n\n    op.create_index"),
    "trailing whitespace": REVISION.replace("\n", "   \n"),
    "CRLF line endings": REVISION.replace("\n", "\r\n"),
    "indentation width": REVISION.replace("\n    ", "\n  "),
    "changed docstrings": REVISION.replace(
        "Add tasks.due_date and backfill it from the project's deadline.",
        "Tasks get a due date, copied from their project's deadline.",
    ).replace(
        "def upgrade() -> None:\n",
        'def upgrade() -> None:\n    """Add the column, then backfill it in one UPDATE."""\n'),
    "quote style": REVISION.replace('"tasks"', "'tasks'").replace(
        '"due_date"', "'due_date'").replace('"eb3af3cb1028"', "'eb3af3cb1028'"),
    "line breaks and trailing commas": REVISION.replace(
        'op.add_column("tasks", sa.Column("due_date", sa.Date(), nullable=True))',
        'op.add_column(\n        "tasks",\n        sa.Column(\n            "due_date",\n'
        '            sa.Date(),\n            nullable=True,\n        ),\n    )',
    ).replace('["due_date"], unique=False)', '["due_date"], unique=False,)'),
    "SQL string split differently": REVISION.replace(
        '"UPDATE tasks SET due_date = projects.deadline FROM projects "\n'
        '        "WHERE projects.id = tasks.project_id"',
        '"UPDATE tasks SET due_date = projects.deadline "\n'
        '        "FROM projects WHERE projects.id = tasks.project_id"'),
}

CHANGED_STATEMENT = {
    "another column name": REVISION.replace('sa.Column("due_date"', 'sa.Column("due_on"'),
    "another SQL string": REVISION.replace("projects.deadline", "projects.created_at"),
    "an added op.execute": REVISION.replace(
        "unique=False)\n", 'unique=False)\n    op.execute("ANALYZE tasks")\n'),
    "a changed down_revision": REVISION.replace(
        '= "eb3af3cb1028"', '= "d5b0686155dc"'),
    "another keyword value": REVISION.replace("nullable=True", "nullable=False"),
}

# Syntax revisions use, in files the cross-version test hashes under every interpreter.
SYNTAX_TOUR = '''"""A merge revision with helpers: the syntax teams write in revision files."""
# -*- a comment before the imports -*-
from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "9a8b7c6d5e4f"
down_revision = ("3c9e1f0a7b21", "d5b0686155dc")  # merges two heads
BATCH: int = 1_000
PATTERN = rf"^\\d{{3}}-{revision[:4]}$"
MARKER = b"\\x00\\xff"
OLD_STYLE = u"unicode prefix"
CONSTANTS = (None, True, False, ..., 2.5, 1e-3, 3j, 0xFFFF_FFFF_FFFF_FFFF_FFFF, "\\u00e9t\\u00e9")


def logged(func: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator with a nested function."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        """Nested docstring."""
        print(f"running {func.__name__!r} with {len(args)} args and {kwargs=}")
        return func(*args, **kwargs)

    return wrapper


class Batch:
    """A class docstring."""

    size: int = BATCH

    def __init__(self, table: str, /, *, size: int | None = None) -> None:
        self.table = table
        self.size = size or self.size

    @property
    def label(self) -> str:
        return f"{self.table:>{self.size}}|{self.size:#x}|{2.5:.2f}|{self.table:}|{self.size!s:<8}"

    def statements(self, rows: int) -> Iterator[str]:
        for start in range(0, rows, self.size):
            yield (
                f"UPDATE {self.table} SET done = true "
                f"WHERE id >= {start} AND id < {start + self.size}"
            )


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def doubled(n: int) -> list[int]:
    return [j async for i in numbers(n) if (j := i * 2) > 0]


def kind_of(value: object) -> str:
    match value:
        case {"type": "enum", "values": [*values]}:
            return f"enum({', '.join(values)})"
        case [first, *_] if first:
            return "list"
        case int() | float() as number if number > 0:
            return "positive"
        case Batch(table=str(name)):
            return name
        case None:
            return "none"
        case _:
            return "other"


def run(*statements: str, **options: Any) -> None:
    counter = 0

    def bump() -> None:
        nonlocal counter
        counter += 1

    for statement in statements:
        try:
            op.execute(sa.text(statement).execution_options(**options))
        except* ValueError as group:
            raise RuntimeError(f"""failed:
{statement!r}""") from group
        finally:
            bump()
    assert counter == len(statements), f"{counter=} {len(statements)=}"


@logged
def upgrade() -> None:
    run(*Batch("tasks", size=BATCH).statements(10 * BATCH), timeout={"ms": 5_000}["ms"])
    squares = {i: i**2 for i in range(3) if i % 2 or not i}
    op.bulk_insert(sa.table("settings", sa.column("k"), sa.column("v")),
                   [{"k": k, "v": str(v)} for k, v in sorted(squares.items())[::-1]])
    op.execute(lambda: None) if 0 < len(squares) <= 3 else None


def downgrade() -> None:
    del CONSTANTS[0:1]
'''

# 3.12 adds an empty string part to format specs that hold a field; 3.11 and 3.13 do not.
FORMAT_SPECS = 'width = 8\nlabel = f"{revision:>{width}}{revision:{width}.{width}}x"\n'


def write(folder: Path, text: str, name: str = "revision.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode())
    return path


def checksum(folder: Path, text: str) -> str:
    return code_checksum(write(folder, text))


@pytest.mark.parametrize("edit", sorted(FORMATTING_ONLY))
def test_formatting_only_edits_keep_the_checksum(tmp_path: Path, edit: str) -> None:
    edited = FORMATTING_ONLY[edit]
    assert edited != REVISION, "the edit did not apply"
    original = checksum(tmp_path / "before", REVISION)
    assert len(original) == 64 and int(original, 16) >= 0
    assert checksum(tmp_path / "after", edited) == original


def test_ruff_format_keeps_the_checksum(tmp_path: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which(
        "ruff", path=str(REPO_ROOT / ".venv" / "bin"))
    assert ruff, f"ruff is not installed next to {sys.executable} nor in the repository's .venv"
    messy = (FORMATTING_ONLY["quote style"]
             .replace("def upgrade() -> None:", "def upgrade(  )->None :")
             .replace("unique=False)", "unique = False ,)"))
    original = write(tmp_path / "original", messy)
    copy = write(tmp_path / "formatted", messy)
    subprocess.run([ruff, "format", "--isolated", "--quiet", str(copy)], check=True, timeout=60)
    assert copy.read_bytes() != original.read_bytes(), "ruff format changed nothing"
    assert code_checksum(copy) == code_checksum(original) == checksum(tmp_path, REVISION)


@pytest.mark.parametrize("change", sorted(CHANGED_STATEMENT))
def test_a_changed_statement_changes_the_checksum(tmp_path: Path, change: str) -> None:
    changed = CHANGED_STATEMENT[change]
    assert changed != REVISION, "the change did not apply"
    assert checksum(tmp_path / "after", changed) != checksum(tmp_path / "before", REVISION)


def test_the_legacy_checksum_still_sees_every_byte(tmp_path: Path) -> None:
    before = write(tmp_path / "before", REVISION)
    after = write(tmp_path / "after", FORMATTING_ONLY["edited comment"])
    assert file_checksum(before) != file_checksum(after)
    assert code_checksum(before) == code_checksum(after)


def test_an_invalid_escape_is_code_even_where_warnings_are_errors(tmp_path: Path) -> None:
    # "\d" is a SyntaxWarning since 3.12, a SyntaxError under -W error: still the same code
    raw = checksum(tmp_path / "raw", 'PATTERN = r"^\\d+$"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checksum(tmp_path / "escaped", 'PATTERN = "^\\d+$"\n') == raw


def test_a_file_that_does_not_parse_gets_a_text_checksum(tmp_path: Path) -> None:
    broken = REVISION.replace("def downgrade() -> None:", "def downgrade( -> None:")
    digest = checksum(tmp_path / "a", broken)
    assert len(digest) == 64
    assert checksum(tmp_path / "b", broken.replace("\n", "  \r\n") + "\n\n") == digest
    assert checksum(tmp_path / "c", broken.replace("# copy", "# Copy")) != digest


def test_history_digest_follows_code_checksums(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    write(versions, REVISION, "0002_due_date.py")
    first = write(versions, SYNTAX_TOUR, "0001_tour.py")
    digest = history_digest(versions)
    assert len(digest) == 64
    write(versions, FORMATTING_ONLY["CRLF line endings"], "0002_due_date.py")
    assert history_digest(versions) == digest
    write(versions, CHANGED_STATEMENT["another SQL string"], "0002_due_date.py")
    assert history_digest(versions) != digest
    write(versions, REVISION, "0002_due_date.py")
    first.rename(versions / "0001_renamed.py")
    assert history_digest(versions) != digest


def test_a_manifest_saves_the_work_only_for_the_bytes_it_names(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    due = write(versions, REVISION, "0002_due_date.py")
    tour = write(versions, SYNTAX_TOUR, "0001_tour.py")
    computed = {path.name: code_checksum(path) for path in (due, tour)}
    manifest = write_manifest(versions)
    document = json.loads(manifest.read_text())
    assert manifest.name == MANIFEST_NAME
    assert {name: entry["code"] for name, entry in document["files"].items()} == computed
    # The engine takes an entry whose bytes match without computing: proven with an entry
    # that says something no computation would.
    document["files"]["0001_tour.py"]["code"] = "f" * 64
    manifest.write_text(json.dumps(document))
    clear_caches()
    assert code_checksum(tour) == "f" * 64
    assert code_checksum(due) == computed["0002_due_date.py"]
    # Other bytes than the manifest names: computed, never taken from it.
    write(versions, CHANGED_STATEMENT["another SQL string"], "0001_tour.py")
    assert code_checksum(tour) == checksum(tmp_path / "fresh", CHANGED_STATEMENT[
        "another SQL string"])


@pytest.mark.parametrize("content", [
    "not json", '{"form": "code-checksum/0", "files": {}}', '["a list"]',
    '{"form": "code-checksum/1", "files": {"0001_tour.py": {"sha256": "x", "code": "y"}}}',
])
def test_a_manifest_it_cannot_read_is_ignored(tmp_path: Path, content: str) -> None:
    versions = tmp_path / "versions"
    tour = write(versions, SYNTAX_TOUR, "0001_tour.py")
    expected = code_checksum(tour)
    (versions / MANIFEST_NAME).write_text(content)
    clear_caches()
    assert code_checksum(tour) == expected


def interpreters() -> dict[str, str]:
    """The Lambda's Python 3.12 (as tests/cdk_app/test_bundling.py finds it), and a 3.13
    installed beside it when there is one."""
    try:
        python_312 = find_lambda_python()
    except LambdaPythonMissing as missing:
        pytest.fail(f"{missing}: the checksums the Lambda computes cannot be compared with "
                    "this interpreter's")
    found = {"3.12": python_312}
    versions = Path(python_312).resolve().parents[2]
    for candidate in sorted(versions.glob("3.13*/bin/python3.13")):
        found["3.13"] = str(candidate)
    return found


def test_the_checksum_is_the_same_under_the_lambda_python(tmp_path: Path) -> None:
    files = [
        write(tmp_path, REVISION, "revision.py"),
        write(tmp_path, FORMATTING_ONLY["CRLF line endings"], "crlf.py"),
        write(tmp_path, SYNTAX_TOUR, "syntax_tour.py"),
        write(tmp_path, FORMAT_SPECS, "format_specs.py"),
        write(tmp_path, 'PATTERN = "^\\d+$"  # an invalid escape\n', "invalid_escape.py"),
        write(tmp_path, "def upgrade(:\n    pass\r\n", "does_not_parse.py"),
    ]
    latin1 = tmp_path / "latin1.py"
    latin1.write_bytes("# -*- coding: latin-1 -*-\nNAME = 'café'\n".encode("latin-1"))
    files.append(latin1)
    here = {path.name: code_checksum(path) for path in files}
    assert here["crlf.py"] == here["revision.py"]
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from pathlib import Path; from migration_resource.checksums import code_checksum; "
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'checksums': "
        "{Path(p).name: code_checksum(Path(p)) for p in sys.argv[2:]}}))"
    )
    for version, python in interpreters().items():
        # -I -S: no site-packages, no environment: the module needs the standard library only
        answer = subprocess.run(
            [python, "-I", "-S", "-W", "error", "-c", script, str(REPO_ROOT),
             *map(str, files)], capture_output=True, text=True, timeout=60, check=False)
        assert answer.returncode == 0, f"{python}: {answer.stderr}"
        there = json.loads(answer.stdout)
        assert there["version"] == version, f"{python} is Python {there['version']}"
        differ = sorted(name for name in here if there["checksums"].get(name) != here[name])
        assert not differ, f"Python {version} and {sys.version} disagree on {differ}"
