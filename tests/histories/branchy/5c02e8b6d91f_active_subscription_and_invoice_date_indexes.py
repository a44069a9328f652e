"""one active subscription per account; invoices by date

Revision ID: 5c02e8b6d91f
Revises: f1d49a7c2e63
Create Date: 2024-03-11 13:09:51.574002

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5c02e8b6d91f"
down_revision: str | Sequence[str] | None = "f1d49a7c2e63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ux_subscriptions_active_account",
        "subscriptions",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(op.f("ix_invoices_issued_on"), "invoices", ["issued_on"])


def downgrade() -> None:
    op.drop_index(op.f("ix_invoices_issued_on"), table_name="invoices")
    op.drop_index("ux_subscriptions_active_account", table_name="subscriptions")
