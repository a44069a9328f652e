"""case-insensitive emails (citext)

Revision ID: 5e7a9c1b3d46
Revises: 41d3f5a7c9e2
Create Date: 2024-05-21 15:44:03.660128

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "5e7a9c1b3d46"
down_revision: str | Sequence[str] | None = "41d3f5a7c9e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS citext")
    op.alter_column(
        "users",
        "email",
        existing_type=sa.String(length=255),
        type_=postgresql.CITEXT(),
        existing_nullable=False,
        postgresql_using="email::citext",
    )


def downgrade() -> None:
    op.alter_column(
        "users",
        "email",
        existing_type=postgresql.CITEXT(),
        type_=sa.String(length=255),
        existing_nullable=False,
        postgresql_using="email::varchar(255)",
    )
    op.execute("DROP EXTENSION IF EXISTS citext")
