"""A trial run: what the pending revisions really execute, seen in a scratch database.

Alembic's offline mode renders SQL without a database, so `connection.execute()` returns
None there and a data migration that reads rows (`op.get_bind().execute(...).fetchone()`,
`for row in connection.execute(table.select())`) cannot be rendered at all. For those the
engine runs the revisions for real, but never on the live database: in a scratch database of
the same server (`migration_resource.scratch_database`), created for this plan and dropped
after it. The history is replayed there up to the revision the live database is at, then the
pending revisions run as the real apply would run them (one transaction per revision,
autocommit blocks, `CONCURRENTLY`), and every statement they send, through any connection of
the scratch engine, is recorded.

What it cannot see: rows. The scratch tables are empty (or hold what the history's own
seeds insert), so a data migration that loops over rows shows the statements it sends for
the rows it finds there, not for the live ones; the real apply sees each statement before it
is sent (`migration_resource.statement_guard`). Nor can it see revision code that opens a
connection of its own to the live database (from an environment variable, say).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from migration_resource.core import ENGINE_LOGGER  # where the online helpers log too
from migration_resource.driver_watch import watching
from migration_resource.execution import alembic_quiet, upgrade
from migration_resource.revisions import alembic_config
from migration_resource.scratch_database import ScratchUnavailable, scratch_database

if TYPE_CHECKING:
    # Alembic loads when a trial runs, not with this module: the deploy's no-change path
    # imports the plan (and so this module) without ever trying a revision.
    from alembic.script import ScriptDirectory

    from migration_resource.settings import EngineSettings

logger = logging.getLogger(__name__)

# What Alembic and SQLAlchemy read for themselves: not the revision's statements.
_BOOKKEEPING_READ = re.compile(
    r"^\s*SELECT\b.*\b(pg_catalog\.|alembic_version\.version_num\s+FROM)", re.I | re.S
)


@dataclass(frozen=True)
class TrialFailure:
    revision: str  # the revision whose code raised, or the one the replay stopped at
    error_type: str
    message: str
    replaying: bool = False  # raised while replaying the applied history, not a pending one


@dataclass(frozen=True)
class TrialResult:
    captured: dict[str, tuple[str, ...]]  # revision → statements sent, in order
    failure: TrialFailure | None = None
    stamped: tuple[str, ...] = ()  # revisions that raised and were stamped to go on past them

    def sql(self, revision: str) -> str:
        """The revision's statements as one SQL text."""
        return "\n\n".join(s.rstrip().rstrip(";") + ";" for s in self.captured[revision])


NOT_SENT = "not executed in the trial"


