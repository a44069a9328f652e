"""Find the revision an unversioned database really matches, by replaying the migrations.

A database with application tables but no ``alembic_version`` (made by hand, by
``create_all``, restored from a dump) can only be stamped safely if we know which revision its
schema corresponds to. Flyway's ``baselineOnMigrate`` and Django's ``--fake-initial`` guess;
here the migrations are replayed one revision at a time into a uniquely named scratch schema
of the same database, and after each revision the scratch schema is reflected and compared
with the live one (from Alembic's per-revision callback, inside that revision's
transaction, so one Alembic run serves the whole replay).

The replay connection's ``search_path`` is the scratch schema alone, so ``alembic_version``
and every unqualified statement of a migration land there. The live schema is deliberately
not on the path: a migration that touches a table no earlier revision created then fails in
the scratch schema instead of changing the live table. Two consequences: a migration that
names a schema explicitly (``public.users``) does reach it, and objects of extensions
installed in another schema (``uuid_generate_v4``, ``citext``) are not found, which makes the
replay fail and the baseline unverifiable (`BaselineError`) rather than wrong.

The comparison uses SQLAlchemy's Inspector rather than Alembic's autogenerate
(``compare_metadata``). Autogenerate compares a model's MetaData with a database, matches
indexes and unique constraints mostly by name (a hand-made database names things
differently, so every such index would read as one removed plus one added), does not compare
CHECK constraints at all, and compares server defaults only through heuristics that are off
by default. The Inspector's bulk ``get_multi_*`` calls read one whole schema in six queries,
and building the comparison ourselves lets each difference read as one plain sentence.

What is compared, per table: columns (the reflected type as SQLAlchemy renders it, e.g.
``VARCHAR(200)``, enum labels included; nullability; and how the
value is produced: server default, identity or generated expression, with the schema
qualification removed, e.g. ``nextval('"scratch".x_seq'::regclass)``), the primary key,
foreign keys (columns, referred table and columns, ON DELETE/ON UPDATE), unique constraints,
indexes (columns or expressions, uniqueness, partial predicate, method, INCLUDE columns) and
CHECK constraints (their normalised SQL text). Constraint and index NAMES ARE IGNORED: objects
are matched by structure, since a database made by hand may name them differently; the names
only appear in the difference lines. A later migration that drops such an object by name can
therefore still fail; it then fails in its own transaction like any other migration. Views,
sequences, functions, triggers, comments and grants are not compared. ``alembic_version``,
``migration_audit`` (see `PRODUCT_TABLES`) and the configured ignored tables are left out on
both sides.

The replay writes (it creates and drops a schema), so callers run it under the migration
lock. The scratch schema is always dropped, also when a migration or the comparison fails; a
process killed mid-replay (a Lambda timeout) cannot do that, which `drop_scratch_schemas`
cleans up on the next run.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migration_resource.execution import AppliedRevision, run_online
from migration_resource.inspection import PRODUCT_TABLES

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "migration_scratch_"
MAX_DIFFERENCE_LINES = 20
MAX_NAMED_MATCHES = 3  # a summary stays one short sentence
# Dropping the scratch schema must not hang a deploy behind some other session's lock.
DROP_TIMEOUT_SECONDS = 60


class BaselineError(RuntimeError):
    """The replay or comparison could not finish, so no baseline can be verified.

    No partial answer is given, even when earlier revisions matched: a history that cannot
    be replayed into an empty schema is not one we can vouch for, and the caller reports the
    database as `inconsistent` (unverifiable baseline). The scratch schema is dropped.
    """

    def __init__(self, message: str, *, revision: str, replayed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.revision = revision  # the revision whose replay failed
        self.replayed = replayed  # the revisions replayed and compared before it


@dataclass(frozen=True)
class BaselineResult:
    # The revision to stamp: the EARLIEST revision whose schema equals the live one. A
    # data-only revision changes no schema, so several consecutive revisions can match;
    # stamping the earliest makes the later ones (e.g. a backfill) run rather than be skipped.
    matched: str | None
    matches: tuple[str, ...]  # every revision whose schema equals the live one, base first
    nearest: str | None  # when nothing matches: the revision with the fewest differences
    differences: tuple[str, ...]  # when nothing matches: vs `nearest`, long lists summarised
    ignored_tables: tuple[str, ...]  # left out of the comparison by configuration
    revisions_compared: int
    seconds: float
    difference_count: int = 0  # all differences vs `nearest`, also those summarised away

    def summary(self) -> str:
        if self.matched is not None:
            text = f"schema matches revision {self.matched}"
            others = [r for r in self.matches if r != self.matched]
            if others:
                named = ", ".join(others[:MAX_NAMED_MATCHES])
                if len(others) > MAX_NAMED_MATCHES:
                    named += f" and {len(others) - MAX_NAMED_MATCHES} more"
                text += f" (also {named}: they change no schema)"
        elif self.nearest is None:
            text = "schema matches no revision: there were no revisions to compare"
        else:
            text = f"schema matches no revision; nearest {self.nearest}: {self.differences[0]}"
            if self.difference_count > 1:
                text += f" (+{self.difference_count - 1} more)"
        if self.ignored_tables:
            text += f"; tables left out of the comparison: {', '.join(self.ignored_tables)}"
        return text


def find_baseline(
    database: sa.Engine,
    script_location: Path,
    candidates: Sequence[str],
    *,
    schema: str = "public",
    ignored_tables: Sequence[str] = (),
    statement_timeout_seconds: int = 300,
) -> BaselineResult:
    """Replay `candidates` (base → head) into a scratch schema; say which match `schema`.

    Replaying stops at the first revision that differs after one or more matched: the
    earliest match is what gets stamped, so later revisions cannot change the answer. While
    nothing has matched, every revision is replayed. Raises `BaselineError` when a revision
    fails during the replay or the comparison fails.
    """
    started = time.perf_counter()
    ignored = tuple(sorted(set(ignored_tables)))
    skipped = PRODUCT_TABLES | set(ignored)
    with database.connect() as connection:
        # The live side is only read, and the server enforces it.
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        live = _reflect(connection, schema, skipped)
        connection.rollback()

    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"
    logger.info(
        "Verifying the baseline: replaying %d revisions into the scratch schema %s",
        len(candidates), scratch,
    )
    try:
        replay = _replay_and_compare(
            database, script_location, candidates, live,
            scratch=scratch, skipped=skipped, statement_timeout_seconds=statement_timeout_seconds,
        )
    except BaseException:
        # The original error is what the caller must see; a failed drop is only logged.
        _drop_schema(database, scratch, raise_errors=False)
        raise
    _drop_schema(database, scratch, raise_errors=True)

    matches, lines = tuple(replay.matches), replay.nearest_lines
    shown = tuple(lines[:MAX_DIFFERENCE_LINES])
    if len(lines) > MAX_DIFFERENCE_LINES:
        shown += (f"... and {len(lines) - MAX_DIFFERENCE_LINES} more",)
    result = BaselineResult(
        matched=matches[0] if matches else None,
        matches=matches,
        nearest=None if matches else replay.nearest,
        differences=() if matches else shown,
        ignored_tables=ignored,
        revisions_compared=len(replay.compared),
        seconds=time.perf_counter() - started,
        difference_count=0 if matches else len(lines),
    )
    logger.info("Baseline: %s (%d revisions compared in %.2f s)",
                result.summary(), result.revisions_compared, result.seconds)
    return result


def drop_scratch_schemas(database: sa.Engine) -> tuple[str, ...]:
    """Drop scratch schemas left by a replay that was killed; returns their names.

    Only safe while holding the migration lock: it would also drop the scratch schema of a
    replay running right now.
    """
    with database.connect() as connection:
        names = tuple(
            connection.execute(
                sa.text(
                    "SELECT nspname FROM pg_catalog.pg_namespace "
                    "WHERE starts_with(nspname, :prefix) ORDER BY nspname"
                ),
                {"prefix": SCRATCH_PREFIX},
            ).scalars()
        )
        connection.rollback()
    for name in names:
        logger.warning("Dropping the scratch schema %s left by an interrupted replay", name)
        _drop_schema(database, name, raise_errors=True)
    return names


# -- the replay --------------------------------------------------------------------------


class _StopReplay(Exception):
    """Raised from the per-revision callback once the answer is known."""


@dataclass
class _Replay:
    """The comparison run after each replayed revision, inside that revision's transaction."""

    connection: sa.Connection
    live: Mapping[str, _Table]
    scratch: str
    skipped: frozenset[str]
    candidates: frozenset[str]
    matches: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    nearest: str | None = None
    nearest_lines: list[str] = field(default_factory=list)
    comparison_error: Exception | None = None

    def after_revision(self, step: AppliedRevision) -> None:
        if step.revision not in self.candidates:
            return
        try:
            replayed = _reflect(self.connection, self.scratch, self.skipped)
        except Exception as error:
            self.comparison_error = error
            raise
        self.compared.append(step.revision)
        lines = _differences(self.live, replayed, step.revision)
        logger.debug("Baseline: revision %s differs in %d places", step.revision, len(lines))
        if not lines:
            self.matches.append(step.revision)
        elif self.matches:
            raise _StopReplay
        elif self.nearest is None or len(lines) < len(self.nearest_lines):
            # Strictly fewer: on a tie the earlier revision stays nearest.
            self.nearest, self.nearest_lines = step.revision, lines


