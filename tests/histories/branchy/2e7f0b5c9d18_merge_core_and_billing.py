"""merge the core line and the billing branch

Revision ID: 2e7f0b5c9d18
Revises: 7c3e58b1d2a6, d5a91c3e7f40
Create Date: 2024-02-12 09:03:47.662391

"""
from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "2e7f0b5c9d18"
down_revision: str | Sequence[str] | None = ("7c3e58b1d2a6", "d5a91c3e7f40")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
