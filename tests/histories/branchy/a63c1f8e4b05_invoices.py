"""invoices per subscription, optionally charged to a project

Revision ID: a63c1f8e4b05
Revises: 2e7f0b5c9d18
Create Date: 2024-02-19 15:18:22.430915

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "a63c1f8e4b05"
down_revision: str | Sequence[str] | None = "2e7f0b5c9d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subscription_id", sa.Integer(), sa.ForeignKey("subscriptions.id"), nullable=False
        ),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
    )
    op.create_index(op.f("ix_invoices_subscription_id"), "invoices", ["subscription_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_invoices_subscription_id"), table_name="invoices")
    op.drop_table("invoices")