def _replay_and_compare(
    database: sa.Engine,
    script_location: Path,
    candidates: Sequence[str],
    live: Mapping[str, _Table],
    *,
    scratch: str,
    skipped: frozenset[str],
    statement_timeout_seconds: int,
) -> _Replay:
    """One Alembic run up to the last candidate, comparing after every revision.

    Not one `run_online` per revision: each run loads every script of the history again,
    which makes a long history quadratic (100 revisions: ~3 s of the ~4 s). Alembic's
    per-revision callback fires inside the revision's transaction, after its DDL, so
    reflecting there sees exactly the schema at that revision.
    """
    with database.connect() as connection:
        quoted = connection.dialect.identifier_preparer.quote(scratch)
        connection.exec_driver_sql(
            f"SET statement_timeout = '{int(statement_timeout_seconds)}s'"
        )
        connection.exec_driver_sql(f"CREATE SCHEMA {quoted}")
        connection.exec_driver_sql(f"SET search_path TO {quoted}")
        # Session settings survive the commit; Alembic needs a connection outside a
        # transaction to give each revision its own.
        connection.commit()
        replay = _Replay(connection, live, scratch, skipped, frozenset(candidates))
        if not candidates:
            return replay
        try:
            run_online(connection, script_location, candidates[-1], direction="upgrade",
                       on_step=replay.after_revision)
        except _StopReplay:
            return replay
        except Exception as error:
            done = set(replay.compared)
            revision = next((r for r in candidates if r not in done), candidates[-1])
            what = (
                f"comparing the schema after revision {revision}"
                if replay.comparison_error is error
                else f"replaying revision {revision} into a scratch schema"
            )
            raise BaselineError(
                f"{what} failed, so the baseline cannot be verified: {_one_line(error)}",
                revision=revision,
                replayed=tuple(replay.compared),
            ) from error
    if len(replay.compared) < len(candidates):
        # The callback is how we see each revision: an env.py that does not pass
        # config.attributes["on_version_apply"] to context.configure hides them.
        raise BaselineError(
            f"only {len(replay.compared)} of {len(candidates)} replayed revisions were "
            "reported back, so the baseline cannot be verified; env.py must pass "
            "config.attributes['on_version_apply'] to context.configure",
            revision=candidates[-1],
            replayed=tuple(replay.compared),
        )
    return replay


