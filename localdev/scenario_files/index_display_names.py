"""Index users.display_name, CONCURRENTLY (release N+1, as it shipped after the failed try).

Display names are not unique in production, so the lookup by display name gets a plain index
instead of the unique one the first try wanted.

Revision ID: c2d8f0b3e671
Revises: 6f1c2a9b7d3e
Create Date: 2026-12-06 11:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import create_index_concurrently, drop_index_concurrently

# revision identifiers, used by Alembic.
revision: str = "c2d8f0b3e671"
down_revision: str | Sequence[str] | None = "6f1c2a9b7d3e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(op, "ix_users_display_name", "users", ["display_name"])


def downgrade() -> None:
    drop_index_concurrently(op, "ix_users_display_name", table="users")
