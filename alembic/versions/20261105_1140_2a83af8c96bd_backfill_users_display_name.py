"""Data migration: backfill users.display_name where it is NULL.

The display name becomes the user's name, or the local part of the email address when the
name is blank. Written as one set-based UPDATE passed to op.execute (no rows fetched into
Python), so it runs the same online and in offline ``--sql`` mode, and running it again
changes nothing.

Revision ID: 2a83af8c96bd
Revises: e77ec3fef45a
Create Date: 2026-11-05 11:40:51.662930

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "2a83af8c96bd"
down_revision: str | Sequence[str] | None = "e77ec3fef45a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A lightweight table with only the columns used here, so that later model changes cannot
# change what this revision does.
users = sa.table(
    "users",
    sa.column("email", sa.String()),
    sa.column("name", sa.String()),
    sa.column("display_name", sa.String()),
)


def upgrade() -> None:
    op.execute(
        sa.update(users)
        .where(users.c.display_name.is_(None))
        .values(
            display_name=sa.func.coalesce(
                sa.func.nullif(sa.func.btrim(users.c.name), ""),
                sa.func.split_part(users.c.email, "@", 1),
            )
        )
    )


def downgrade() -> None:
    # Deliberately nothing: after the upgrade a backfilled display name cannot be told apart
    # from one a user chose, so setting them back to NULL would lose data. The previous
    # revision's downgrade drops the column anyway.
    pass
