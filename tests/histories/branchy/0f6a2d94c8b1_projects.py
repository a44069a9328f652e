"""projects, and the internal account with its operations project

Revision ID: 0f6a2d94c8b1
Revises: e91b47c2a0d3
Create Date: 2024-01-22 14:31:40.118377

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0f6a2d94c8b1"
down_revision: str | Sequence[str] | None = "e91b47c2a0d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

accounts = sa.table(
    "accounts", sa.column("id", sa.Integer), sa.column("name", sa.String),
    sa.column("slug", sa.String),
)


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "account_id",
            sa.Integer(),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(op.f("ix_projects_account_id"), "projects", ["account_id"])
    op.bulk_insert(accounts, [{"name": "Internal", "slug": "internal"}])
    op.execute(
        projects.insert().from_select(
            ["account_id", "name"],
            sa.select(accounts.c.id, sa.literal("Operations")).where(
                accounts.c.slug == "internal"
            ),
        )
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_projects_account_id"), table_name="projects")
    op.drop_table("projects")
    op.execute(accounts.delete().where(accounts.c.slug == "internal"))
