"""The sample application's models against a database migrated to head."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sample_app.models import Project, Task, User
from tests.alembic.support import upgrade


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = sa.create_engine(database_url, poolclass=NullPool)
    with engine.connect() as conn:
        upgrade(conn, "head")
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def add_user(session: Session, email: str = "ada@example.com") -> User:
    user = User(email=email, display_name="Ada Lovelace")
    session.add(user)
    session.flush()
    return user


def test_user_project_and_task_round_trip_with_server_defaults(session: Session) -> None:
    owner = add_user(session)
    project = Project(owner=owner, name="Analytical Engine")
    task = Task(project=project, assignee=owner, title="Write the first program")
    session.add_all([project, task])
    session.commit()
    session.expire_all()

    stored = session.scalars(sa.select(Task)).one()
    assert stored.status == "todo"
    assert stored.created_at.tzinfo is not None
    assert stored.project.owner.email == "ada@example.com"
    assert stored.assignee is not None
    assert stored.assignee.assigned_tasks == [stored]
    assert owner.display_name == "Ada Lovelace"


def test_foreign_key_is_enforced(session: Session) -> None:
    session.add(Task(project_id=424242, title="orphan"))

    with pytest.raises(sa.exc.IntegrityError) as excinfo:
        session.flush()
    assert isinstance(excinfo.value.orig, psycopg2.errors.ForeignKeyViolation)


def test_task_status_check_constraint_is_enforced(session: Session) -> None:
    project = Project(owner=add_user(session), name="p")
    session.add(Task(project=project, title="t", status="blocked"))

    with pytest.raises(sa.exc.IntegrityError) as excinfo:
        session.flush()
    assert isinstance(excinfo.value.orig, psycopg2.errors.CheckViolation)
    assert excinfo.value.orig.diag.constraint_name == "ck_tasks_status_valid"


def test_user_email_is_unique(session: Session) -> None:
    add_user(session)

    with pytest.raises(sa.exc.IntegrityError) as excinfo:
        add_user(session)
    assert isinstance(excinfo.value.orig, psycopg2.errors.UniqueViolation)
    assert excinfo.value.orig.diag.constraint_name == "uq_users_email"


def test_deleting_a_user_removes_their_projects_and_unassigns_their_tasks(
    session: Session,
) -> None:
    owner = add_user(session, "owner@example.com")
    helper = add_user(session, "helper@example.com")
    kept = Project(owner=helper, name="kept")
    session.add_all(
        [
            Task(project=Project(owner=owner, name="gone"), title="goes with its project"),
            Task(project=kept, assignee=owner, title="stays, unassigned"),
        ]
    )
    session.commit()

    session.delete(owner)
    session.commit()
    session.expire_all()

    assert session.scalars(sa.select(Project.name)).all() == ["kept"]
    remaining = session.scalars(sa.select(Task)).one()
    assert remaining.title == "stays, unassigned"
    assert remaining.assignee_id is None
