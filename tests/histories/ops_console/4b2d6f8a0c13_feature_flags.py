"""feature flags

Revision ID: 4b2d6f8a0c13
Revises: 3a1c5e7b9d02
Create Date: 2023-11-20 09:47:52.006310

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "4b2d6f8a0c13"
down_revision: str | Sequence[str] | None = '3a1c5e7b9d02'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # written by hand: the flags table was first made by a script on some environments
    op.execute(
        "CREATE TABLE IF NOT EXISTS feature_flags ("
        "name text PRIMARY KEY, enabled boolean NOT NULL DEFAULT false)"
    )
    op.execute(
        "INSERT INTO feature_flags (name) VALUES ('new_dashboard') ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS feature_flags")
