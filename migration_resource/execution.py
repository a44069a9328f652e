"""Run Alembic through its command API: online on a connection we own, or offline as SQL."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings

if TYPE_CHECKING:
    # Alembic loads when a revision first runs or renders, not with this module (outcomes
    # and the deploy's no-change path import it for AppliedRevision alone).
    from alembic.config import Config
    from alembic.script import ScriptDirectory


@contextmanager
def alembic_quiet() -> Iterator[None]:
    """Alembic's INFO lines ("Running upgrade a -> b") off, for runs that are not the real one.

    Rendering, trial runs and the baseline's replay would otherwise read, in a deploy's log,
    like migrations of the live database.
    """
    loggers = [logging.getLogger(name) for name in ("alembic.runtime.migration",
                                                    "alembic.runtime.plugins")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels, strict=True):
            one.setLevel(level)


def upgrade(
    config: Config, target: str, *, start: str | None = None, sql: bool = False,
    script: ScriptDirectory | None = None,
    steps_for: Callable[[tuple[str, ...], str], list[Any]] | None = None,
) -> None:
    """Alembic's `command.upgrade`, over a script directory that may be loaded already.

    `command.upgrade` builds a new ScriptDirectory, which imports every revision file again;
    the plan renders and tries a history several times, so it hands over the one it has.
    `steps_for(current, target)` gives Alembic's upgrade steps when the caller has them
    (`RevisionCatalogue.upgrade_steps`, which the plan asked already).
    """
    from alembic.runtime.environment import EnvironmentContext  # noqa: PLC0415 - see above
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    scripts = script or ScriptDirectory.from_config(config)

    def steps(current: Any, context: Any) -> Any:
        if steps_for is not None:
            return steps_for(tuple(current), target)
        return scripts._upgrade_revs(target, current)

    with EnvironmentContext(config, scripts, fn=steps, as_sql=sql, starting_rev=start,
                            destination_rev=target):
        scripts.run_env()


@dataclass(frozen=True)
class AppliedRevision:
    revision: str
    down_revisions: tuple[str, ...]
    direction: str  # "upgrade" or "downgrade"
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "from": list(self.down_revisions),
            "direction": self.direction,
            "seconds": round(self.seconds, 3),
        }


class _StepTimer:
    """Alembic's on_version_apply callback: one record per revision, timed end to end."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.records: list[AppliedRevision] = []
        self.last_mark = clock()

    def __call__(self, *, step: Any, **_: Any) -> None:
        # `step` is Alembic's MigrationInfo; on a downgrade up_revision_id is the one undone.
        now = self.clock()
        self.records.append(
            AppliedRevision(
                revision=str(step.up_revision_id),
                down_revisions=tuple(step.down_revision_ids),
                direction="upgrade" if step.is_upgrade else "downgrade",
                seconds=now - self.last_mark,
            )
        )
        self.last_mark = now


def run_online(
    connection: sa.Connection,
    scripts: EngineSettings | Path,
    target: str,
    *,
    direction: str,
    on_step: Callable[[AppliedRevision], None] | None = None,
    script: ScriptDirectory | None = None,
    steps_for: Callable[[tuple[str, ...], str], list[Any]] | None = None,
) -> list[AppliedRevision]:
    """Upgrade or downgrade on `connection`, one transaction per migration.

    The connection must not be inside a transaction: Alembic then opens one per revision,
    so a failure leaves the database at the last revision that completed. `scripts` are the
    engine's settings (or a migrations folder); `script` is the loaded script directory, when
    the caller has one.
    """
    config = alembic_config(scripts)
    timer = _StepTimer()

    def record(**kwargs: Any) -> None:
        timer(**kwargs)
        if on_step is not None:
            on_step(timer.records[-1])

    config.attributes["connection"] = connection
    config.attributes["on_version_apply"] = record
    timer.last_mark = timer.clock()
    if direction == "upgrade":
        upgrade(config, target, script=script, steps_for=steps_for)
    else:
        from alembic import command  # noqa: PLC0415 - see the TYPE_CHECKING block

        command.downgrade(config, target)
    return timer.records


def stamp_online(
    connection: sa.Connection, scripts: EngineSettings | Path, revision: str, *,
    purge: bool = False,
) -> None:
    """Write `revision` into alembic_version without running anything (a baseline)."""
    from alembic import command  # noqa: PLC0415 - see the TYPE_CHECKING block

    config = alembic_config(scripts)
    config.attributes["connection"] = connection
    command.stamp(config, revision, purge=purge)


def offline_sql(scripts: EngineSettings | Path, start: str, target: str) -> dict[str, str]:
    """The SQL an upgrade from `start` to `target` would run, per revision, without a database.

    Raises what a revision's code raises when it cannot run without a database.
    """
    rendered = render_offline(scripts, start, target)
    if rendered.error is not None:
        raise rendered.error
    return rendered.sql


@dataclass(frozen=True)
class OfflineRendering:
    sql: dict[str, str]  # revision → SQL, for the revisions rendered before any error
    error: Exception | None = None  # what the next revision's code raised offline


def render_offline(
    scripts: EngineSettings | Path, start: str, target: str, *,
    script: ScriptDirectory | None = None,
) -> OfflineRendering:
    """Render with Alembic's offline mode; stop, without raising, at a revision that cannot.

    One offline run, split where Alembic's per-revision callback fires. What precedes the first
    revision's statements (creating alembic_version, BEGIN) belongs to the first revision, what
    follows the last callback (the final COMMIT) to the last. A revision that reads the
    database (`op.get_bind().execute(...).fetchone()`) raises here, since offline `execute()`
    returns None; the revisions before it are still rendered.
    """
    buffer = io.StringIO()
    config = alembic_config(scripts)
    config.output_buffer = buffer
    marks: list[tuple[str, int]] = []

    def mark(*, step: Any, **_: Any) -> None:
        marks.append((str(step.up_revision_id), buffer.tell()))

    config.attributes["on_version_apply"] = mark
    error: Exception | None = None
    try:
        with alembic_quiet():
            upgrade(config, target, start=start, sql=True, script=script)
    except Exception as raised:  # a revision's own code: anything can come out
        error = raised
    text = buffer.getvalue()
    per_revision: dict[str, str] = {}
    previous = 0
    for index, (revision, mark_at) in enumerate(marks):
        last = index == len(marks) - 1 and error is None
        end = len(text) if last else _after_commit(text, mark_at)
        per_revision[revision] = text[previous:end].strip()
        previous = end
    return OfflineRendering(per_revision, error)


def _after_commit(text: str, position: int) -> int:
    """The callback fires before the revision's own COMMIT is written: keep it with it."""
    rest = text[position:]
    stripped = rest.lstrip()
    if stripped.startswith("COMMIT;"):
        return position + (len(rest) - len(stripped)) + len("COMMIT;")
    return position
