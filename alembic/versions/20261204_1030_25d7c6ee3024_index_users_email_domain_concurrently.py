"""Add the index ix_users_email_domain, built CONCURRENTLY (writes to users go on).

``create_index_concurrently`` runs outside the revision's transaction, as PostgreSQL
requires. A build that was interrupted leaves an INVALID index behind (``status`` lists
it): the next run drops it concurrently and builds it again, and an index that is not
valid after the build fails the revision rather than pass for a success.

Revision ID: 25d7c6ee3024
Revises: f5274432e448
Create Date: 2026-12-04 10:30:05.774902

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import create_index_concurrently, drop_index_concurrently

# revision identifiers, used by Alembic.
revision: str = "25d7c6ee3024"
down_revision: str | Sequence[str] | None = "f5274432e448"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(op, op.f("ix_users_email_domain"), "users", ["email_domain"])


def downgrade() -> None:
    drop_index_concurrently(op, op.f("ix_users_email_domain"), table="users")
