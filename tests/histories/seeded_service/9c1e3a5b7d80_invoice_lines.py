"""invoice lines

Revision ID: 9c1e3a5b7d80
Revises: 8b0d2f4a6c79
Create Date: 2024-07-08 14:38:12.950476

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "9c1e3a5b7d80"
down_revision: str | Sequence[str] | None = "8b0d2f4a6c79"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Created explicitly (and only if missing), so create_table must not create it again.
line_kind = postgresql.ENUM("service", "product", "discount", name="line_kind", create_type=False)


def upgrade() -> None:
    line_kind.create(op.get_bind(), checkfirst=True)
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("invoices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", line_kind, nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), server_default="1", nullable=False),
        sa.Column("unit_cents", sa.Integer(), nullable=False),
    )
    op.create_index(op.f("ix_invoice_lines_invoice_id"), "invoice_lines", ["invoice_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_invoice_lines_invoice_id"), table_name="invoice_lines")
    op.drop_table("invoice_lines")
    line_kind.drop(op.get_bind(), checkfirst=True)
