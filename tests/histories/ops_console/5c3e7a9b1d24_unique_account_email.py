"""one account per email

Revision ID: 5c3e7a9b1d24
Revises: 4b2d6f8a0c13
Create Date: 2024-01-09 16:21:40.771935

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5c3e7a9b1d24"
down_revision: str | Sequence[str] | None = '4b2d6f8a0c13'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_unique_constraint(op.f("uq_accounts_email"), "accounts", ["email"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_accounts_email"), "accounts", type_="unique")
