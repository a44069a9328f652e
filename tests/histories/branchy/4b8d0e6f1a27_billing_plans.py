"""billing: plans (the billing branch's own base)

Revision ID: 4b8d0e6f1a27
Revises:
Create Date: 2024-02-01 09:12:55.870146

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "4b8d0e6f1a27"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(length=20), nullable=False, unique=True),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("monthly_cents", sa.Integer(), nullable=False),
    )
    op.bulk_insert(
        plans,
        [
            {"code": "free", "name": "Free", "monthly_cents": 0},
            {"code": "team", "name": "Team", "monthly_cents": 2900},
            {"code": "enterprise", "name": "Enterprise", "monthly_cents": 49900},
        ],
    )


def downgrade() -> None:
    op.drop_table("plans")
