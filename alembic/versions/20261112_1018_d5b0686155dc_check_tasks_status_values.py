"""Add the CHECK constraint ck_tasks_status_valid: tasks.status is todo, in_progress or done.

Revision ID: d5b0686155dc
Revises: eb3af3cb1028
Create Date: 2026-11-12 10:18:22.904417

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d5b0686155dc"
down_revision: str | Sequence[str] | None = "eb3af3cb1028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_check_constraint(
        op.f("ck_tasks_status_valid"),
        "tasks",
        "status IN ('todo', 'in_progress', 'done')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_tasks_status_valid"), "tasks", type_="check")
