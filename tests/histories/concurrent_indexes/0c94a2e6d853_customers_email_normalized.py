"""customers.email_normalized, backfilled in batches

Revision ID: 0c94a2e6d853
Revises: b83e1f5a7c42
Create Date: 2024-05-13 14:50:21.377094

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0c94a2e6d853"
down_revision: str | Sequence[str] | None = "b83e1f5a7c42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = 500
BACKFILL = sa.text(
    "UPDATE customers SET email_normalized = lower(trim(email)) WHERE id IN ("
    "SELECT id FROM customers WHERE email_normalized IS NULL ORDER BY id LIMIT :batch)"
)


def upgrade() -> None:
    op.add_column("customers", sa.Column("email_normalized", sa.String(length=255), nullable=True))
    conn = op.get_bind()
    while True:
        result = conn.execute(BACKFILL, {"batch": BATCH_SIZE})
        if result.rowcount == 0:
            break


def downgrade() -> None:
    op.drop_column("customers", "email_normalized")
