"""unique index on customers.email_normalized, built concurrently

Revision ID: e5a7c3b9f164
Revises: 0c94a2e6d853
Create Date: 2024-05-14 09:12:58.048631

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e5a7c3b9f164"
down_revision: str | Sequence[str] | None = "0c94a2e6d853"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ux_customers_email_normalized",
            "customers",
            ["email_normalized"],
            unique=True,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ux_customers_email_normalized", table_name="customers", postgresql_concurrently=True
        )