def _drop_schema(database: sa.Engine, name: str, *, raise_errors: bool) -> None:
    """On a fresh connection: the replay connection may be the thing that broke."""
    try:
        with database.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.exec_driver_sql(f"SET statement_timeout = '{DROP_TIMEOUT_SECONDS}s'")
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
            connection.commit()
    except Exception as error:
        logger.error(
            "Could not drop the scratch schema %s (%s); drop it by hand: DROP SCHEMA %s CASCADE",
            name, _one_line(error), name,
        )
        if raise_errors:
            raise


def _one_line(error: BaseException) -> str:
    """An error without SQLAlchemy's parameter dump and documentation link, on one line."""
    text = str(error).split("\n(Background on this error")[0].split("\n[parameters:")[0]
    return " ".join(text.split())[:500]


# -- reflection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    type: str
    nullable: bool
    default: str | None  # server default, identity or generated expression


@dataclass(frozen=True)
class _Table:
    columns: Mapping[str, _Column]
    # (kind, structure) → name. The key is what is compared; the name is only shown.
    constraints: Mapping[tuple[str, str], str]


# The order difference lines follow within a table.
_KINDS = ("primary key", "foreign key", "unique constraint", "index", "unique index",
          "check constraint")


def _reflect(connection: sa.Connection, schema: str, skipped: frozenset[str]) -> dict[str, _Table]:
    # A new Inspector each time: one caches what it read, and the scratch schema changes.
    inspector = sa.inspect(connection)
    names = [t for t in inspector.get_table_names(schema=schema) if t not in skipped]
    if not names:
        return {}
    options: dict[str, Any] = {"schema": schema, "filter_names": names}
    columns = inspector.get_multi_columns(**options)
    primary_keys = inspector.get_multi_pk_constraint(**options)
    foreign_keys = inspector.get_multi_foreign_keys(**options)
    uniques = inspector.get_multi_unique_constraints(**options)
    indexes = inspector.get_multi_indexes(**options)
    checks = inspector.get_multi_check_constraints(**options)

    def clean(text: str) -> str:
        return _normalise_sql(text, schema)

    tables: dict[str, _Table] = {}
    for name in names:
        key = (schema, name)
        entries: list[tuple[str, str, str | None]] = []  # kind, structure, name
        primary_key = primary_keys.get(key)
        if primary_key and primary_key["constrained_columns"]:
            entries.append(("primary key", ", ".join(primary_key["constrained_columns"]),
                            primary_key.get("name")))
        for fk in foreign_keys.get(key, []):
            referred = fk["referred_table"]
            if fk.get("referred_schema") not in (None, schema):
                referred = f"{fk['referred_schema']}.{referred}"
            structure = (f"{', '.join(fk['constrained_columns'])} → {referred}"
                         f"({', '.join(fk['referred_columns'])})")
            actions = fk.get("options", {})
            for action in ("ondelete", "onupdate"):
                value = str(actions.get(action) or "NO ACTION").upper()
                if value != "NO ACTION":
                    structure += f" ON {action[2:].upper()} {value}"
            entries.append(("foreign key", structure, fk.get("name")))
        for unique in uniques.get(key, []):
            entries.append(("unique constraint", ", ".join(str(c) for c in unique["column_names"]),
                            unique.get("name")))
        for index in indexes.get(key, []):
            if index.get("duplicates_constraint"):
                continue  # the index behind a unique constraint or primary key
            entries.append(("unique index" if index["unique"] else "index",
                            _index_structure(index, clean), index.get("name")))
        for check in checks.get(key, []):
            entries.append(("check constraint", clean(check["sqltext"]), check.get("name")))
        found: dict[tuple[str, str], str] = {}
        for kind, structure, object_name in entries:
            found.setdefault((kind, structure), object_name or "")
        tables[name] = _Table(
            columns={
                column["name"]: _Column(
                    type=clean(_render_type(column["type"], connection.dialect)),
                    nullable=bool(column["nullable"]),
                    default=_render_default(column, clean),
                )
                for column in columns.get(key, [])
            },
            constraints=found,
        )
    return tables


