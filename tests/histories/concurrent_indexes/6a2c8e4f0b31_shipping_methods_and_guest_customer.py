"""shipping methods (reference data) and the guest-checkout customer

Revision ID: 6a2c8e4f0b31
Revises: 1d7f3b9e5a20
Create Date: 2024-04-15 15:22:47.990163

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6a2c8e4f0b31"
down_revision: str | Sequence[str] | None = "1d7f3b9e5a20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

customers = sa.table("customers", sa.column("email", sa.String), sa.column("name", sa.String))
GUEST_EMAIL = " Guest@Checkout.Shop.Example "


def upgrade() -> None:
    shipping_methods = op.create_table(
        "shipping_methods",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(length=20), nullable=False, unique=True),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
    )
    op.bulk_insert(
        shipping_methods,
        [
            {"code": "standard", "name": "Standard (3-5 days)", "price_cents": 495},
            {"code": "express", "name": "Express (next day)", "price_cents": 1295},
            {"code": "pickup", "name": "Pick up in store", "price_cents": 0},
        ],
    )
    op.add_column(
        "orders",
        sa.Column(
            "shipping_method_id", sa.Integer(), sa.ForeignKey("shipping_methods.id"),
            nullable=True,
        ),
    )
    # the address typed in by hand years ago, spaces and capitals included
    op.bulk_insert(customers, [{"email": GUEST_EMAIL, "name": "Guest checkout"}])


def downgrade() -> None:
    op.execute(customers.delete().where(customers.c.email == GUEST_EMAIL))
    op.drop_constraint("fk_orders_shipping_method_id_shipping_methods", "orders",
                       type_="foreignkey")
    op.drop_column("orders", "shipping_method_id")
    op.drop_table("shipping_methods")
