"""billing: subscriptions of accounts to plans

Revision ID: d5a91c3e7f40
Revises: 4b8d0e6f1a27
Create Date: 2024-02-05 16:44:08.339520

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d5a91c3e7f40"
down_revision: str | Sequence[str] | None = "4b8d0e6f1a27"
branch_labels: str | Sequence[str] | None = None
# accounts comes from the core line
depends_on: str | Sequence[str] | None = "e91b47c2a0d3"


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("plan_id", sa.Integer(), sa.ForeignKey("plans.id"), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("subscriptions")
