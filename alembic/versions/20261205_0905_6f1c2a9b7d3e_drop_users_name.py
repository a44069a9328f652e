"""Drop users.name: the app shows and edits display_name only since the backfill.

CONTRACT, and the last revision of its release: the column and its values are gone after it,
and the code released before it still reads users.name. So the deploy that brings it defers
it (the revision before makes the column nullable, so this release's code can insert users);
the next deploy runs it first, after the pre-migration snapshot, once the live release no
longer uses the column. In production a drop runs only approved: the line in upgrade() names
the column and why (a deferral alone approves nothing). (From an empty database, as on a
first deploy, nothing is at risk and it runs at once.) The downgrade brings the column back,
filled from display_name, but the original names are lost.

Revision ID: 6f1c2a9b7d3e
Revises: 3e9a7c1d5b20
Create Date: 2026-11-20 09:30:41.502114

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6f1c2a9b7d3e"
down_revision: str | Sequence[str] | None = "3e9a7c1d5b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # migration-approve: drop_column users.name -- no release reads it since display_name
    op.drop_column("users", "name")


def downgrade() -> None:
    op.add_column("users", sa.Column("name", sa.String(length=200), nullable=True))
    users = sa.table("users", sa.column("name", sa.String), sa.column("display_name", sa.String))
    op.execute(sa.update(users).values(name=sa.func.coalesce(users.c.display_name, "")))
    op.alter_column("users", "name", existing_type=sa.String(length=200), nullable=False)
