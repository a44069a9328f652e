"""Data migration: fill users.email_domain for existing users, in batches.

``backfill`` updates at most ``batch_rows`` users per transaction, walking the primary key
in order with a pause between batches, so no row stays locked longer than one batch and
the application's writes go on. Each batch records how far it got in the same statement,
so a run that dies (a Lambda timeout, a terminated session) resumes after the last
committed batch on the next run: every user is updated exactly once. The WHERE clause is
checked again by each batch, so a user the application gave a domain meanwhile is left
alone.

This revision holds nothing but the backfill: run again, it resumes where it stopped, so a
failure does not block later runs.

Revision ID: 6dcb9e3c139f
Revises: b33d0b47f2df
Create Date: 2026-12-02 09:20:47.129560

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migration_resource.online import backfill

# revision identifiers, used by Alembic.
revision: str = "6dcb9e3c139f"
down_revision: str | Sequence[str] | None = "b33d0b47f2df"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    backfill(
        op,
        table="users",
        set_={"email_domain": "lower(split_part(email, '@', 2))"},
        where="email_domain IS NULL",
        batch_rows=1000,
        pause_seconds=0.1,
    )


def downgrade() -> None:
    # Nothing: the previous revision's downgrade drops the column.
    pass
