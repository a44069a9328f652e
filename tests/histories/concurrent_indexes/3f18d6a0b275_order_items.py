"""order items

Revision ID: 3f18d6a0b275
Revises: e5a7c3b9f164
Create Date: 2024-06-03 11:37:14.902258

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3f18d6a0b275"
down_revision: str | Sequence[str] | None = "e5a7c3b9f164"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "order_id", sa.Integer(), sa.ForeignKey("orders.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("quantity", sa.Integer(), server_default="1", nullable=False),
        sa.Column("unit_cents", sa.Integer(), nullable=False),
    )
    # a new, empty table: a plain index blocks nobody
    op.create_index(op.f("ix_order_items_sku"), "order_items", ["sku"])


def downgrade() -> None:
    op.drop_index(op.f("ix_order_items_sku"), table_name="order_items")
    op.drop_table("order_items")
