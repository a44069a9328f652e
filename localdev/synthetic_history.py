"""Write a synthetic Alembic script directory: N linear revisions that leave a trace.

Tests use it to prove each revision runs exactly once (every revision inserts its id into
`applied_log`), to make a revision fail half-way, or slow; benchmarks use it to measure
how costs grow with the length of the history.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ENV_PY = '''"""Alembic environment of a synthetic history (generated)."""
from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

config = context.config


def run() -> None:
    # Tests count how often the environment runs (each run loads every revision file).
    runs_log = os.environ.get("SYNTHETIC_ENV_RUNS")
    if runs_log:
        with open(runs_log, "a") as log:
            log.write("offline\\n" if context.is_offline_mode() else "online\\n")
    callbacks = config.attributes.get("on_version_apply")
    if context.is_offline_mode():
        context.configure(url="postgresql+psycopg2://", literal_binds=True,
                          transaction_per_migration=True, on_version_apply=callbacks)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is None:
        engine = sa.create_engine(os.environ["DATABASE_URL"], poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            _online(connection, callbacks)
        return
    _online(connection, callbacks)


def _online(connection: sa.Connection, callbacks: object) -> None:
    context.configure(connection=connection, transaction_per_migration=True,
                      on_version_apply=callbacks)
    with context.begin_transaction():
        context.run_migrations()


run()
'''

REVISION_PY = '''"""Synthetic revision {index}."""
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def revision_id(index: int) -> str:
    return hashlib.sha1(f"synthetic-{index}".encode()).hexdigest()[:12]  # noqa: S324 - an id


def write_history(
    folder: Path,
    count: int,
    *,
    fail_at: int | None = None,
    sleep_seconds: float = 0.0,
    non_transactional_at: int | None = None,
    sleep_at: int | None = None,
) -> list[str]:
    """Create env.py and `count` revisions in `folder`; return the ids, base first.

    Revision 1 creates `applied_log` and `items`; every revision then logs itself. The
    revision numbered `fail_at` (1-based) inserts its log row and then fails, so a
    transactional run must roll that row back. The revision `non_transactional_at` runs its
    statements in an `autocommit_block` (as CREATE INDEX CONCURRENTLY must), so what it did
    before a failure stays. `sleep_seconds` slows every revision, or only `sleep_at`.
    """
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV_PY)
    (folder / "script.py.mako").write_text("")
    ids = [revision_id(i) for i in range(1, count + 1)]
    for index, revision in enumerate(ids, start=1):
        body = []
        if index == 1:
            body += [
                "op.execute('CREATE TABLE applied_log (revision varchar(32) NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())')",
                "op.execute('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)')",
            ]
        body.append(f"op.execute(\"INSERT INTO applied_log (revision) VALUES ('{revision}')\")")
        if sleep_seconds and sleep_at in (None, index):
            body.append(f"op.execute('SELECT pg_sleep({sleep_seconds})')")
        if index == fail_at:
            body.append("op.execute('SELECT 1 / 0')")
        if index == non_transactional_at:
            body = ["with op.get_context().autocommit_block():", *("    " + b for b in body)]
        down = (
            ["op.execute('DROP TABLE items')", "op.execute('DROP TABLE applied_log')"]
            if index == 1
            else [f"op.execute(\"DELETE FROM applied_log WHERE revision = '{revision}'\")"]
        )
        (versions / f"{index:05d}_{revision}.py").write_text(
            REVISION_PY.format(
                index=index,
                revision=revision,
                down=ids[index - 2] if index > 1 else None,
                upgrade="\n".join("    " + line for line in body),
                downgrade="\n".join("    " + line for line in down),
            )
        )
    return ids
