"""What an engine operation answers: an Outcome, or an EngineError naming state and next step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migration_resource.classification import Classification

if TYPE_CHECKING:
    # execution imports Alembic; an outcome only names the type (a no-change deploy has
    # no applied revisions and must not pay for Alembic's import).
    from migration_resource.execution import AppliedRevision


class EngineError(RuntimeError):
    """An operation did not happen; the message names the state and the next step."""

    code = "error"

    def __init__(self, message: str, classification: Classification | None = None) -> None:
        super().__init__(message)
        self.classification = classification


class UsageError(EngineError):
    """The request cannot be carried out as asked (missing or contradictory options)."""

    code = "bad_request"


class MigrationRefused(EngineError):
    """The database is in a state the requested operation must not touch."""

    code = "refused"


class ConfirmationRequired(EngineError):
    """A change was requested without explicit confirmation."""

    code = "confirmation_required"


class DatabaseUnavailable(EngineError):
    """The database could not be reached; nothing was read or changed."""

    code = "database_unavailable"


class RunInterrupted(EngineError):
    """The run stopped between two revisions: too little time left for the next one."""

    code = "interrupted"

    def __init__(self, message: str, applied: tuple[AppliedRevision, ...]) -> None:
        super().__init__(message)
        self.applied = applied


class MigrationFailed(EngineError):
    """A migration raised; the database is left at the last revision that completed."""

    code = "migration_failed"

    def __init__(
        self,
        message: str,
        classification: Classification | None,
        applied: tuple[AppliedRevision, ...],
        final: tuple[str, ...],
    ) -> None:
        super().__init__(message, classification)
        self.applied = applied
        self.final = final


@dataclass(frozen=True)
class Outcome:
    """What an operation found and did; `as_dict` is the admin answer."""

    operation: str
    classification: Classification
    message: str
    ok: bool = True
    final: tuple[str, ...] = ()  # revisions after the operation
    applied: tuple[AppliedRevision, ...] = ()
    sql: dict[str, str] | None = None  # dry run: revision → SQL
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())
    findings: tuple[dict[str, str], ...] = ()  # the change gate's, per revision
    history: tuple[dict[str, Any], ...] | None = None  # recent audit rows
    baseline: dict[str, Any] | None = None  # what a history fix found
    # status: INVALID indexes (an interrupted CREATE INDEX CONCURRENTLY): name, table, ...
    invalid_indexes: tuple[dict[str, str], ...] = ()
    # dry run: each pending revision in the order it would run, with its file, its SQL and
    # where that SQL came from (rendered offline, or captured in a scratch database)
    plan: tuple[dict[str, str], ...] | None = None
    # False when the run stopped between revisions for lack of time: the rest runs next time
    complete: bool = True
    # each pending revision's phase (expand/contract), why, and whether it waits for a later
    # release; and the revisions that wait (from the first deferred contract revision on)
    phases: tuple[dict[str, object], ...] | None = None
    deferred: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        c = self.classification
        answer: dict[str, object] = {
            "ok": self.ok,
            "operation": self.operation,
            "state": c.state.value,
            "current": list(c.current),
            "target": list(c.target),
            "pending": list(c.pending),
            "final": list(self.final),
            "applied": [a.as_dict() for a in self.applied],
            "message": self.message,
            "seconds": round(self.seconds, 3),
        }
        if c.cause:
            answer["cause"] = c.cause
        if c.detail:
            answer["detail"] = c.detail
        if self.sql is not None:
            answer["sql"] = self.sql
        if self.notes:
            answer["notes"] = list(self.notes)
        if self.findings:
            answer["findings"] = list(self.findings)
        if self.history is not None:
            answer["history"] = list(self.history)
        if self.baseline is not None:
            answer["baseline"] = self.baseline
        if self.invalid_indexes:
            answer["invalid_indexes"] = list(self.invalid_indexes)
        if self.plan is not None:
            answer["plan"] = list(self.plan)
        if not self.complete:
            answer["complete"] = False
        if self.phases is not None:
            answer["phases"] = list(self.phases)
        if self.deferred:
            answer["deferred"] = list(self.deferred)
        return answer
