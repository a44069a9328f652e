"""The sample application's schema: a small task tracker (users, projects, tasks).

These models are the target of ``alembic check``: every change here needs a migration in
``alembic/versions/`` that produces the same DDL, or the drift test fails.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    String,
    func,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint and index names: the migrations spell out the same names, so a
# later migration can drop or alter a constraint by name on every database alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TASK_STATUSES = ("todo", "in_progress", "done")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def email_domain_of(context: DefaultExecutionContext) -> str | None:
    """A new user's email_domain, as the backfill computed it for existing users."""
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]
    email = parameters.get("email")
    return email.split("@")[1].lower() if isinstance(email, str) and "@" in email else None


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Added NOT VALID, then validated by the next revision (migration_resource.online).
        CheckConstraint("email_domain = lower(email_domain)", name="email_domain_lowercase"),
        # Built CONCURRENTLY: users of one domain (an organisation's accounts).
        Index(None, "email_domain"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Nullable on purpose: a user may not have chosen one yet (rows that existed before it
    # were backfilled from the old ``name`` column, which a later revision dropped).
    display_name: Mapped[str | None] = mapped_column(String(200))
    # Filled for users that existed before it by a batched backfill; new users get it here.
    email_domain: Mapped[str | None] = mapped_column(String(255), default=email_domain_of)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    projects: Mapped[list[Project]] = relationship(back_populates="owner", passive_deletes=True)
    assigned_tasks: Mapped[list[Task]] = relationship(
        back_populates="assignee", passive_deletes=True
    )


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    owner: Mapped[User] = relationship(back_populates="projects")
    tasks: Mapped[list[Task]] = relationship(back_populates="project", passive_deletes=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in TASK_STATUSES)),
            name="status_valid",
        ),
        # The board view lists one project's tasks by status.
        Index(None, "project_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), server_default="todo")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    project: Mapped[Project] = relationship(back_populates="tasks")
    assignee: Mapped[User | None] = relationship(back_populates="assigned_tasks")
