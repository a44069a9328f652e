"""A throwaway database on the live server, for running revision code away from live data.

Planning (status, the dry run, the gate's check, a deploy's plan) must see what a revision
that reads rows really sends, and that needs running its code. It runs here: a database of
its own, created for one plan and dropped after it. PostgreSQL keeps databases apart: a
session connected to the scratch database cannot read, write or lock a table of the live
database (relation locks and advisory locks are per database), whatever the revision does
with its connection (`op.get_bind().engine.begin()`, `commit()`, a `COMMIT` inside a string).

The only statements sent on the live database's server for it are `CREATE DATABASE` and
`DROP DATABASE`, on a connection of their own; the live database itself is read, READ ONLY.

Names carry their creation time: a process killed while planning (a Lambda timeout) leaves
its scratch database behind, and the next plan drops those older than an hour, never one a
plan running now may use.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

logger = logging.getLogger(__name__)

PREFIX = "migration_trial_"
LEFT_BEHIND_AFTER_SECONDS = 3600
# Dropping must not hang a plan behind some other session.
DROP_LOCK_TIMEOUT = "5s"


class ScratchUnavailable(Exception):
    """The scratch database could not be created (no CREATEDB privilege, say)."""


def scratch_name(now: float | None = None) -> str:
    created = int(time.time() if now is None else now)
    return f"{PREFIX}{created}_{uuid.uuid4().hex[:8]}"


_OURS = re.compile(rf"^{PREFIX}(\d{{10}})_[0-9a-f]{{8}}$")


def created_at(name: str) -> int | None:
    """When a scratch database of ours was made; None for any other name."""
    found = _OURS.match(name)
    return int(found.group(1)) if found else None


@contextmanager
def scratch_database(
    server: sa.Engine, connect_to: Callable[[str], sa.Engine], *,
    extensions: tuple[tuple[str, str], ...], schema: str,
) -> Iterator[sa.Engine]:
    """An engine on a new, empty database; dropped when the block ends, whatever happened.

    `server` reaches the live database's server (its connection only creates and drops);
    `connect_to(name)` builds an engine on database `name` with the live credentials.
    The live database's `extensions` ((name, schema) pairs) are installed where they can be,
    in the same schemas, and `schema` exists.
    """
    name = scratch_name()
    with _admin(server) as admin:
        _drop_left_behind(admin)
        try:
            admin.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except sa.exc.DBAPIError as error:
            raise ScratchUnavailable(_one_line(error.orig or error)) from None
    engine: sa.Engine | None = None
    try:
        engine = connect_to(name)
        _prepare(engine, extensions, schema)
        yield engine
    finally:
        if engine is not None:
            engine.dispose()
        _drop(server, name)


@contextmanager
def _admin(server: sa.Engine) -> Iterator[sa.Connection]:
    connection = server.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield connection
    finally:
        connection.close()


def _prepare(
    engine: sa.Engine, extensions: tuple[tuple[str, str], ...], schema: str
) -> None:
    with engine.connect() as opened:
        connection = opened.execution_options(isolation_level="AUTOCOMMIT")
        quote = connection.dialect.identifier_preparer.quote
        for name in sorted({schema} | {where for _, where in extensions} - {"public"}):
            connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote(name)}")
        for extension, where in extensions:
            # What the live database has installed (pgcrypto, citext...), where this server
            # can, so revisions find it where they do live; one that failed says so itself.
            try:
                connection.exec_driver_sql(
                    f"CREATE EXTENSION IF NOT EXISTS {quote(extension)} SCHEMA {quote(where)}")
            except sa.exc.DBAPIError as error:
                logger.info("Scratch database: extension %s not installed (%s)", extension,
                            _one_line(error.orig or error))


def _drop(server: sa.Engine, name: str) -> None:
    try:
        with _admin(server) as admin:
            admin.exec_driver_sql(f"SET lock_timeout = '{DROP_LOCK_TIMEOUT}'")
            force = " WITH (FORCE)" if (admin.dialect.server_version_info or (0,)) >= (13,) else ""
            admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"{force}')
    except sa.exc.SQLAlchemyError as error:
        logger.warning("Could not drop the scratch database %s (%s); the next plan drops it "
                       "after an hour, or drop it by hand: DROP DATABASE \"%s\"", name,
                       _one_line(getattr(error, "orig", None) or error), name)


def _drop_left_behind(admin: sa.Connection, now: float | None = None) -> None:
    names = admin.execute(
        sa.text("SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, :p)"),
        {"p": PREFIX}).scalars().all()
    current = time.time() if now is None else now
    for name in names:
        created = created_at(name)
        if created is None or current - created < LEFT_BEHIND_AFTER_SECONDS:
            continue
        logger.warning("Dropping the scratch database %s left by an interrupted plan", name)
        try:
            admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        except sa.exc.DBAPIError as error:  # in use after all, or not ours to drop
            logger.info("Left %s as it is: %s", name, _one_line(error.orig or error))


def _one_line(error: BaseException) -> str:
    text = str(error).split("\n(Background on this error")[0]
    return " ".join(text.split())[:300]
