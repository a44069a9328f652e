"""order cancellation time; pending-orders and order-items indexes built concurrently

Revision ID: 92b6e4c8a386
Revises: 3f18d6a0b275
Create Date: 2024-06-20 16:03:29.517730

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "92b6e4c8a386"
down_revision: str | Sequence[str] | None = "3f18d6a0b275"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # in the migration's transaction...
    op.add_column("orders", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    # ...which the autocommit block commits before building the indexes outside of it
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_order_items_order_id"), "order_items", ["order_id"],
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_orders_pending_placed_at",
            "orders",
            ["placed_at"],
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_orders_pending_placed_at", table_name="orders", postgresql_concurrently=True
        )
        op.drop_index(
            op.f("ix_order_items_order_id"), table_name="order_items",
            postgresql_concurrently=True,
        )
    op.drop_column("orders", "cancelled_at")
