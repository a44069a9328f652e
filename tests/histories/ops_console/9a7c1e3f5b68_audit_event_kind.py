"""audit events by kind

Revision ID: 9a7c1e3f5b68
Revises: 8f6b0d2e4a57
Create Date: 2024-05-30 10:12:45.337902

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9a7c1e3f5b68"
down_revision: str | Sequence[str] | None = '8f6b0d2e4a57'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("kind", sa.String(length=16), nullable=True))
    # the backfill takes longer than the default statement timeout on production
    op.execute("SET statement_timeout = '2h'")
    op.execute(
        "UPDATE audit_events SET kind = split_part(action, '.', 1) WHERE kind IS NULL"
    )
    op.execute("RESET statement_timeout")


def downgrade() -> None:
    op.drop_column("audit_events", "kind")
