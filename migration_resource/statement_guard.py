"""The change gate at execution: each statement of the real apply is judged before it is sent.

The plan judges what it could see: SQL rendered offline, or captured in a scratch database
where the tables hold no live rows. What a revision sends for the live rows (a loop over
them, a statement built from what it read), and what a revision the plan could not preview
sends, is seen here, on the migration session, before the server gets it. A statement the
gate would refuse in this stage raises `StatementRefused` instead of being sent: the
revision fails, its transaction is rolled back, and the failure names the statement.

Only where the gate can refuse (production without AllowDestructive); elsewhere nothing is
refused, and the statements are not parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from migration_resource.gate import Approval, StatementJudge, decide

# One statement the gate's rules can never flag, told without parsing it (the apply sends
# thousands on a long history): a plain INSERT (an upsert overwrites, so not with ON CONFLICT;
# nor with a WITH, which may hold a DELETE), and Alembic's own writes to alembic_version. A
# SELECT is parsed: the function it calls may be opaque. Only a single statement: text with a
# `;` before its end (even one inside a literal) is parsed.
_NEVER_FLAGGED = re.compile(
    r"^\s*(?:INSERT\b(?!.*\bON\s+CONFLICT\b)"
    r"|(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(?:\w+\.)?alembic_version(?=\s))",
    re.I | re.S,
)


STATEMENT_SHOWN = 160


class StatementRefused(Exception):
    """A statement the change gate refuses, stopped before it reached the server."""


@dataclass
class StatementGuard:
    stage: str
    allow_destructive: bool
    approvals: Mapping[str, Sequence[Approval]]  # revision → its file's approval lines
    judge: StatementJudge = field(default_factory=StatementJudge)

    @property
    def active(self) -> bool:
        return self.stage == "production" and not self.allow_destructive

    def check(self, revision: str, statement: str, shown: str | None = None) -> None:
        """Raise StatementRefused when the gate refuses `statement` (parameters as literals);
        the refusal shows `shown` (the statement as sent, its parameters not filled in: they
        may be row values), else the statement."""
        if not self.active:
            return
        # After a function or a trigger of this deploy, even a plain INSERT may run its code.
        fast = not (self.judge.created.functions or self.judge.created.triggers)
        if fast and ";" not in statement.rstrip().rstrip(";") and _NEVER_FLAGGED.match(
                statement):
            return
        findings = self.judge.findings(revision, statement)
        decision = decide(findings, stage=self.stage, allow_destructive=False,
                          approvals=self.approvals)
        if decision.blocking:
            first = decision.blocking[0]
            text = " ".join((shown if shown is not None else statement).split())
            text = text if len(text) <= STATEMENT_SHOWN else text[:STATEMENT_SHOWN - 1] + "…"
            raise StatementRefused(
                f"the change gate refused {first.rule} before it was sent; it was not "
                f"previewed by the plan. {decision.next_step()}. The statement: {text}")
