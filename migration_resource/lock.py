"""The migration lock: a PostgreSQL session-level advisory lock held by the session that works.

Session-level (not ``_xact_``) because Alembic commits per migration and autocommit blocks
commit too. It is held by the very session that runs the revisions' DDL (`session_lock`):
when that session dies (terminated, the server restarted, the Lambda killed), its work and
its lock end together, so no second migrator can take the lock while the first one's
statements still run. A lock on a separate connection would not do that: terminate that
connection and the work carries on without it while another run starts. When the Lambda
dies the server closes the session and the lock goes with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

logger = logging.getLogger(__name__)

BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0)  # then 5 s between tries until the wait ends
MAX_BACKOFF_SECONDS = 5.0

_HOLDER = sa.text(
    """
    SELECT a.pid, a.application_name, a.usename, a.client_addr::text AS client_addr,
           a.state, a.state_change, a.query_start, a.backend_start
    FROM pg_catalog.pg_locks l
    JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
      AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.objsubid = 1
    """
)


def lock_key(schema: str) -> int:
    """A stable signed 64-bit key per database schema, shared by every process that migrates."""
    digest = hashlib.sha256(f"db-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    user: str
    client_addr: str | None
    # For an idle session that is when it last finished a statement; our own lock sessions
    # run nothing after taking the lock, so for them it is when the lock was taken.
    since: datetime | None

    def describe(self) -> str:
        since = self.since.isoformat(timespec="seconds") if self.since else "an unknown time"
        app = self.application_name or "(no application name)"
        return f"pid {self.pid}, application {app!r}, user {self.user!r}, since {since}"


class LockBusy(RuntimeError):
    """Another session held the migration lock for the whole wait."""

    def __init__(self, waited_seconds: float, holder: LockHolder | None) -> None:
        self.waited_seconds = waited_seconds
        self.holder = holder
        who = holder.describe() if holder else "a session that has just released it"
        super().__init__(
            f"Another migration holds the migration lock ({who}); waited "
            f"{waited_seconds:.0f} s"
        )


def find_holder(connection: sa.Connection, key: int) -> LockHolder | None:
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    row = connection.execute(_HOLDER, {"high": high, "low": low}).mappings().first()
    if row is None:
        return None
    idle = row["state"] in ("idle", "idle in transaction")
    return LockHolder(
        pid=int(row["pid"]),
        application_name=str(row["application_name"] or ""),
        user=str(row["usename"] or ""),
        client_addr=row["client_addr"],
        since=row["state_change"] if idle else row["query_start"],
    )


@contextmanager
def session_lock(
    connection: sa.Connection,
    key: int,
    *,
    wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[sa.Connection]:
    """Hold the lock on `connection` itself for the block; LockBusy after the wait.

    The connection is handed back outside a transaction (Alembic opens its own). Releasing
    is best effort: when the session has died, the server released the lock with it, and
    what the block did is reported, not hidden behind the release's error.
    """
    # Waiting runs in autocommit: no transaction stays open between tries, and the session's
    # last statement (pg_stat_activity.query) says what it waits for.
    level = connection.get_isolation_level()
    connection.commit()  # reading the level began a transaction; the switch needs none
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        _wait_for_lock(connection, key, wait_seconds=wait_seconds, sleep=sleep, clock=clock)
    finally:
        connection.commit()  # SQLAlchemy marks a transaction even in autocommit
        connection.execution_options(isolation_level=level)
    try:
        yield connection
    finally:
        try:
            connection.rollback()
            connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            connection.commit()
        except sa.exc.SQLAlchemyError as error:
            logger.warning(
                "Could not release the migration lock (%s); a session that ended released it "
                "with itself", " ".join(str(error).split("\n")[0].split())[:200],
            )


def _wait_for_lock(
    connection: sa.Connection, key: int, *, wait_seconds: float,
    sleep: Callable[[float], None], clock: Callable[[], float],
) -> None:
    started = clock()
    attempt = 0
    while not connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
        waited = clock() - started
        holder = find_holder(connection, key)
        if waited >= wait_seconds:
            raise LockBusy(waited, holder)
        delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
        if attempt >= len(BACKOFF_SECONDS):
            delay = MAX_BACKOFF_SECONDS
        delay = min(delay, max(wait_seconds - waited, 0.0))
        if attempt == 0:
            logger.info(
                "Waiting for the migration lock held by %s",
                holder.describe() if holder else "another session",
            )
        attempt += 1
        sleep(delay)


@contextmanager
def migration_lock(
    engine: sa.Engine,
    key: int,
    *,
    wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[sa.Connection]:
    """The lock on a connection of its own, for work that runs no DDL on live tables (a
    trial run that is rolled back, the baseline's replay into a scratch schema)."""
    with engine.connect() as connection, session_lock(
        connection, key, wait_seconds=wait_seconds, sleep=sleep, clock=clock
    ):
        yield connection