def _render_type(type_: Any, dialect: sa.Dialect) -> str:
    try:
        text = str(type_.compile(dialect=dialect))
    except sa.exc.CompileError:
        text = repr(type_)
    if isinstance(type_, sa.Enum):
        # An enum compiles to its name only; its labels are part of what it is.
        text += f"({', '.join(repr(label) for label in type_.enums)})"
    return text


def _render_default(column: Any, clean: Callable[[str], str]) -> str | None:
    identity = column.get("identity")
    if identity:
        return f"GENERATED {'ALWAYS' if identity.get('always') else 'BY DEFAULT'} AS IDENTITY"
    computed = column.get("computed")
    if computed:
        return f"GENERATED ALWAYS AS ({clean(str(computed['sqltext']))}) STORED"
    default = column.get("default")
    return None if default is None else clean(str(default))


def _index_structure(index: Any, clean: Callable[[str], str]) -> str:
    expressions = index.get("expressions") or index["column_names"]
    text = ", ".join(clean(str(e)) for e in expressions)
    dialect_options = index.get("dialect_options", {})
    using = dialect_options.get("postgresql_using")
    if using and using != "btree":
        text = f"USING {using}: {text}"
    include = dialect_options.get("postgresql_include")
    if include:
        text += f" INCLUDE ({', '.join(include)})"
    where = dialect_options.get("postgresql_where")
    if where:
        text += f" WHERE {clean(str(where))}"
    return text


