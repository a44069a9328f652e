"""Add the nullable column users.email_domain (the part of the email after the @).

The first of five revisions showing the online building blocks of
``migration_resource.online``: a nullable column is a metadata-only change, so adding it
takes a brief lock and rewrites nothing. New users get it from the application (the model's
default); the next revision fills it for the users that existed before, in batches; then a
CHECK is added NOT VALID, validated by the revision after it, and an index is built
CONCURRENTLY.

Revision ID: b33d0b47f2df
Revises: d5b0686155dc
Create Date: 2026-12-02 09:15:12.480311

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b33d0b47f2df"
down_revision: str | Sequence[str] | None = "d5b0686155dc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_domain", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "email_domain")
