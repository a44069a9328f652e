"""Helpers to look at a test database from outside the engine."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from localdev.history_env import write_script_directory
from tests.alembic.support import REPO_ROOT

SAMPLE_SCRIPTS = REPO_ROOT / "alembic"


def version_rows(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('public.alembic_version')")).scalar()
        if exists is None:
            return []
        return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def relations(db: sa.Engine) -> list[str]:
    """Every relation in the public schema (tables, indexes, sequences)."""
    with db.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.relname || ':' || c.relkind::text FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' ORDER BY 1"
                )
            ).scalars()
        )


def execute(db: sa.Engine, *statements: str) -> None:
    with db.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def linear_history(folder: Path, bodies: dict[str, str]) -> Path:
    """A throwaway script directory (the team-style env.py) with one revision per entry, in
    order: id → the body of its upgrade() (indented by four spaces; `op` and `sa` exist)."""
    write_script_directory(folder)
    down = None
    for revision, body in bodies.items():
        (folder / "versions" / f"{revision}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n\n\n"
            f"def upgrade() -> None:\n    {body}\n\n\ndef downgrade() -> None:\n    pass\n")
        down = revision
    return folder


def sample_without_approvals(folder: Path) -> Path:
    """A copy of the sample history whose revisions approve nothing: its drop of users.name
    is then refused in production, as any unapproved destructive revision is."""
    import shutil  # noqa: PLC0415

    shutil.copytree(SAMPLE_SCRIPTS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (folder / "versions").glob("*.py"):
        text = path.read_text()
        kept = "".join(line for line in text.splitlines(keepends=True)
                       if "# migration-approve:" not in line)
        if kept != text:
            path.write_text(kept)
    return folder