def _normalise_sql(text: str, schema: str) -> str:
    """Collapse whitespace and drop the reflected schema's own qualification.

    PostgreSQL (and SQLAlchemy, for sequences) qualify names of the reflected schema, e.g.
    ``nextval('"migration_scratch_1a2b3c4d".items_id_seq'::regclass)``; both sides must read
    ``nextval('items_id_seq'::regclass)`` to compare equal.
    """
    qualifier = re.compile(rf'(?<![\w$"])(?:"{re.escape(schema)}"|{re.escape(schema)})\.')
    return qualifier.sub("", " ".join(text.split()))


# -- comparison ----------------------------------------------------------------------------

_EXTRA = "exists in the database but not at revision {revision}"
_MISSING = "is missing from the database"


def _differences(
    live: Mapping[str, _Table], replayed: Mapping[str, _Table], revision: str
) -> list[str]:
    """Readable lines, table by table; a table missing on one side is one line, not many."""
    lines: list[str] = []
    extra, missing = _EXTRA.format(revision=revision), _MISSING
    for name in sorted(set(live) | set(replayed)):
        ours, theirs = live.get(name), replayed.get(name)
        if theirs is None:
            lines.append(f"table {name} {extra}")
            continue
        if ours is None:
            lines.append(f"table {name} {missing}")
            continue
        lines += _column_differences(name, ours, theirs, revision)
        for kind, structure in sorted(
            set(ours.constraints) ^ set(theirs.constraints),
            key=lambda key: (_KINDS.index(key[0]), key[1]),
        ):
            in_live = (kind, structure) in ours.constraints
            object_name = (ours if in_live else theirs).constraints[(kind, structure)]
            label = f"{kind} {object_name}" if object_name else kind
            lines.append(f"{label} ({name}: {structure}) {extra if in_live else missing}")
    return lines


def _column_differences(table: str, live: _Table, replayed: _Table, revision: str) -> list[str]:
    lines: list[str] = []
    extra, missing = _EXTRA.format(revision=revision), _MISSING
    for column in sorted(set(live.columns) | set(replayed.columns)):
        ours, theirs = live.columns.get(column), replayed.columns.get(column)
        label = f"column {table}.{column}"
        if theirs is None:
            lines.append(f"{label} {extra}")
            continue
        if ours is None:
            lines.append(f"{label} {missing}")
            continue
        at = f"at revision {revision}"
        if ours.type != theirs.type:
            lines.append(f"{label}: type {ours.type} in the database, {theirs.type} {at}")
        if ours.nullable != theirs.nullable:
            lines.append(
                f"{label}: {_nullability(ours)} in the database, {_nullability(theirs)} {at}"
            )
        if ours.default != theirs.default:
            lines.append(
                f"{label}: default {ours.default or 'none'} in the database, "
                f"{theirs.default or 'none'} {at}"
            )
    return lines


def _nullability(column: _Column) -> str:
    return "nullable" if column.nullable else "NOT NULL"
