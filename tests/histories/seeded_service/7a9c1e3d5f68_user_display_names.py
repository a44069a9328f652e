"""user display names, filled in from the full name or the email address

Revision ID: 7a9c1e3d5f68
Revises: 6f8b0d2c4e57
Create Date: 2024-06-10 16:27:55.301844

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "7a9c1e3d5f68"
down_revision: str | Sequence[str] | None = "6f8b0d2c4e57"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("email", postgresql.CITEXT),
    sa.column("full_name", sa.String),
    sa.column("display_name", sa.String),
)


def _display_name(email: str, full_name: str | None) -> str:
    if full_name:
        return full_name
    return email.split("@", 1)[0].replace("-", " ").replace(".", " ").title()


def upgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(length=120), nullable=True))
    conn = op.get_bind()
    for row in conn.execute(sa.select(users)):
        conn.execute(
            users.update()
            .where(users.c.id == row.id)
            .values(display_name=_display_name(row.email, row.full_name))
        )


def downgrade() -> None:
    op.drop_column("users", "display_name")
