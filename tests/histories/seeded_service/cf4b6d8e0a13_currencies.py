"""currencies, and the currency of each invoice

Revision ID: cf4b6d8e0a13
Revises: be3a5c7d9f02
Create Date: 2024-09-16 13:58:40.092287

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "cf4b6d8e0a13"
down_revision: str | Sequence[str] | None = "be3a5c7d9f02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    currencies = op.create_table(
        "currencies",
        sa.Column("code", sa.String(length=3), primary_key=True),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("minor_units", sa.SmallInteger(), nullable=False),
    )
    op.bulk_insert(
        currencies,
        [
            {"code": "EUR", "name": "Euro", "minor_units": 2},
            {"code": "USD", "name": "US Dollar", "minor_units": 2},
            {"code": "GBP", "name": "Pound Sterling", "minor_units": 2},
            {"code": "JPY", "name": "Yen", "minor_units": 0},
        ],
    )
    op.add_column(
        "invoices",
        sa.Column("currency_code", sa.String(length=3), server_default="EUR", nullable=False),
    )
    op.create_foreign_key(None, "invoices", "currencies", ["currency_code"], ["code"])


def downgrade() -> None:
    op.drop_constraint("fk_invoices_currency_code_currencies", "invoices", type_="foreignkey")
    op.drop_column("invoices", "currency_code")
    op.drop_table("currencies")
