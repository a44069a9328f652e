"""every user has a role: system users are admins, everyone else a member

Revision ID: 6f8b0d2c4e57
Revises: 5e7a9c1b3d46
Create Date: 2024-06-03 10:11:29.845501

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6f8b0d2c4e57"
down_revision: str | Sequence[str] | None = "5e7a9c1b3d46"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _role_id(conn: sa.Connection, name: str) -> int:
    row = conn.execute(
        sa.text("SELECT id FROM roles WHERE name = :name"), {"name": name}
    ).fetchone()
    if row is None:
        raise RuntimeError(f"role {name!r} is missing: revision 41d3f5a7c9e2 seeds it")
    return int(row.id)


def upgrade() -> None:
    conn = op.get_bind()
    admin = _role_id(conn, "admin")
    member = _role_id(conn, "member")
    conn.execute(
        sa.text(
            "UPDATE users SET role_id = :role WHERE role_id IS NULL "
            "AND email LIKE '%@acme.example'"
        ),
        {"role": admin},
    )
    conn.execute(
        sa.text("UPDATE users SET role_id = :role WHERE role_id IS NULL"), {"role": member}
    )
    op.alter_column("users", "role_id", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    op.alter_column("users", "role_id", existing_type=sa.Integer(), nullable=True)
    op.execute("UPDATE users SET role_id = NULL")
