"""Add the CHECK constraint ck_users_email_domain_lowercase NOT VALID.

NOT VALID takes only a brief lock and does not scan the table: rows written from now on
are checked at once, the existing ones by the next revision's VALIDATE CONSTRAINT.

Revision ID: 5c9800449803
Revises: 6dcb9e3c139f
Create Date: 2026-12-03 11:00:38.216047

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import add_constraint_not_valid

# revision identifiers, used by Alembic.
revision: str = "5c9800449803"
down_revision: str | Sequence[str] | None = "6dcb9e3c139f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_constraint_not_valid(
        op, "ck_users_email_domain_lowercase", "users",
        check="email_domain = lower(email_domain)",
    )


def downgrade() -> None:
    # op.f(): a plain name would be run through the "ck" naming convention again.
    op.drop_constraint(op.f("ck_users_email_domain_lowercase"), "users", type_="check")
