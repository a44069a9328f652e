"""A trial run: what the pending revisions really execute, captured and rolled back.

Alembic's offline mode renders SQL without a database, so `connection.execute()` returns
None there and a data migration that reads rows (`op.get_bind().execute(...).fetchone()`,
`for row in connection.execute(table.select())`) cannot be rendered at all. For those the
engine runs the revisions for real, on the live database, inside ONE transaction that is
always rolled back, and records every statement they send (`before_cursor_execute`).

A trial must never change live data. Four guards, from the driver to the server:

- the whole run is one transaction the trial opened, so Alembic's per-revision
  transactions are no-ops (it sees an "external" transaction) and nothing commits at a
  revision's end;
- `autocommit_block()` (which would commit and switch to AUTOCOMMIT) is a plain block
  during the trial: its statements run inside the trial's transaction;
- a statement that ends or starts a transaction (`op.execute("COMMIT")`) is recorded but
  not sent, and a statement PostgreSQL refuses inside a transaction is sent in its
  transactional form (`CREATE INDEX` without `CONCURRENTLY`) or, when it has none
  (`VACUUM`), recorded and not sent;
- a deferred constraint trigger on a temporary table fails any COMMIT of the trial's
  transaction at the server, whatever sends it (a `COMMIT` inside a multi-statement string,
  `op.get_bind().commit()`), so the transaction can only end in a rollback.

What it costs: the trial executes the revisions once more, holding their table locks until
the rollback, and sequence values drawn by its inserts are not given back (PostgreSQL
sequences are not transactional). That is why the engine tries offline rendering first and
runs a trial only for revisions that read the database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from migration_resource.execution import alembic_quiet, upgrade
from migration_resource.revisions import alembic_config, to_tuple

if TYPE_CHECKING:
    # Alembic loads when a trial runs, not with this module: the deploy's no-change path
    # imports the plan (and so this module) without ever trying a revision.
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from migration_resource.settings import EngineSettings

logger = logging.getLogger(__name__)

GUARD_TABLE = "migration_trial_guard"
GUARD_MESSAGE = "a migration trial must never commit"
_GUARD_SQL = (
    f"CREATE TEMPORARY TABLE {GUARD_TABLE} (id integer)",
    "CREATE FUNCTION pg_temp.migration_trial_refuse_commit() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{GUARD_MESSAGE}'; END $$",
    f"CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON pg_temp.{GUARD_TABLE} "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "EXECUTE FUNCTION pg_temp.migration_trial_refuse_commit()",
    f"INSERT INTO pg_temp.{GUARD_TABLE} VALUES (1)",
)
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(COMMIT|END|ROLLBACK|ABORT|BEGIN|START\s+TRANSACTION)\b[\s\w]*;?\s*$", re.I
)
_CONCURRENTLY = re.compile(
    r"^(\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+))\s+CONCURRENTLY\b", re.I
)
_NEVER_IN_TRANSACTION = re.compile(
    r"^\s*(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CREATE\s+TABLESPACE|"
    r"DROP\s+TABLESPACE|REINDEX\s+(SYSTEM|DATABASE)|CREATE\s+SUBSCRIPTION|"
    r"DROP\s+SUBSCRIPTION)\b",
    re.I,
)
# What Alembic and SQLAlchemy read for themselves: not the revision's statements.
_BOOKKEEPING_READ = re.compile(
    r"^\s*SELECT\b.*\b(pg_catalog\.|alembic_version\.version_num\s+FROM)", re.I | re.S
)
NOT_SENT = "not executed in the trial"


@dataclass(frozen=True)
class CapturedStatement:
    sql: str  # as the revision sent it, with its parameters rendered as literals
    note: str = ""  # why the trial sent something else, or nothing


@dataclass(frozen=True)
class TrialFailure:
    revision: str  # the revision whose code raised during the trial
    error_type: str
    message: str


@dataclass(frozen=True)
class TrialResult:
    captured: dict[str, tuple[CapturedStatement, ...]]  # revisions that completed, in order
    failure: TrialFailure | None = None

    def sql(self, revision: str) -> str:
        """The revision's statements as one SQL text; a note stands on its own line above."""
        return "\n\n".join(
            (f"-- {s.note}\n" if s.note else "") + s.sql.rstrip().rstrip(";") + ";"
            for s in self.captured[revision]
        )


