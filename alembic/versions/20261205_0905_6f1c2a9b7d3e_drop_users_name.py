"""Drop users.name: the app shows and edits display_name only since the backfill.

DESTRUCTIVE: the column and its values are gone after this revision. On an existing
database the change gate refuses it in production unless the deploy allows destructive
changes (AllowDestructive / --allow-destructive): take the snapshot first. (Replayed from
an empty database, as on a first deploy, nothing is at risk and the gate lets it pass.) The downgrade brings the column back,
filled from display_name, but the original names are lost.

Revision ID: 6f1c2a9b7d3e
Revises: d5b0686155dc
Create Date: 2026-11-20 09:30:41.502114

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6f1c2a9b7d3e"
down_revision: str | Sequence[str] | None = "d5b0686155dc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("users", "name")


def downgrade() -> None:
    op.add_column("users", sa.Column("name", sa.String(length=200), nullable=True))
    users = sa.table("users", sa.column("name", sa.String), sa.column("display_name", sa.String))
    op.execute(sa.update(users).values(name=sa.func.coalesce(users.c.display_name, "")))
    op.alter_column("users", "name", existing_type=sa.String(length=200), nullable=False)