@dataclass
class _Recorder:
    """Statements in the order they were sent, cut per revision at Alembic's callback.

    A statement that would act beyond the scratch database (on roles, the server, other
    sessions, files) or that the trial cannot see into (`DO`, `CALL`) is recorded and not
    sent: the scratch database is on the live server, and only a database is kept apart.
    """

    pending: list[str] = field(default_factory=list)
    by_revision: dict[str, tuple[str, ...]] = field(default_factory=dict)
    on: bool = False

    def before_execute(  # noqa: PLR0917 - SQLAlchemy's event signature
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        # Judged before anything else, on the statement with its parameters as literals:
        # a pg_catalog read can end sessions too (pg_terminate_backend over pg_stat_activity).
        shown = (literal_sql(cursor, statement, parameters, executemany)
                 if self.on or _MAYBE_BEYOND.search(statement) else statement)
        beyond = beyond_the_database(shown)
        if beyond is not None:
            if self.on:
                self.pending.append(f"-- {NOT_SENT}: {beyond}\n{shown}")
            logger.info("Trial run: not sent (%s): %s", beyond, " ".join(shown.split())[:200])
            return "SELECT 1", [{}] * len(parameters) if executemany else {}
        if self.on and not _BOOKKEEPING_READ.match(statement):
            self.pending.append(shown)
        return statement, parameters

    def raw_statement(self, driver: Any, statement: str) -> str | None:
        """What revision code sends on the driver itself (`driver_watch`): kept from the
        server as above, recorded as above."""
        beyond = beyond_the_database(statement)
        if beyond is not None:
            if self.on:
                self.pending.append(f"-- {NOT_SENT}: {beyond}\n{statement}")
            logger.info("Trial run: not sent (%s): %s", beyond, " ".join(statement.split())[:200])
            return "SELECT 1"
        if self.on and not _BOOKKEEPING_READ.match(statement):
            self.pending.append(statement)
        return None

    def raw_commit(self, driver: Any) -> None:
        """A commit in the scratch database changes nothing live."""

    def after_revision(self, *, step: Any, **_: Any) -> None:
        self.by_revision[str(step.up_revision_id)] = tuple(self.pending)
        self.pending = []


def trial_run(
    server: sa.Engine,
    connect_to: Callable[[str], sa.Engine],
    settings: EngineSettings,
    *,
    start: tuple[str, ...],
    order: Sequence[str],
    target: str,
    extensions: tuple[tuple[str, str], ...] = (),
    retries: int = 3,
    script: ScriptDirectory | None = None,
) -> TrialResult:
    """Replay to `start` in a scratch database, then run `order` up to `target`; say what ran.

    A pending revision that raises is stamped (the database stays at its parent) and the run
    goes on past it, `retries` times at most, so one revision the trial cannot run does not
    hide every revision after it. The first failure is the one reported.
    """
    from alembic import command  # noqa: PLC0415 - see the TYPE_CHECKING block

    recorder = _Recorder()
    stamped: list[str] = []
    first_failure: TrialFailure | None = None
    try:
        with scratch_database(server, connect_to, extensions=extensions,
                              schema=settings.schema) as scratch:
            sa.event.listen(scratch, "before_cursor_execute", recorder.before_execute,
                            retval=True)
            with (scratch.connect() as connection, alembic_quiet(), _labelled(),
                  watching(recorder)):
                config = alembic_config(settings)
                config.attributes["connection"] = connection
                replayed = _replay(config, connection, start, script)
                if replayed is not None:
                    return TrialResult(captured={}, failure=replayed)
                recorder.on = True
                config.attributes["on_version_apply"] = recorder.after_revision
                for _ in range(retries + 1):
                    try:
                        upgrade(config, target, script=script)
                        connection.commit()
                        break
                    except Exception as error:  # a revision's own code: anything can come out
                        connection.rollback()
                        failed = next((r for r in order if r not in recorder.by_revision
                                       and r not in stamped), target)
                        logger.info("Trial run: revision %s raised %s", failed,
                                    type(error).__name__, exc_info=True)
                        first_failure = first_failure or TrialFailure(
                            failed, type(error).__name__, one_line(error))
                        recorder.pending = []
                        if failed in stamped or failed not in order:
                            break
                        stamped.append(failed)
                        config.attributes["on_version_apply"] = None
                        command.stamp(config, failed)
                        connection.commit()
                        config.attributes["on_version_apply"] = recorder.after_revision
    except ScratchUnavailable as error:
        return TrialResult(captured={}, failure=TrialFailure(
            order[0] if order else target, "ScratchUnavailable",
            f"no scratch database could be created on the server ({error}); the migration "
            "role needs the CREATEDB privilege for a preview", replaying=True))
    except sa.exc.SQLAlchemyError as error:  # the server went away, a connection failed
        return TrialResult(captured=dict(recorder.by_revision), failure=TrialFailure(
            order[0] if order else target, type(error).__name__, one_line(error),
            replaying=True), stamped=tuple(stamped))
    return TrialResult(captured=dict(recorder.by_revision), failure=first_failure,
                       stamped=tuple(stamped))


class _TrialLabel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"Trial run (scratch database): {record.msg}"
        return True


@contextmanager
def _labelled() -> Iterator[None]:
    """What revision code logs on the engine's channel during a trial (the online helpers'
    "Index ... built concurrently") says it happened in the scratch database: in a deploy's
    log it would otherwise read like work on the live one."""
    channel = logging.getLogger(ENGINE_LOGGER)
    label = _TrialLabel()
    channel.addFilter(label)
    try:
        yield
    finally:
        channel.removeFilter(label)


def _replay(
    config: Any, connection: sa.Connection, start: tuple[str, ...],
    script: ScriptDirectory | None,
) -> TrialFailure | None:
    """The applied history, base → `start`, in the scratch database; None when it ran."""
    done: list[str] = []

    def mark(*, step: Any, **_: Any) -> None:
        done.append(str(step.up_revision_id))

    config.attributes["on_version_apply"] = mark
    try:
        for head in start:
            upgrade(config, head, script=script)
            connection.commit()
    except Exception as error:  # a revision's own code: anything can come out
        connection.rollback()
        after = done[-1] if done else "base"
        logger.info("Trial run: replaying the applied history stopped after %s", after,
                    exc_info=True)
        return TrialFailure(after, type(error).__name__, one_line(error), replaying=True)
    finally:
        config.attributes["on_version_apply"] = None
    return None


# Statements whose effect is not confined to the database they run in.
_BEYOND_STATEMENTS = {
    "CreateRoleStmt": "it creates a role (roles belong to the server)",
    "AlterRoleStmt": "it alters a role (roles belong to the server)",
    "AlterRoleSetStmt": "it alters a role (roles belong to the server)",
    "DropRoleStmt": "it drops a role (roles belong to the server)",
    "GrantRoleStmt": "it grants a role (roles belong to the server)",
    "ReassignOwnedStmt": "it reassigns objects between roles",
    "AlterSystemStmt": "it changes the server's configuration",
    "AlterDatabaseStmt": "it alters a database",
    "AlterDatabaseSetStmt": "it alters a database",
    "AlterDatabaseRefreshCollStmt": "it alters a database",
    "CreatedbStmt": "it creates a database",
    "DropdbStmt": "it drops a database",
    "CreateTableSpaceStmt": "it creates a tablespace",
    "DropTableSpaceStmt": "it drops a tablespace",
    "AlterTableSpaceOptionsStmt": "it alters a tablespace",
    "CreateSubscriptionStmt": "it subscribes to another server",
    "AlterSubscriptionStmt": "it alters a subscription",
    "DropSubscriptionStmt": "it drops a subscription",
    "LoadStmt": "it loads a library into the server",
    "CheckPointStmt": "it makes the server write a checkpoint",
    "DoStmt": "it runs code the trial cannot see into (DO)",
    "CallStmt": "it calls a procedure the trial cannot see into (CALL)",
}
# Functions that act on other sessions, the server, files or other databases.
_BEYOND_FUNCTIONS = frozenset({
    "pg_terminate_backend", "pg_cancel_backend", "pg_signal_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_promote", "pg_switch_wal", "pg_create_restore_point",
    "pg_file_write", "pg_file_unlink", "pg_file_rename", "lo_export", "lo_import",
    "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
    "dblink_open", "pg_logical_emit_message", "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot", "pg_drop_replication_slot",
})


# A word any such statement holds: only statements with one are parsed.
_MAYBE_BEYOND = re.compile(
    r"\b(ROLE|USER|GROUP|GRANT|REASSIGN|SYSTEM|DATABASE|TABLESPACE|SUBSCRIPTION|LOAD|"
    r"CHECKPOINT|DO|CALL|COPY|pg_\w+|lo_\w+|dblink\w*)\b", re.I)


def beyond_the_database(statement: str) -> str | None:
    """Why `statement` may act beyond the database it runs in, or None."""
    if _MAYBE_BEYOND.search(statement) is None:
        return None
    from pglast import ast  # noqa: PLC0415 - the parser loads with a trial only
    from pglast.parser import ParseError, parse_sql  # noqa: PLC0415
    from pglast.visitors import Visitor  # noqa: PLC0415

    try:
        tree = parse_sql(statement)
    except ParseError:
        # Fail closed: it holds a word such statements hold, and the trial cannot read it
        # (a driver's placeholder the rendering left, say). Not sent; the real apply runs it.
        return "the trial could not read it to tell whether it acts beyond this database"
    for raw in tree:
        why = _BEYOND_STATEMENTS.get(type(raw.stmt).__name__)
        if why is not None:
            return why
        if isinstance(raw.stmt, ast.CopyStmt) and (raw.stmt.is_program or raw.stmt.filename):
            return "it copies to or from a server file or program"
    called: list[str] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
            names = [n.sval for n in node.funcname or () if isinstance(n, ast.String)]
            if names:
                called.append(str(names[-1]).lower())

    Calls()(tree)
    named = sorted(set(called) & _BEYOND_FUNCTIONS)
    return f"it calls {named[0]}(), which acts beyond this database" if named else None


def literal_sql(cursor: Any, statement: str, parameters: Any, executemany: bool) -> str:
    """The statement with its parameters as literals, for people and the change gate."""
    rows = list(parameters) if executemany else [parameters]
    # An empty dict still goes through the driver's formatting (`%%` becomes `%`); None and an
    # empty sequence do not.
    if not rows or rows[0] is None or (not rows[0] and not isinstance(rows[0], dict)):
        return statement.strip()
    try:
        # psycopg2 (the bundled driver): every cursor renders its parameters (bytes).
        mogrify = getattr(cursor, "mogrify", None)
        if mogrify is None:  # psycopg 3, where installed: only its client-side cursor does
            import psycopg  # noqa: PLC0415 - loaded already: it is the driver in use

            mogrify = psycopg.ClientCursor(cursor.connection).mogrify
        text = mogrify(statement, rows[0])
    except Exception:  # rendering is for display; the statement itself is what matters
        return statement.strip()
    text = text.decode() if isinstance(text, bytes) else str(text)
    if len(rows) > 1:
        text = f"-- sent for {len(rows)} rows; the first:\n{text.strip()}"
    return text.strip()


def one_line(error: BaseException) -> str:
    text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
    return " ".join(text.split())[:500]
