"""look sessions up by token and expiry

Revision ID: 6d4f8b0c2e35
Revises: 5c3e7a9b1d24
Create Date: 2024-02-14 11:03:27.519448

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6d4f8b0c2e35"
down_revision: str | Sequence[str] | None = '5c3e7a9b1d24'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_sessions_token"), table_name="sessions")
    op.create_index(
        op.f("ix_sessions_token_expires_at"), "sessions", ["token", "expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_token_expires_at"), table_name="sessions")
    op.create_index(op.f("ix_sessions_token"), "sessions", ["token"], unique=False)
