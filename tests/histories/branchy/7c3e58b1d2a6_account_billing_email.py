"""account billing email

Revision ID: 7c3e58b1d2a6
Revises: 0f6a2d94c8b1
Create Date: 2024-02-06 11:25:31.007982

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7c3e58b1d2a6"
down_revision: str | Sequence[str] | None = "0f6a2d94c8b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("billing_email", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "billing_email")
