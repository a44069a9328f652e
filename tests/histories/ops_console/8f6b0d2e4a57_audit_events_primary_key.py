"""a key for the audit log

Revision ID: 8f6b0d2e4a57
Revises: 7e5a9c1d3f46
Create Date: 2024-04-22 13:38:09.884120

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8f6b0d2e4a57"
down_revision: str | Sequence[str] | None = '7e5a9c1d3f46'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the audit log is big: never give up waiting for its lock
    op.execute("SET lock_timeout = '0'")
    op.create_primary_key(op.f("pk_audit_events"), "audit_events", ["id"])


def downgrade() -> None:
    op.drop_constraint(op.f("pk_audit_events"), "audit_events", type_="primary")
