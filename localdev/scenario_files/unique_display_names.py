"""Make display names unique, with a unique index built CONCURRENTLY (release N+1, first try).

It fails where users share a display name, as they do in the scenario's database: PostgreSQL
refuses the unique index, and `create_index_concurrently` drops the INVALID index the failed
build left, so nothing of it remains. The deploy fails and the stack rolls back.

Revision ID: a41c7e9d2b58
Revises: 6f1c2a9b7d3e
Create Date: 2026-12-06 09:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import create_index_concurrently, drop_index_concurrently

# revision identifiers, used by Alembic.
revision: str = "a41c7e9d2b58"
down_revision: str | Sequence[str] | None = "6f1c2a9b7d3e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(op, "uq_users_display_name", "users", ["display_name"],
                              unique=True)


def downgrade() -> None:
    drop_index_concurrently(op, "uq_users_display_name", table="users")
