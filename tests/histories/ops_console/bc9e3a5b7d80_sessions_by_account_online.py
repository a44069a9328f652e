"""sessions by account, built online

Revision ID: bc9e3a5b7d80
Revises: ab8d2f4a6c79
Create Date: 2024-09-03 09:26:58.615731

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "bc9e3a5b7d80"
down_revision: str | Sequence[str] | None = 'ab8d2f4a6c79'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction block
    with op.get_context().autocommit_block():
        op.drop_index(
            op.f("ix_sessions_token_expires_at"), table_name="sessions",
            postgresql_concurrently=True,
        )
        op.create_index(
            op.f("ix_sessions_account_id"), "sessions", ["account_id"],
            postgresql_concurrently=True,
        )
        op.create_index(
            op.f("ix_sessions_token"), "sessions", ["token"], postgresql_concurrently=True,
        )
        op.execute("REINDEX INDEX CONCURRENTLY pk_accounts")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(op.f("ix_sessions_token"), table_name="sessions",
                      postgresql_concurrently=True)
        op.drop_index(op.f("ix_sessions_account_id"), table_name="sessions",
                      postgresql_concurrently=True)
        op.create_index(
            op.f("ix_sessions_token_expires_at"), "sessions", ["token", "expires_at"],
            postgresql_concurrently=True,
        )
