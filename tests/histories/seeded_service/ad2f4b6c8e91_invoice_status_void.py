"""invoice status 'void'

Revision ID: ad2f4b6c8e91
Revises: 9c1e3a5b7d80
Create Date: 2024-08-19 11:20:36.481095

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ad2f4b6c8e91"
down_revision: str | Sequence[str] | None = "9c1e3a5b7d80"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A value added by ALTER TYPE cannot be used in the transaction that adds it: end the
    # migration's transaction first.
    op.execute("COMMIT")
    op.execute("ALTER TYPE invoice_status ADD VALUE 'void'")


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value: rebuild the type without it.
    op.execute("UPDATE invoices SET status = 'draft' WHERE status = 'void'")
    op.execute("ALTER TABLE invoices ALTER COLUMN status DROP DEFAULT")
    op.execute("ALTER TYPE invoice_status RENAME TO invoice_status_old")
    op.execute("CREATE TYPE invoice_status AS ENUM ('draft', 'sent', 'paid')")
    op.execute(
        "ALTER TABLE invoices ALTER COLUMN status TYPE invoice_status "
        "USING status::text::invoice_status"
    )
    op.execute("ALTER TABLE invoices ALTER COLUMN status SET DEFAULT 'draft'")
    op.execute("DROP TYPE invoice_status_old")
