"""subscription seats; every account without a subscription gets the free plan

Revision ID: f1d49a7c2e63
Revises: a63c1f8e4b05
Create Date: 2024-03-04 10:40:09.281736

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "f1d49a7c2e63"
down_revision: str | Sequence[str] | None = "a63c1f8e4b05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "subscriptions", sa.Column("seats", sa.Integer(), server_default="1", nullable=False)
    )
    op.execute(
        "INSERT INTO subscriptions (account_id, plan_id) "
        "SELECT a.id, p.id FROM accounts a JOIN plans p ON p.code = 'free' "
        "WHERE NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = a.id)"
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM subscriptions s USING plans p "
        "WHERE s.plan_id = p.id AND p.code = 'free' "
        "AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id)"
    )
    op.drop_column("subscriptions", "seats")
