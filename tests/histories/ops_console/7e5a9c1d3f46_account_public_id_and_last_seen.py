"""public ids and last seen

Revision ID: 7e5a9c1d3f46
Revises: 6d4f8b0c2e35
Create Date: 2024-03-05 08:55:13.240087

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7e5a9c1d3f46"
down_revision: str | Sequence[str] | None = '6d4f8b0c2e35'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column(
            "public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False
        ),
    )
    op.add_column(
        "accounts",
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"), nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("accounts", "last_seen_at")
    op.drop_column("accounts", "public_id")
