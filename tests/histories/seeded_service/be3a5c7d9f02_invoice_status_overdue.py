"""invoice status 'overdue', set on invoices sent more than 30 days ago

Revision ID: be3a5c7d9f02
Revises: ad2f4b6c8e91
Create Date: 2024-09-02 08:47:19.733612

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "be3a5c7d9f02"
down_revision: str | Sequence[str] | None = "ad2f4b6c8e91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE invoice_status ADD VALUE IF NOT EXISTS 'overdue' AFTER 'sent'")
    # committed above, so usable from here on
    op.execute(
        "UPDATE invoices SET status = 'overdue' "
        "WHERE status = 'sent' AND issued_on < current_date - 30"
    )


def downgrade() -> None:
    op.execute("UPDATE invoices SET status = 'sent' WHERE status = 'overdue'")
    op.execute("ALTER TABLE invoices ALTER COLUMN status DROP DEFAULT")
    op.execute("ALTER TYPE invoice_status RENAME TO invoice_status_old")
    op.execute("CREATE TYPE invoice_status AS ENUM ('draft', 'sent', 'paid', 'void')")
    op.execute(
        "ALTER TABLE invoices ALTER COLUMN status TYPE invoice_status "
        "USING status::text::invoice_status"
    )
    op.execute("ALTER TABLE invoices ALTER COLUMN status SET DEFAULT 'draft'")
    op.execute("DROP TYPE invoice_status_old")
