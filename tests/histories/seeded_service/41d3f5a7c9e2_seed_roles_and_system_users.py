"""seed roles and the system users

Revision ID: 41d3f5a7c9e2
Revises: 2c4e6a8b0d13
Create Date: 2024-05-06 11:02:48.117350

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "41d3f5a7c9e2"
down_revision: str | Sequence[str] | None = "2c4e6a8b0d13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

roles = sa.table(
    "roles",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("description", sa.String),
)
users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("full_name", sa.String),
)

ROLES = [
    {"name": "admin", "description": "Full access, including billing and user management"},
    {"name": "member", "description": "Creates and sends invoices"},
    {"name": "viewer", "description": "Read-only access"},
]
SYSTEM_USERS = [
    {"email": "ops@acme.example", "full_name": "Operations Team"},
    {"email": "billing-bot@acme.example", "full_name": None},
]


def upgrade() -> None:
    op.bulk_insert(roles, ROLES)
    op.bulk_insert(users, SYSTEM_USERS)


def downgrade() -> None:
    op.execute(users.delete().where(users.c.email.in_([u["email"] for u in SYSTEM_USERS])))
    op.execute(roles.delete().where(roles.c.name.in_([r["name"] for r in ROLES])))
