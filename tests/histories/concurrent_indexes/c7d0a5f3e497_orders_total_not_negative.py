"""orders.total_cents is never negative (added NOT VALID, then validated)

Revision ID: c7d0a5f3e497
Revises: 92b6e4c8a386
Create Date: 2024-07-01 08:28:44.160395

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c7d0a5f3e497"
down_revision: str | Sequence[str] | None = "92b6e4c8a386"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT VALID takes a brief lock; VALIDATE scans without blocking writes
    op.execute(
        "ALTER TABLE orders ADD CONSTRAINT ck_orders_total_cents_not_negative "
        "CHECK (total_cents >= 0) NOT VALID"
    )
    op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_orders_total_cents_not_negative")


def downgrade() -> None:
    # op.f(): a plain name would be run through the "ck" naming convention again
    # (ck_orders_ck_orders_...)
    op.drop_constraint(op.f("ck_orders_total_cents_not_negative"), "orders", type_="check")