@dataclass
class _Recorder:
    """Statements in the order they were sent, cut per revision at Alembic's callback."""

    render: Callable[[Any, str, Any, bool], str]
    pending: list[CapturedStatement] = field(default_factory=list)
    by_revision: dict[str, tuple[CapturedStatement, ...]] = field(default_factory=dict)

    def before_execute(  # noqa: PLR0917 - SQLAlchemy's event signature
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        if _BOOKKEEPING_READ.match(statement):
            return statement, parameters
        shown = self.render(cursor, statement, parameters, executemany)
        if _TRANSACTION_CONTROL.match(statement):
            self.pending.append(CapturedStatement(shown, f"{NOT_SENT}: it ends the transaction"))
            return "SELECT 1", [()] if executemany else ()
        if _NEVER_IN_TRANSACTION.match(statement):
            self.pending.append(CapturedStatement(
                shown, f"{NOT_SENT}: PostgreSQL runs it outside transactions only"))
            return "SELECT 1", [()] if executemany else ()
        concurrent = _CONCURRENTLY.match(statement)
        if concurrent:
            self.pending.append(CapturedStatement(
                shown, "tried without CONCURRENTLY (not allowed inside a transaction)"))
            return concurrent.group(1) + statement[concurrent.end():], parameters
        self.pending.append(CapturedStatement(shown))
        return statement, parameters

    def after_revision(self, *, step: Any, **_: Any) -> None:
        self.by_revision[str(step.up_revision_id)] = tuple(self.pending)
        self.pending = []

    def forget(self, revision: str) -> None:
        """A stamped revision ran nothing of its own (the stamp's bookkeeping only)."""
        self.by_revision.pop(revision, None)
        self.pending = []


def trial_run(
    connect: Callable[[], AbstractContextManager[sa.Connection]],
    scripts: EngineSettings | Path,
    order: Sequence[str],
    target: str,
    *,
    stamp: str | None = None,
    skip: frozenset[str] = frozenset(),
    script: ScriptDirectory | None = None,
    statement_timeout_seconds: int,
    lock_timeout_seconds: int,
) -> TrialResult:
    """Run the upgrade to `target` in a transaction that is rolled back; say what ran.

    `connect` opens the trial's own connection. `order` is the pending revisions in the
    order Alembic runs them (to name the revision that raised). `stamp` writes that revision
    into alembic_version first, inside the same transaction: a plan made as if a baseline
    had been stamped. The revisions in `skip` are stamped instead of run (an earlier trial
    could not run them), so the trial sees the revisions after them. `script` is the
    script directory when the caller has it loaded already.
    """
    from alembic import command  # noqa: PLC0415 - see the TYPE_CHECKING block
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    recorder = _Recorder(render=_literal_sql)
    with connect() as connection:
        connection.begin()
        try:
            for statement in _GUARD_SQL:
                connection.exec_driver_sql(statement)
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = '{int(statement_timeout_seconds)}s'")
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds)}s'")
            config = alembic_config(scripts)
            config.attributes["connection"] = connection
            if stamp is not None:
                command.stamp(config, stamp, purge=True)
            config.attributes["on_version_apply"] = recorder.after_revision
            sa.event.listen(connection, "before_cursor_execute", recorder.before_execute,
                            retval=True)
            try:
                with _autocommit_blocks_stay_in_the_transaction(), alembic_quiet():
                    _upgrade_skipping(config, order, target, skip, recorder,
                                      script or ScriptDirectory.from_config(config))
            except Exception as error:  # a revision's own code: anything can come out
                failed = next(
                    (r for r in order if r not in recorder.by_revision and r not in skip),
                    target,
                )
                logger.info("Trial run: revision %s raised %s", failed, type(error).__name__,
                            exc_info=True)
                return TrialResult(
                    captured=dict(recorder.by_revision),
                    failure=TrialFailure(failed, type(error).__name__, _one_line(error)),
                )
            finally:
                sa.event.remove(connection, "before_cursor_execute", recorder.before_execute)
        finally:
            _roll_back(connection)
    return TrialResult(captured=dict(recorder.by_revision))


def _upgrade_skipping(  # noqa: PLR0917 - private, one caller
    config: Config, order: Sequence[str], target: str, skip: frozenset[str],
    recorder: _Recorder, script: ScriptDirectory,
) -> None:
    """Upgrade to `target`; each revision in `skip` is stamped once what it stands on ran."""
    from alembic import command  # noqa: PLC0415 - see the TYPE_CHECKING block

    for revision in (r for r in order if r in skip):
        found = script.get_revision(revision)
        assert found is not None
        for down in to_tuple(found.down_revision, default=()):
            upgrade(config, down, script=script)
        command.stamp(config, revision)
        recorder.forget(revision)
    upgrade(config, target, script=script)


@contextmanager
def _autocommit_blocks_stay_in_the_transaction() -> Iterator[None]:
    """Alembic's autocommit_block commits first; during a trial it is an ordinary block.

    Patched on the class for the length of the trial: the revision reaches it through
    `op.get_context()`, which the trial cannot hand a different object.
    """

    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see above

    @contextmanager
    def in_the_transaction(self: MigrationContext) -> Iterator[None]:
        yield

    original = MigrationContext.autocommit_block
    MigrationContext.autocommit_block = in_the_transaction  # type: ignore[method-assign]
    try:
        yield
    finally:
        MigrationContext.autocommit_block = original  # type: ignore[method-assign]


def _roll_back(connection: sa.Connection) -> None:
    """The only way a trial ends; a connection the guard or a dead server broke closes."""
    try:
        connection.rollback()
    except sa.exc.SQLAlchemyError:
        connection.invalidate()


def _literal_sql(cursor: Any, statement: str, parameters: Any, executemany: bool) -> str:
    """The statement with its parameters as literals, for people and the change gate."""
    rows = list(parameters) if executemany else [parameters]
    if not rows or not rows[0]:
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


def _one_line(error: BaseException) -> str:
    text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
    return " ".join(text.split())[:500]
