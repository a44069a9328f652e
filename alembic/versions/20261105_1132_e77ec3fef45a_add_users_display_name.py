"""Add the nullable column users.display_name (the name shown in the UI).

Nullable, so adding it is a metadata-only change that does not rewrite or lock the table
for long; the next revision fills it for existing users.

Revision ID: e77ec3fef45a
Revises: 741c2c5d4584
Create Date: 2026-11-05 11:32:08.114203

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e77ec3fef45a"
down_revision: str | Sequence[str] | None = "741c2c5d4584"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "display_name")
