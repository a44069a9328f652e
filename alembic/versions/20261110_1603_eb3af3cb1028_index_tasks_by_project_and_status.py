"""Add the index ix_tasks_project_id_status on tasks (project_id, status).

It serves the board view (one project's tasks grouped by status) and, as project_id is its
first column, the lookups behind the tasks -> projects foreign key.

Revision ID: eb3af3cb1028
Revises: 2a83af8c96bd
Create Date: 2026-11-10 16:03:40.527711

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "eb3af3cb1028"
down_revision: str | Sequence[str] | None = "2a83af8c96bd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_tasks_project_id_status"), "tasks", ["project_id", "status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tasks_project_id_status"), table_name="tasks")
