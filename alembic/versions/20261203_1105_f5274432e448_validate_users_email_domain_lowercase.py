"""Validate ck_users_email_domain_lowercase, added NOT VALID by the previous revision.

VALIDATE CONSTRAINT scans the existing rows under a SHARE UPDATE EXCLUSIVE lock, which
blocks neither reads nor writes; a row that violates the constraint fails this revision
(and nothing else: the constraint stays NOT VALID, still checking new writes).

Revision ID: f5274432e448
Revises: 5c9800449803
Create Date: 2026-12-03 11:05:19.660873

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import validate_constraint

# revision identifiers, used by Alembic.
revision: str = "f5274432e448"
down_revision: str | Sequence[str] | None = "5c9800449803"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    validate_constraint(op, "ck_users_email_domain_lowercase", "users")


def downgrade() -> None:
    # Nothing: a validated constraint cannot be made NOT VALID again, and the previous
    # revision's downgrade drops it.
    pass
