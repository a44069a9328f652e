"""index orders.customer_id without blocking writes

Revision ID: b83e1f5a7c42
Revises: 6a2c8e4f0b31
Create Date: 2024-05-02 10:05:36.614520

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b83e1f5a7c42"
down_revision: str | Sequence[str] | None = "6a2c8e4f0b31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction block
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_orders_customer_id"), "orders", ["customer_id"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            op.f("ix_orders_customer_id"), table_name="orders", postgresql_concurrently=True
        )
