"""The migration session's guards, in force at the start of every revision.

The engine bounds each statement of the migration session with `statement_timeout`
(MIGRATION_TIMEOUT) and each wait for a table lock with `lock_timeout` (MIGRATION_LOCK_TIMEOUT).
Revisions set them too: real histories hold `SET statement_timeout = '24h'` before a long
backfill, `SET lock_timeout = 0` or `RESET lock_timeout` before a migration that must not
fail. Set once for the session, they would be gone for every revision after such a one: an
ALTER TABLE behind a long transaction would then queue without limit, and every query on that
table behind it. So a revision keeps what it sets for itself only: before the next revision's
first statement the engine sets its own again, and says so in the log.

Watched by text, as each statement is sent on the migration session: any statement naming a
guard (a SET, quoted or not, a set_config call, an UPDATE of pg_settings, a DO block, even a
read of it: one SET more costs little), RESET or DISCARD; and code the deploy creates (a
function or procedure that names a guard may set it whenever it is called later, so from then
on every revision starts with the guards set again). A function from an earlier release that
sets them when called is not seen.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from migration_resource.core import ENGINE_LOGGER
from migration_resource.driver_watch import engine_commit, engine_cursor

logger = logging.getLogger(ENGINE_LOGGER)

# Text that may change a guard, also inside a DO block or a function's body. (A look-alike,
# say a read of one, costs one SET more, never a guard left off.)
_MAY_CHANGE = re.compile(r"lock_timeout|statement_timeout|\bRESET\b|\bDISCARD\b|set_config"
                         r"|pg_settings", re.I)
# ... and what plainly does: the log names the revision that set its own
_SETS = re.compile(r"\b(?:SET|RESET|DISCARD|set_config|pg_settings)\b", re.I)
_CREATES_CODE = re.compile(r"\bCREATE\b.*?\b(?:FUNCTION|PROCEDURE)\b", re.I | re.S)
SHOWN_CHARACTERS = 80


@dataclass
class SessionGuards:
    """Whether a revision of this run may have changed the guards, and setting them again."""

    statements: tuple[str, ...]  # EngineSettings.session_guards
    changed_by: str | None = None  # the revision whose statement may have changed them
    changed_how: str = ""  # that statement, shortened, for the log
    # code of this deploy that names a guard: every revision after it starts guarded again
    changing_code: bool = False
    # set them again without a word: the last SET was rolled back with its transaction, or
    # a statement only named a guard
    unsure: bool = False

    def note(self, revision: str, statement: str) -> None:
        """A statement the migration session is about to send for `revision`."""
        if _MAY_CHANGE.search(statement) is None:
            return
        if _CREATES_CODE.search(statement):
            self.changing_code = True
        if _SETS.search(statement) is None:
            self.unsure = True  # a read naming one: set them again, quietly
            return
        if self.changed_by is None:
            shown = " ".join(statement.split())
            self.changed_how = (shown if len(shown) <= SHOWN_CHARACTERS
                                else shown[:SHOWN_CHARACTERS - 1] + "…")
        self.changed_by = revision

    def rolled_back(self) -> None:
        """The revision's transaction was rolled back (it runs again): so was the SET that
        began it, and what it set itself; what the revision before it set holds again."""
        self.unsure = True

    def restore(self, connection: Any, upcoming: str | None) -> None:
        """Set the guards again on the migration session (`connection`, SQLAlchemy's) when
        anything since they were last set may have changed them; `upcoming`: the revision
        about to start, or None at the end of the run."""
        if self.changed_by is None and not self.changing_code and not self.unsure:
            return
        # On the driver's own cursor: the statements are the engine's, not the revision's,
        # and the listeners that watch the revision's statements must not see them.
        driver = connection.connection.dbapi_connection
        cursor = engine_cursor(driver)
        try:
            for statement in self.statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        if not connection.in_transaction():
            engine_commit(driver)  # between revisions: no transaction of Alembic's to commit it
        if self.changed_by is not None:
            logger.info(
                "Revision %s set its own session timeouts (%s): they held for it alone; %s "
                "again%s", self.changed_by, self.changed_how, " and ".join(self.statements),
                f" before revision {upcoming}" if upcoming else " at the end of the run")
        self.changed_by, self.changed_how, self.unsure = None, "", False
