"""What revision code sends past SQLAlchemy: the driver's own cursors and commits.

Revision code can reach the database driver under SQLAlchemy
(`op.get_bind().connection.cursor()`, `op.get_bind().connection.dbapi_connection.commit()`,
`with driver_connection:`). SQLAlchemy's events never see that: left alone, such a statement
would skip the change gate's check at apply, the detection of a revision that commits
midway, and the trial's record of what a revision runs. So the engine's connections are made
with the psycopg2 classes below: their cursors and commits tell the watcher of the moment
(the apply's run, the trial's recorder; `watching`) what was sent that SQLAlchemy did not
announce. SQLAlchemy's own statements and commits are announced by its events just before
they reach the driver, and the engine's own driver use goes through `engine_cursor` and
`engine_commit`.

psycopg2 only, the bundled driver: with psycopg 3 (an explicit `postgresql+psycopg://`),
revision code's driver-level statements are not seen (docs/RUNBOOK.md says so).

The watcher is a context variable: the audit trail's writer thread, which sends the
engine's own rows on its own connection, runs in a context without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, Protocol

import sqlalchemy as sa


class DriverWatcher(Protocol):
    def raw_statement(self, driver: Any, statement: str) -> str | None:
        """A statement revision code sends on `driver` itself; the text to send instead
        (the trial keeps some statements from the server), or None to send it."""

    def raw_commit(self, driver: Any) -> None:
        """Revision code commits `driver`'s transaction itself."""


_watcher: ContextVar[DriverWatcher | None] = ContextVar("driver_watcher", default=None)


@contextmanager
def watching(watcher: DriverWatcher) -> Iterator[None]:
    token = _watcher.set(watcher)
    try:
        yield
    finally:
        _watcher.reset(token)


def connection_factory(dialect_driver: str) -> Any:
    """The psycopg2 connection class to connect with, or None for another driver."""
    if dialect_driver != "psycopg2":
        return None
    return _classes()[0]


def announce(engine: sa.Engine) -> None:
    """Mark SQLAlchemy's own statements and commits on `engine`'s connections as announced,
    just before they reach the driver."""
    sa.event.listen(engine, "before_cursor_execute", _announce_statement)
    sa.event.listen(engine, "commit", _announce_commit)


def engine_cursor(driver: Any) -> Any:
    """A cursor of the driver's whose statements are the engine's own, not revision code's."""
    cursor = driver.cursor()
    if hasattr(cursor, "engines_own"):
        cursor.engines_own = True
    return cursor


def engine_commit(driver: Any) -> None:
    if hasattr(driver, "announced_commit"):
        driver.announced_commit = True
    driver.commit()


def _announce_statement(  # noqa: PLR0917 - SQLAlchemy's event signature
    connection: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
    executemany: bool,
) -> None:
    if hasattr(cursor, "announced"):
        cursor.announced = True


def _announce_commit(connection: sa.Connection) -> None:
    driver: Any = connection.connection.dbapi_connection
    if hasattr(driver, "announced_commit"):
        driver.announced_commit = True


def _notify(cursor: Any, statement: Any, parameters: Any) -> str | None:
    """Tell the watcher of a statement SQLAlchemy did not announce; what to send instead of
    it, or None to send it as it is."""
    if cursor.announced or cursor.engines_own:
        cursor.announced = False  # one announcement, one statement
        return None
    watcher = _watcher.get()
    if watcher is None:
        return None
    text = statement.decode() if isinstance(statement, bytes) else str(statement)
    if parameters:
        # a statement the driver cannot fill in fails in execute itself, with its own error
        with suppress(Exception):
            text = cursor.mogrify(statement, parameters).decode()
    return watcher.raw_statement(cursor.connection, text)


_CLASSES: tuple[Any, Any] | None = None


def _classes() -> tuple[Any, Any]:
    """Made on first use: psycopg2 is imported only by a process that connects with it."""
    global _CLASSES  # noqa: PLW0603 - two classes, made once
    if _CLASSES is not None:
        return _CLASSES
    from psycopg2 import extensions  # noqa: PLC0415

    class WatchedCursor(extensions.cursor):  # type: ignore[misc]
        announced = False  # SQLAlchemy's next statement
        engines_own = False  # every statement (`engine_cursor`)

        def execute(self, query: Any, vars: Any = None) -> Any:
            instead = _notify(self, query, vars)
            if instead is not None:
                return super().execute(instead)
            return super().execute(query, vars)

        def executemany(self, query: Any, vars_list: Any) -> Any:
            rows = list(vars_list)
            instead = _notify(self, query, rows[0] if rows else None)
            if instead is not None:
                return super().execute(instead)
            return super().executemany(query, rows)

        def callproc(self, procname: str, parameters: Any = None) -> Any:
            call = f"SELECT * FROM {procname}({', '.join(['%s'] * len(parameters or ()))})"
            instead = _notify(self, call, parameters)
            if instead is not None:
                return super().execute(instead)
            return super().callproc(procname, parameters)

    class WatchedConnection(extensions.connection):  # type: ignore[misc]
        announced_commit = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.cursor_factory = WatchedCursor

        def commit(self) -> None:
            announced, self.announced_commit = self.announced_commit, False
            watcher = _watcher.get()
            if not announced and watcher is not None:
                watcher.raw_commit(self)
            super().commit()  # also what `with connection:` calls on its way out

    _CLASSES = (WatchedConnection, WatchedCursor)
    return _CLASSES
