"""Make users.name nullable: the release that stops writing it must still insert users.

Expand, before the drop of the next revision: the code of this release creates users without
a name, and the column stays (NOT NULL) until the drop runs, one release later. Relaxing NOT
NULL takes a short ACCESS EXCLUSIVE lock and reads no rows.

Revision ID: 3e9a7c1d5b20
Revises: 25d7c6ee3024
Create Date: 2026-12-05 09:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3e9a7c1d5b20"
down_revision: str | Sequence[str] | None = "25d7c6ee3024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("users", "name", existing_type=sa.String(length=200), nullable=True)


def downgrade() -> None:
    users = sa.table("users", sa.column("name", sa.String), sa.column("display_name", sa.String),
                     sa.column("email", sa.String))
    op.execute(sa.update(users).where(users.c.name.is_(None)).values(
        name=sa.func.coalesce(users.c.display_name, users.c.email)))
    op.alter_column("users", "name", existing_type=sa.String(length=200), nullable=False)
