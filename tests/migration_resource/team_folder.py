"""A team's own migrations folder, as the engine and bundle tests build it.

A Flask-Migrate `migrations/` (alembic.ini, an env.py that fails if run, script.py.mako,
versions/) with two revisions written as Flask-Migrate's autogenerate writes them, and what
the names of their constraints are with the Flask naming convention and without one.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

# Flask-SQLAlchemy's documented convention, as many Flask-Migrate projects set it.
FLASK_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# What a Flask-Migrate env.py does first: import the application. There is no application
# here, and a marker file says whether anything ran it at all.
FAILING_ENV_PY = '''"""Flask-Migrate's env.py: it needs the Flask application, absent here."""
from pathlib import Path

Path(__file__).with_name("env_py_ran").write_text("env.py was run")
from flask import current_app  # noqa: E402 - Flask is not installed here, on purpose

raise RuntimeError("the team's env.py must not run under the engine")
'''

ALEMBIC_INI = """# A generic, single database configuration (Flask-Migrate's template).
[alembic]
# the engine never reads this file

[loggers]
keys = root
"""

# Autogenerate output as Flask-Migrate writes it: constraints left unnamed (the convention
# names them), op.f() names, a foreign key created with the name None, a check constraint
# whose name the convention completes.
USERS = '''"""users

Revision ID: a1f0c3d5e7b9
Revises:
Create Date: 2026-01-05 10:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = "a1f0c3d5e7b9"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )


def downgrade():
    op.drop_table("users")
'''

POSTS = '''"""posts

Revision ID: b2e1d4c6f8a0
Revises: a1f0c3d5e7b9
Create Date: 2026-01-12 10:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = "b2e1d4c6f8a0"
down_revision = "a1f0c3d5e7b9"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("editor_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_posts_title"), ["title"], unique=False)
        batch_op.create_foreign_key(None, "users", ["editor_id"], ["id"])
    op.create_check_constraint("title_not_blank", "posts", "title <> ''")


def downgrade():
    op.drop_table("posts")
'''

CONVENTION_NAMES = {
    "pk_users", "uq_users_email", "pk_posts", "fk_posts_user_id_users",
    "fk_posts_editor_id_users", "ck_posts_title_not_blank", "ix_posts_title",
}
POSTGRESQL_NAMES = {
    "users_pkey", "users_email_key", "posts_pkey", "posts_user_id_fkey", "posts_editor_id_fkey",
    "title_not_blank", "ix_posts_title",
}


def flask_migrate_folder(root: Path) -> Path:
    """`root/migrations` laid out as `flask db init` leaves it, with two revisions."""
    folder = root / "migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "alembic.ini").write_text(ALEMBIC_INI)
    (folder / "env.py").write_text(FAILING_ENV_PY)
    (folder / "script.py.mako").write_text("${message}\n")
    (folder / "README").write_text("Single-database configuration for Flask.\n")
    (folder / "versions" / "a1f0c3d5e7b9_users.py").write_text(USERS)
    (folder / "versions" / "b2e1d4c6f8a0_posts.py").write_text(POSTS)
    return folder


def names(db: sa.Engine) -> set[str]:
    """Constraint and index names of the application's tables."""
    with db.connect() as conn:
        constraints = conn.execute(sa.text(
            "SELECT conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
            "WHERE t.relname IN ('users', 'posts') AND c.contype <> 'n'")).scalars()
        indexes = conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('users', 'posts')")).scalars()
        return set(constraints) | set(indexes)
