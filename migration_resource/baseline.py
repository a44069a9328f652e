"""Find the revision an unversioned database really matches, by replaying the migrations.

A database with application tables but no ``alembic_version`` (made by hand, by
``create_all``, restored from a dump) can only be stamped safely if we know which revision its
schema corresponds to. Flyway's ``baselineOnMigrate`` and Django's ``--fake-initial`` guess;
here the migrations are replayed one revision at a time into a uniquely named scratch schema
of the same database, and after each revision the scratch schema is reflected and compared
with the live one (from Alembic's per-revision callback, inside that revision's
transaction, so one Alembic run serves the whole replay).

What is compared is what the LATER revisions depend on, since stamping a revision means the
ones after it will run against these tables:

- tables and their columns: the reflected type as SQLAlchemy renders it (``VARCHAR(200)``, an
  enum column by its type's name), nullability, and how the value is produced (server
  default, identity or generated expression, schema qualification removed, e.g.
  ``nextval('items_id_seq'::regclass)``);
- the primary key, foreign keys (columns, referred table and columns, ON DELETE/ON UPDATE),
  unique constraints, indexes (columns or expressions, uniqueness, partial predicate, method,
  INCLUDE columns) and CHECK constraints (normalised SQL text), WITH THEIR NAMES. Objects are
  matched by structure, and when the structure matches but the name differs that is a
  difference ("unique constraint on users(email) is named users_email_key in the database,
  uq_users_email at revision X"): a later ``op.drop_constraint('uq_users_email')`` would fail
  on these tables. A database made by hand names things its own way, so it typically matches
  no revision until renamed (or it is stamped by the operator, who then owns those failures);
- enum types and their labels, in order (a later ``ALTER TYPE ... ADD VALUE 'x' AFTER 'y'``
  needs ``y``);
- sequences not owned by a column, by name and parameters (type, start, increment, bounds,
  cycle). A sequence owned by a serial or identity column goes with its column (the default
  names it, the identity implies it): it is compared (parameters, owner) only where both sides
  have one of that name, so a missing column or table is one difference, not two;
- views and materialized views, by name and definition (``pg_get_viewdef``, whitespace and
  the schema's own qualification removed);
- extensions, by name, across the whole database (PL/pgSQL, always there, is left out). An
  extension is installed once per database, not per schema: when the live database has
  ``pg_trgm`` (in ``public``), a replayed ``CREATE EXTENSION IF NOT EXISTS pg_trgm`` is a no-op
  that leaves it there, and a plain ``CREATE EXTENSION pg_trgm`` is run as ``IF NOT EXISTS``
  for the same reason (it would otherwise fail on "already exists"). So the replayed side's
  extensions are those the replayed statements created or named in a CREATE EXTENSION (the
  replay connection sees every statement, see below), plus any installed in the scratch
  schema; the live side's are those installed in the database before the replay. An
  extension the replay really installs lands in the scratch schema and goes with it.

Functions, triggers, domains, comments and grants are not compared. ``alembic_version``,
``migration_audit`` (see `PRODUCT_TABLES`) and the configured ignored tables (with the
sequences they own) are left out on both sides. The Inspector's bulk ``get_multi_*`` calls
read the tables of a schema in six queries; we build the comparison ourselves rather than use
Alembic's autogenerate (``compare_metadata``), which compares a model with a database,
ignores CHECK constraints and compares server defaults only through heuristics.

The nearest revision, when none matches, is the one with the FEWEST differences counted at
element level: a table missing or extra is shown as one line but weighs as much as its
columns, constraints and indexes together, so a history whose revision 2 creates a table is
not "nearer" at revision 1 (one line: the table) than at revision 2 (one line: a column). A
table the database lacks weighs the most it holds at any revision, not what it holds at the
one compared: otherwise it would weigh less at the early revisions, where it is smaller, and
pull the answer back along the history for no reason.

The replay never reaches the live tables:

- the replay connection's ``search_path`` is the scratch schema alone, so ``alembic_version``
  and every unqualified statement land there, and a statement on a table no earlier revision
  created fails in the scratch schema instead of changing the live table;
- a revision's SQLAlchemy constructs that name the live schema (``op.create_table(...,
  schema="public")``, ``op.add_column("items", col, schema="public")``) are replayed into the
  scratch schema: SQLAlchemy's ``schema_translate_map`` maps the live schema to the scratch
  one, and the ALTER statements Alembic renders itself (which that map does not reach) get
  the scratch schema before they are compiled. The map covers ``Table`` objects only, by
  SQLAlchemy's design: a lightweight ``sa.table("items", ..., schema="public")`` renders
  ``public.items`` and is refused as below;
- every statement is parsed (pglast, PostgreSQL's own parser) before it runs, and one that
  still names the live schema (``op.execute("UPDATE public.items ...")``, ``SET search_path TO
  public``, a DO block or function body mentioning ``public.``) or changes an extension the
  live database has is not run: the replay stops with a `BaselineError` saying so. The
  baseline is then unverifiable; an operator who knows the revision stamps it.

An extension the live database already has keeps its objects in its own schema (usually
the live one), off the replay's path: ``ALTER COLUMN email TYPE citext`` would fail there with
"type citext does not exist". So the statement is run with the extension's types, functions
and operator classes named with their schema (``public.citext``, ``public.gin_trgm_ops``),
found through the parse, which reaches those objects and nothing else of that schema; a
revision may also name them so itself. Names pg_catalog also has are left alone (citext's own
``replace()`` must not replace the built-in one), as are operators (``%`` of pg_trgm) and
function bodies: a revision using those fails in the replay, and the baseline is unverifiable
(`BaselineError`) rather than wrong. After each revision the scratch schema is reflected with
the extensions' schemas on the path, as the live one is, so both read ``citext`` unqualified.

The engine runs the replay in a scratch database of the same server
(`migration_resource.scratch_database`, as the plan's trial run does), so a revision's code
never runs on the live database, not even through a connection of its own
(`op.get_bind().engine.begin()`); the scratch schema and the checks above stay, a second
wall. Run in the live database itself (`replay_on` not given), the replay writes (it creates
and drops a schema), so callers run it under the migration lock. The scratch schema is
always dropped, also when a migration or the comparison fails; a process killed mid-replay
(a Lambda timeout) cannot do that, which `drop_scratch_schemas` cleans up on the next run.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGInspector

from migration_resource.execution import AppliedRevision, run_online
from migration_resource.inspection import PRODUCT_TABLES

if TYPE_CHECKING:
    from pglast import ast

    from migration_resource.settings import EngineSettings

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "migration_scratch_"
MAX_DIFFERENCE_LINES = 20
MAX_NAMED_MATCHES = 3  # a summary stays one short sentence
MAX_SUMMARY_DIFFERENCES = 3
# The summary goes into a CloudFormation reason of at most 240 characters, with the state
# before it and the next step after it: further differences are added only while it fits.
SUMMARY_LIMIT = 200
# Dropping the scratch schema must not hang a deploy behind some other session's lock.
DROP_TIMEOUT_SECONDS = 60
ALWAYS_INSTALLED_EXTENSIONS = frozenset({"plpgsql"})


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
    difference_count: int = 0  # all difference lines vs `nearest`, also those summarised away
    # What `nearest` was chosen by: differences counted per element (a missing table counts
    # its columns, constraints and indexes), so it can exceed `difference_count`.
    difference_weight: int = 0

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
            text = self._no_match_summary()
        if self.ignored_tables:
            text += f"; tables left out of the comparison: {', '.join(self.ignored_tables)}"
        return text

    def _no_match_summary(self) -> str:
        """The nearest revision and its first differences, one line, first difference first."""
        head = f"schema matches no revision; nearest {self.nearest}: "
        total = max(self.difference_count, len(self.differences))

        def more(shown: int) -> str:
            return f" (+{total - shown} more)" if total > shown else ""

        # The head names the revision, so each line can say "there" instead of naming it.
        lines = [
            line.replace(f" but not at revision {self.nearest}", " only")
            .replace(f" at revision {self.nearest}", " there")
            for line in self.differences[:MAX_SUMMARY_DIFFERENCES]
        ]
        first = lines[0]
        room = SUMMARY_LIMIT - len(head) - len(more(1))
        # A first difference too long for the room is cut at a word, rather than left out.
        shown = [first if len(first) <= room else first[: room - 1].rsplit(" ", 1)[0] + "…"]
        for line in lines[1:]:
            candidate = [*shown, line]
            if len(head + "; ".join(candidate) + more(len(candidate))) > SUMMARY_LIMIT:
                break
            shown = candidate
        return head + "; ".join(shown) + more(len(shown))


def find_baseline(
    database: sa.Engine,
    scripts: EngineSettings | Path,
    candidates: Sequence[str],
    *,
    schema: str = "public",
    ignored_tables: Sequence[str] = (),
    statement_timeout_seconds: int = 300,
    replay_on: sa.Engine | None = None,
) -> BaselineResult:
    """Replay `candidates` (base → head) into a scratch schema; say which match `schema`.

    `database` is read (READ ONLY) for the live schema. The replay runs on `replay_on`, a
    scratch database of the same server (the engine's way: then no revision code runs on the
    live database at all), or, without it, in a scratch schema of `database` itself.

    Replaying stops at the first revision that differs after one or more matched: the
    earliest match is what gets stamped, so later revisions cannot change the answer. While
    nothing has matched, every revision is replayed. Raises `BaselineError` when a revision
    fails during the replay, names the live schema, or the comparison fails.
    """
    started = time.perf_counter()
    ignored = tuple(sorted(set(ignored_tables)))
    skipped = PRODUCT_TABLES | set(ignored)
    with database.connect() as connection:
        # The live side is only read, and the server enforces it. With the reflected schema
        # alone on the path, PostgreSQL renders its names (view definitions, defaults)
        # unqualified, exactly as the replay connection renders the scratch schema's.
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        installed = _installed_extensions(connection)
        objects = _extension_objects(connection)
        connection.exec_driver_sql(
            f"SET LOCAL search_path TO {_search_path(connection, schema, objects)}"
        )
        live = _reflect(connection, schema, skipped, installed)
        connection.rollback()

    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"
    logger.info(
        "Verifying the baseline: replaying %d revisions into the scratch schema %s",
        len(candidates), scratch,
    )
    replay_database = replay_on or database
    try:
        replay = _replay_and_compare(
            replay_database, scripts, candidates, live,
            schema=schema, scratch=scratch, skipped=skipped, installed=installed,
            objects=objects, statement_timeout_seconds=statement_timeout_seconds,
        )
    except BaseException:
        # The original error is what the caller must see; a failed drop is only logged.
        _drop_schema(replay_database, scratch, raise_errors=False)
        raise
    _drop_schema(replay_database, scratch, raise_errors=True)

    matches = tuple(replay.matches)
    nearest, found, weight = replay.nearest()
    lines = [difference.text for difference in found]
    shown = tuple(lines[:MAX_DIFFERENCE_LINES])
    if len(lines) > MAX_DIFFERENCE_LINES:
        shown += (f"... and {len(lines) - MAX_DIFFERENCE_LINES} more",)
    result = BaselineResult(
        matched=matches[0] if matches else None,
        matches=matches,
        nearest=None if matches else nearest,
        differences=() if matches else shown,
        ignored_tables=ignored,
        revisions_compared=len(replay.compared),
        seconds=time.perf_counter() - started,
        difference_count=0 if matches else len(lines),
        difference_weight=0 if matches else weight,
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


class _Refused(Exception):
    """Raised before a statement that would reach beyond the scratch schema runs."""


@dataclass
class _Replay:
    """The comparison run after each replayed revision, inside that revision's transaction."""

    connection: sa.Connection
    guard: _Guard
    live: _Schema
    scratch: str
    skipped: frozenset[str]
    candidates: frozenset[str]
    matches: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    # Per compared revision while nothing matched; the nearest is chosen once all are known.
    differing: dict[str, list[_Difference]] = field(default_factory=dict)
    comparison_error: Exception | None = None

    def nearest(self) -> tuple[str | None, list[_Difference], int]:
        """The revision with the fewest differences, counted per element; the earliest on a tie.

        A table the database lacks weighs what it holds at the revision being compared, which
        grows along the history: counted as is, "table tasks is missing" would weigh less at
        an early revision than at head and pull the answer back for no reason. So it weighs
        the most it holds at any revision, the same everywhere.
        """
        largest: dict[str, int] = {}
        for found in self.differing.values():
            for difference in found:
                if difference.missing_table is not None:
                    name = difference.missing_table
                    largest[name] = max(largest.get(name, 0), difference.weight)

        def score(revision: str) -> int:
            return sum(largest[d.missing_table] if d.missing_table is not None else d.weight
                       for d in self.differing[revision])

        if not self.differing:
            return None, [], 0
        # `min` keeps the first of equals, and the revisions are in replay order.
        revision = min(self.differing, key=score)
        return revision, self.differing[revision], score(revision)

    def after_revision(self, step: AppliedRevision) -> None:
        if step.revision not in self.candidates:
            return
        connection, quoted = self.connection, self.connection.dialect.identifier_preparer.quote
        try:
            # Our own catalogue queries need no guarding, and parsing them would cost time.
            self.guard.paused = True
            # Only catalogue queries run now, so the extensions' schemas can be on the path:
            # their types and functions then read unqualified, as on the live side.
            path = _search_path(connection, self.scratch, self.guard.extension_objects)
            connection.exec_driver_sql(f"SET search_path TO {path}")
            try:
                extensions = _installed_extensions(connection, self.scratch)
                replayed = _reflect(connection, self.scratch, self.skipped,
                                    extensions | self.guard.declared_extensions)
            finally:
                connection.exec_driver_sql(f"SET search_path TO {quoted(self.scratch)}")
        except Exception as error:
            self.comparison_error = error
            raise
        finally:
            self.guard.paused = False
        self.compared.append(step.revision)
        found = _differences(self.live, replayed, step.revision)
        logger.debug("Baseline: revision %s differs in %d places (weight %d)",
                     step.revision, len(found), _weight(found))
        if not found:
            self.matches.append(step.revision)
        elif self.matches:
            raise _StopReplay
        else:
            self.differing[step.revision] = found


def _replay_and_compare(
    database: sa.Engine,
    scripts: EngineSettings | Path,
    candidates: Sequence[str],
    live: _Schema,
    *,
    schema: str,
    scratch: str,
    skipped: frozenset[str],
    installed: frozenset[str],
    objects: _ExtensionObjects,
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
        guard = _Guard(live_schema=schema, scratch=scratch, installed_extensions=installed,
                       extension_objects=objects)
        guard.install(connection)
        replay = _Replay(connection, guard, live, scratch, skipped, frozenset(candidates))
        stopped = False
        try:
            if candidates:
                run_online(connection, scripts, candidates[-1], direction="upgrade",
                           on_step=replay.after_revision)
        except _StopReplay:
            stopped = True
        except Exception as error:
            revision = _current_revision(candidates, replay)
            if guard.refusal is not None:
                raise _refusal_error(guard.refusal, revision, replay) from error
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
        finally:
            # Its session's search_path names the scratch schema, about to be dropped: a
            # pooled engine must not hand this connection to anyone else.
            connection.invalidate()
    if not candidates:
        return replay
    if guard.refusal is not None:
        # The migration caught our exception and carried on: what it replayed is not what
        # its statements would have done, so it proves nothing either.
        raise _refusal_error(guard.refusal, _current_revision(candidates, replay), replay)
    if not stopped and len(replay.compared) < len(candidates):
        # The callback is how we see each revision: an environment that does not pass
        # config.attributes["on_version_apply"] to context.configure hides them (the
        # engine's own, migration_resource/alembic_env/env.py, passes it).
        raise BaselineError(
            f"only {len(replay.compared)} of {len(candidates)} replayed revisions were "
            "reported back, so the baseline cannot be verified; the Alembic environment "
            "must pass config.attributes['on_version_apply'] to context.configure",
            revision=candidates[-1],
            replayed=tuple(replay.compared),
        )
    return replay


def _current_revision(candidates: Sequence[str], replay: _Replay) -> str:
    done = set(replay.compared)
    return next((r for r in candidates if r not in done), candidates[-1])


def _refusal_error(refusal: str, revision: str, replay: _Replay) -> BaselineError:
    return BaselineError(
        f"revision {revision} {refusal}, so the replay stopped rather than touch live "
        "tables; the baseline cannot be verified",
        revision=revision,
        replayed=tuple(replay.compared),
    )


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


# -- keeping the replay in the scratch schema ----------------------------------------------

# DB-API placeholders (psycopg's pyformat) are not SQL; PostgreSQL's own `$1` is.
_PLACEHOLDER = re.compile(r"%%|%\([^)]*\)s|%s")
_CREATE_EXTENSION = re.compile(r"^\s*CREATE\s+EXTENSION\s+(?!IF\s+NOT\s+EXISTS\b)", re.I)
_EXCERPT_CHARS = 80


@dataclass(frozen=True)
class _ExtensionObjects:
    """Types, functions and operator classes of installed extensions: name → schema.

    Only names that pg_catalog does not also have (citext defines its own ``replace()``: a
    call to it must keep resolving to the built-in one).
    """

    types: Mapping[str, str] = field(default_factory=dict)
    functions: Mapping[str, str] = field(default_factory=dict)
    opclasses: Mapping[str, str] = field(default_factory=dict)

    @property
    def schemas(self) -> tuple[str, ...]:
        every = {*self.types.values(), *self.functions.values(), *self.opclasses.values()}
        return tuple(sorted(every))

    def qualified_names(self) -> frozenset[tuple[str, str, str]]:
        """(parse node field, schema, name) of each object, as a qualified name reads."""
        return frozenset(
            (field_name, schema, name)
            for field_name, objects in (("names", self.types), ("funcname", self.functions),
                                        ("opclass", self.opclasses))
            for name, schema in objects.items()
        )


@dataclass
class _Guard:
    """Sees every statement of the replay connection before it runs (see the module doc)."""

    live_schema: str
    scratch: str
    installed_extensions: frozenset[str]  # in the database before the replay began
    extension_objects: _ExtensionObjects = field(default_factory=_ExtensionObjects)
    declared_extensions: set[str] = field(default_factory=set)  # named by replayed statements
    refusal: str | None = None  # why a statement was stopped; the replay then fails
    paused: bool = False
    qualified: re.Pattern[str] = field(init=False)  # `live.` in SQL text

    def __post_init__(self) -> None:
        self.qualified = _qualifier_pattern(self.live_schema)

    def install(self, connection: sa.Connection) -> None:
        # SQLAlchemy constructs (tables, indexes, constraints, inserts) that say
        # schema=<live> are rendered with the scratch schema instead.
        connection.execution_options(schema_translate_map={self.live_schema: self.scratch})
        sa.event.listen(connection, "before_execute", self._translate_alembic_ddl, retval=True)
        sa.event.listen(connection, "before_cursor_execute", self._check, retval=True)

    def _translate_alembic_ddl(
        self, connection: sa.Connection, element: Any, multiparams: Any, params: Any,
        execution_options: Any,
    ) -> tuple[Any, Any, Any]:
        """Alembic renders its own ALTER TABLE with the schema as given, out of the map's reach."""
        from alembic.ddl.base import AlterTable  # noqa: PLC0415 - alembic's DDL elements

        if isinstance(element, AlterTable) and element.schema == self.live_schema:
            element = copy.copy(element)
            element.schema = self.scratch
        return element, multiparams, params

    def _check(
        self, connection: sa.Connection, cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> tuple[str, Any]:
        if self.paused:
            return statement, parameters
        try:
            statement = self._checked(statement)
        except _Refused as refused:
            self.refusal = str(refused)
            logger.warning("Baseline replay stopped before: %s", _excerpt(statement))
            raise
        return statement, parameters

    def _checked(self, statement: str) -> str:
        """The statement to run (perhaps made a no-op); raises `_Refused` for one not to run."""
        from pglast import ast  # noqa: PLC0415 - ~160 ms of import only a replay pays
        from pglast.parser import ParseError, parse_sql  # noqa: PLC0415

        sql = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else "$1", statement)
        try:
            parsed = parse_sql(sql)
        except ParseError:
            # Not ours to judge (the server will say what is wrong), unless it visibly names
            # the live schema.
            if self.qualified.search(sql):
                raise self._names_live_schema(statement) from None
            return statement
        allowed = self.extension_objects.qualified_names()
        for raw in parsed:
            if raw.stmt is not None and self._names_live(raw.stmt, allowed):
                raise self._names_live_schema(statement)
        for raw in parsed:
            node = raw.stmt
            if isinstance(node, ast.CreateExtensionStmt) and node.extname:
                self.declared_extensions.add(node.extname)
                if (not node.if_not_exists and node.extname in self.installed_extensions
                        and len(parsed) == 1):
                    # Installed once per database: in an empty database this statement
                    # would have installed it, here it already is.
                    statement = _CREATE_EXTENSION.sub(
                        "CREATE EXTENSION IF NOT EXISTS ", statement, count=1
                    )
            for name in _extensions_changed(node):
                if name in self.installed_extensions:
                    raise _Refused(
                        f"changes the extension {name}, which the live database has "
                        f"({_excerpt(statement)})"
                    )
                self.declared_extensions.discard(name)
        if sql == statement:  # the parse's offsets are the statement's (no placeholders)
            statement = _qualify_extension_objects(statement, parsed, self.extension_objects)
        return statement

    def _names_live_schema(self, statement: str) -> _Refused:
        return _Refused(
            f"names the live schema {self.live_schema} explicitly ({_excerpt(statement)})"
        )

    def _names_live(self, root: ast.Node, allowed: frozenset[tuple[str, str, str]]) -> bool:
        return any(
            _node_names_schema(node, name, self.live_schema, self.qualified, allowed)
            for node, name in _walk(root)
        )


def _qualifier_pattern(schema: str) -> re.Pattern[str]:
    """``schema.`` or ``"schema".`` in SQL text (unquoted identifiers fold to lower case)."""
    unquoted = re.escape(schema)
    if schema == schema.lower():
        unquoted = f"(?i:{unquoted})"
    return re.compile(rf'(?<![\w$."])(?:"{re.escape(schema)}"|{unquoted})\s*\.(?=\s*[\w"])')


# The fields of parse nodes that hold an object's possibly qualified name, as a tuple of
# strings. Not column lists (a constraint's keys, COPY's columns, a column reference), which
# are tuples of strings too: a column may be named like the schema.
_NAME_FIELDS = frozenset({
    "names", "funcname", "objname", "typeName", "defnames", "domainname", "objects", "object",
    "collname", "opclass", "opname", "name", "conversion_name", "func_name",
})


def _walk(root: Any) -> Iterator[tuple[Any, str]]:
    """Every node and tuple under `root`, with the field holding it (tuples pass it on)."""
    from pglast import ast  # noqa: PLC0415

    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        value, name = stack.pop()
        if isinstance(value, tuple):
            yield value, name
            stack.extend((item, name) for item in value)
        elif isinstance(value, ast.Node):
            yield value, name
            slots: Mapping[str, Any] = getattr(type(value), "__slots__", {})
            stack.extend((getattr(value, slot), slot) for slot in slots)


def _node_names_schema(
    node: Any, field_name: str, live: str, qualified: re.Pattern[str],
    allowed: frozenset[tuple[str, str, str]] = frozenset(),
) -> bool:
    """One node of a parsed statement names the live schema as a schema.

    `allowed`: (field, schema, name) of an extension's type, function or operator class,
    which a revision may name qualified (``public.citext``): none of them is a live table.
    """
    from pglast import ast  # noqa: PLC0415

    if isinstance(node, tuple):
        # A qualified name: (schema, name), (catalog, schema, name), (schema, table, trigger).
        if field_name not in _NAME_FIELDS:
            return False
        names = [n.sval for n in node if isinstance(n, ast.String)]
        if len(names) == 2 and (field_name, *names) in allowed:
            return False
        return len(names) == len(node) >= 2 and live in names[:-1]
    rule = _schema_rules().get(type(node))
    return rule is not None and rule(node, live, qualified)


_Rule = Callable[[Any, str, "re.Pattern[str]"], bool]


@functools.cache
def _schema_rules() -> dict[type, _Rule]:
    """Per node type: does it name `live` as a schema (beyond the qualified names above)?"""
    from pglast import ast  # noqa: PLC0415
    from pglast.enums import GrantTargetType, ObjectType  # noqa: PLC0415

    def grant(node: Any, live: str, _: re.Pattern[str]) -> bool:
        on_schema = (node.objtype == ObjectType.OBJECT_SCHEMA
                     or node.targtype == GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA)
        return on_schema and live in _strings(node.objects)

    def option(node: Any, live: str, qualified: re.Pattern[str]) -> bool:
        if node.defname in ("schema", "schemas"):  # CREATE EXTENSION ... SCHEMA, IN SCHEMA
            return live in _strings(node.arg)
        if node.defname == "as":  # a DO block's or a function's body: its text
            return any(qualified.search(text) for text in _strings(node.arg))
        return False

    def call(node: Any, live: str, qualified: re.Pattern[str]) -> bool:
        function, arguments = _strings(node.funcname)[-1:], _strings(node.args)
        if function == ["set_config"]:
            return arguments[:1] == ["search_path"] and live in arguments[1:]
        if function in (["nextval"], ["setval"], ["currval"]):
            return any(qualified.match(text) for text in arguments[:1])
        return False

    def cast(node: Any, _: str, qualified: re.Pattern[str]) -> bool:
        to = _strings(node.typeName.names) if node.typeName is not None else []
        return to[-1:] == ["regclass"] and any(qualified.match(t) for t in _strings(node.arg))

    return {
        ast.RangeVar: lambda node, live, _: node.schemaname == live,
        ast.CreateSchemaStmt: lambda node, live, _: node.schemaname == live,
        # SET SCHEMA moves an object INTO the live schema.
        ast.AlterObjectSchemaStmt: lambda node, live, _: node.newschema == live,
        ast.RenameStmt: lambda node, live, _: (
            node.renameType == ObjectType.OBJECT_SCHEMA and node.subname == live
        ),
        ast.DropStmt: lambda node, live, _: (
            node.removeType == ObjectType.OBJECT_SCHEMA and live in _strings(node.objects)
        ),
        ast.GrantStmt: grant,
        ast.DefElem: option,
        ast.VariableSetStmt: lambda node, live, _: (
            node.name == "search_path" and live in _strings(node.args)
        ),
        ast.FuncCall: call,
        ast.TypeCast: cast,
    }


def _strings(value: Any) -> list[str]:
    """The string values directly in `value`: a String, a constant, or a tuple of those."""
    from pglast import ast  # noqa: PLC0415

    items = value if isinstance(value, tuple) else (value,)
    values = [item.val if isinstance(item, ast.A_Const) else item for item in items]
    return [v.sval for v in values if isinstance(v, ast.String) and v.sval is not None]


def _extensions_changed(node: Any) -> list[str]:
    """Extensions a statement drops, updates or moves."""
    from pglast import ast  # noqa: PLC0415
    from pglast.enums import ObjectType  # noqa: PLC0415

    if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_EXTENSION:
        return _strings(node.objects)
    if isinstance(node, ast.AlterExtensionStmt | ast.AlterExtensionContentsStmt):
        return [node.extname] if node.extname else []
    if (isinstance(node, ast.AlterObjectSchemaStmt)
            and node.objectType == ObjectType.OBJECT_EXTENSION):
        return _strings(node.object)
    return []


_EXTENSION_OBJECTS = sa.text("""
    SELECT kind, name, schema FROM (
        SELECT 'type' AS kind, t.typname AS name, n.nspname AS schema, t.oid AS oid,
               EXISTS (SELECT FROM pg_catalog.pg_type b WHERE b.typname = t.typname
                       AND b.typnamespace = 'pg_catalog'::regnamespace) AS builtin
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        UNION ALL
        SELECT 'function', p.proname, n.nspname, p.oid,
               EXISTS (SELECT FROM pg_catalog.pg_proc b WHERE b.proname = p.proname
                       AND b.pronamespace = 'pg_catalog'::regnamespace)
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        UNION ALL
        SELECT 'opclass', o.opcname, n.nspname, o.oid,
               EXISTS (SELECT FROM pg_catalog.pg_opclass b WHERE b.opcname = o.opcname
                       AND b.opcnamespace = 'pg_catalog'::regnamespace)
        FROM pg_catalog.pg_opclass o JOIN pg_catalog.pg_namespace n ON n.oid = o.opcnamespace
    ) AS objects
    WHERE NOT builtin AND NOT starts_with(schema, :prefix) AND EXISTS (
        SELECT FROM pg_catalog.pg_depend d WHERE d.objid = objects.oid AND d.deptype = 'e'
        AND d.classid = CASE kind WHEN 'type' THEN 'pg_catalog.pg_type'::regclass
                                  WHEN 'function' THEN 'pg_catalog.pg_proc'::regclass
                                  ELSE 'pg_catalog.pg_opclass'::regclass END)
    ORDER BY kind, name, schema
""")


def _extension_objects(connection: sa.Connection) -> _ExtensionObjects:
    found: dict[str, dict[str, str]] = {"type": {}, "function": {}, "opclass": {}}
    for kind, name, schema in connection.execute(_EXTENSION_OBJECTS, {"prefix": SCRATCH_PREFIX}):
        found[kind].setdefault(name, schema)
    return _ExtensionObjects(found["type"], found["function"], found["opclass"])


def _search_path(connection: sa.Connection, schema: str, objects: _ExtensionObjects) -> str:
    quote = connection.dialect.identifier_preparer.quote
    return ", ".join(quote(name) for name in dict.fromkeys((schema, *objects.schemas)))


def _qualify_extension_objects(
    statement: str, parsed: Sequence[Any], objects: _ExtensionObjects
) -> str:
    """Qualify the unqualified names of extension objects installed outside the scratch schema.

    The replay's path is the scratch schema alone, where an extension the database already
    has is not: ``ALTER COLUMN email TYPE citext`` would fail with "type citext does not
    exist". Named with their schema (``public.citext``) they are found, and nothing else of
    that schema becomes reachable. Types and function calls are found by their place in the
    parse, operator classes (which have none) by their token; operators are left as they are.
    """
    from pglast import ast  # noqa: PLC0415
    from pglast.parser import scan  # noqa: PLC0415

    inserts: dict[int, str] = {}  # byte offset → schema to put before the name there
    opclasses: set[str] = set()
    for raw in parsed:
        for node, _ in _walk(raw.stmt):
            if isinstance(node, ast.TypeName | ast.FuncCall):
                names = node.names if isinstance(node, ast.TypeName) else node.funcname
                known = objects.types if isinstance(node, ast.TypeName) else objects.functions
                single = _strings(names)
                if len(single) == 1 == len(names or ()) and single[0] in known and (
                    node.location is not None and node.location >= 0
                ):
                    inserts[node.location] = known[single[0]]
            elif isinstance(node, ast.IndexElem):
                single = _strings(node.opclass)
                if len(single) == 1 == len(node.opclass or ()) and single[0] in objects.opclasses:
                    opclasses.add(single[0])
    if opclasses:
        data = statement.encode()
        tokens = scan(statement)
        for previous, token in zip([None, *tokens], tokens, strict=False):
            text = data[token.start:token.end + 1].decode()
            name = text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()
            if (token.name == "IDENT" and name in opclasses
                    and (previous is None or previous.name != "ASCII_46")):  # not after "."
                inserts[token.start] = objects.opclasses[name]
    if not inserts:
        return statement
    data = statement.encode()
    for offset in sorted(inserts, reverse=True):
        data = data[:offset] + _quote_identifier(inserts[offset]).encode() + b"." + data[offset:]
    return data.decode()


def _quote_identifier(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _excerpt(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


# -- reflection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    type: str
    nullable: bool
    default: str | None  # server default, identity or generated expression


@dataclass(frozen=True)
class _Table:
    columns: Mapping[str, _Column]
    # (kind, structure) → the names of the objects with that structure (usually one).
    constraints: Mapping[tuple[str, str], tuple[str, ...]]

    @property
    def weight(self) -> int:
        """What a whole missing or extra table counts: every element it holds."""
        return max(1, len(self.columns) + sum(len(n) for n in self.constraints.values()))


@dataclass(frozen=True)
class _Sequence:
    structure: str  # e.g. "bigint start 1000"
    owner: str | None  # "table.column" of a serial or identity column


@dataclass(frozen=True)
class _Schema:
    tables: Mapping[str, _Table]
    enums: Mapping[str, tuple[str, ...]]  # type → labels in their order
    sequences: Mapping[str, _Sequence]
    views: Mapping[str, tuple[str, str]]  # name → (kind, normalised definition)
    extensions: frozenset[str]


# The order difference lines follow within a table.
_KINDS = ("primary key", "foreign key", "unique constraint", "index", "unique index",
          "check constraint")

_SEQUENCES = sa.text("""
    SELECT c.relname AS name, format_type(s.seqtypid, NULL) AS type, s.seqstart AS start,
           s.seqincrement AS increment, s.seqmin AS minimum, s.seqmax AS maximum,
           s.seqcycle AS cycle, owner.relname AS owner_table, a.attname AS owner_column
    FROM pg_catalog.pg_sequence s
    JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
    LEFT JOIN pg_catalog.pg_class owner ON owner.oid = d.refobjid
    LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE n.nspname = :schema
""")

_VIEWS = sa.text("""
    SELECT c.relname AS name, c.relkind AS kind, pg_catalog.pg_get_viewdef(c.oid) AS definition
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('v', 'm')
""")

_TYPE_MAXIMUM = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}


def _installed_extensions(connection: sa.Connection, schema: str | None = None) -> frozenset[str]:
    """Extensions in `schema`, or (None) in the database outside any scratch schema."""
    rows = connection.execute(
        sa.text(
            "SELECT e.extname FROM pg_catalog.pg_extension e "
            "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
            "WHERE CASE WHEN CAST(:schema AS text) IS NULL "
            "THEN NOT starts_with(n.nspname, :prefix) ELSE n.nspname = :schema END"
        ),
        {"schema": schema, "prefix": SCRATCH_PREFIX},
    ).scalars()
    return frozenset(rows) - ALWAYS_INSTALLED_EXTENSIONS


def _reflect(
    connection: sa.Connection, schema: str, skipped: frozenset[str], extensions: frozenset[str]
) -> _Schema:
    # A new Inspector each time: one caches what it read, and the scratch schema changes.
    inspector = sa.inspect(connection)
    assert isinstance(inspector, PGInspector)  # enums are PostgreSQL's

    def clean(text: str) -> str:
        return _normalise_sql(text, schema)

    names = [t for t in inspector.get_table_names(schema=schema) if t not in skipped]
    enums = {
        enum["name"]: tuple(enum["labels"]) for enum in inspector.get_enums(schema=schema)
    }
    sequences = {
        row.name: _Sequence(_sequence_structure(row), f"{row.owner_table}.{row.owner_column}"
                            if row.owner_table else None)
        for row in connection.execute(_SEQUENCES, {"schema": schema})
        if row.owner_table not in skipped
    }
    views = {
        row.name: ("materialized view" if row.kind == "m" else "view", clean(row.definition))
        for row in connection.execute(_VIEWS, {"schema": schema})
    }
    tables = _reflect_tables(inspector, connection.dialect, schema, names, clean)
    return _Schema(tables, enums, sequences, views, extensions)


def _reflect_tables(
    inspector: sa.Inspector, dialect: sa.Dialect, schema: str, names: list[str],
    clean: Callable[[str], str],
) -> dict[str, _Table]:
    if not names:
        return {}
    options: dict[str, Any] = {"schema": schema, "filter_names": names}
    columns = inspector.get_multi_columns(**options)
    primary_keys = inspector.get_multi_pk_constraint(**options)
    foreign_keys = inspector.get_multi_foreign_keys(**options)
    uniques = inspector.get_multi_unique_constraints(**options)
    indexes = inspector.get_multi_indexes(**options)
    checks = inspector.get_multi_check_constraints(**options)

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
        found: dict[tuple[str, str], list[str]] = {}
        for kind, structure, object_name in entries:
            found.setdefault((kind, structure), []).append(object_name or "")
        tables[name] = _Table(
            columns={
                column["name"]: _Column(
                    type=clean(_render_type(column["type"], dialect)),
                    nullable=bool(column["nullable"]),
                    default=_render_default(column, clean),
                )
                for column in columns.get(key, [])
            },
            constraints={key: tuple(sorted(names)) for key, names in found.items()},
        )
    return tables


def _render_type(type_: Any, dialect: sa.Dialect) -> str:
    # An enum renders as its type's name; its labels are compared with the type, once.
    try:
        return str(type_.compile(dialect=dialect))
    except sa.exc.CompileError:
        return repr(type_)


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


def _sequence_structure(row: Any) -> str:
    """The type, and only the parameters that differ from that type's defaults."""
    parts = [str(row.type)]
    ascending = row.increment > 0
    maximum = _TYPE_MAXIMUM.get(row.type, 2**63 - 1)
    low, high = (1, maximum) if ascending else (-maximum - 1, -1)
    if row.minimum != low:
        parts.append(f"min {row.minimum}")
    if row.maximum != high:
        parts.append(f"max {row.maximum}")
    if row.start != (row.minimum if ascending else row.maximum):
        parts.append(f"start {row.start}")
    if row.increment != 1:
        parts.append(f"increment {row.increment}")
    if row.cycle:
        parts.append("cycle")
    return " ".join(parts)


def _normalise_sql(text: str, schema: str) -> str:
    """Collapse whitespace and drop the reflected schema's own qualification.

    PostgreSQL (and SQLAlchemy, for sequences) qualify names of a schema not on the path,
    e.g. ``nextval('"migration_scratch_1a2b3c4d".items_id_seq'::regclass)``; both sides must
    read ``nextval('items_id_seq'::regclass)`` to compare equal.
    """
    qualifier = re.compile(rf'(?<![\w$"])(?:"{re.escape(schema)}"|{re.escape(schema)})\.')
    return qualifier.sub("", " ".join(text.split()))


# -- comparison ----------------------------------------------------------------------------

_EXTRA = "exists in the database but not at revision {revision}"
_MISSING = "is missing from the database"
_VIEW_EXCERPT_CHARS = 60
_VIEW_CONTEXT_CHARS = 15


@dataclass(frozen=True)
class _Difference:
    text: str
    weight: int = 1  # how many elements it stands for (a whole table: all of them)
    missing_table: str | None = None  # a table the revision has and the database lacks


def _weight(differences: Sequence[_Difference]) -> int:
    return sum(d.weight for d in differences)


def _differences(live: _Schema, replayed: _Schema, revision: str) -> list[_Difference]:
    """Readable lines: extensions and types first, then table by table, then views."""
    found = _named_differences(
        "extension", dict.fromkeys(live.extensions, ""),
        dict.fromkeys(replayed.extensions, ""), revision,
        lambda name, ours, theirs: [],
    )
    found += _named_differences(
        "enum type", live.enums, replayed.enums, revision,
        lambda name, ours, theirs: [
            f"enum type {name}: labels {_labels(ours)} in the database, {_labels(theirs)} "
            f"at revision {revision}"
        ],
    )
    found += _sequence_differences(live.sequences, replayed.sequences, revision)
    found += _table_differences(live.tables, replayed.tables, revision)
    found += _named_differences(
        "view", live.views, replayed.views, revision,
        lambda name, ours, theirs: [_view_difference(name, ours, theirs, revision)],
        kind_of=lambda value: value[0],
    )
    return found


def _named_differences(
    kind: str,
    live: Mapping[str, Any],
    replayed: Mapping[str, Any],
    revision: str,
    compare: Callable[[str, Any, Any], list[str]],
    *,
    kind_of: Callable[[Any], str] | None = None,
) -> list[_Difference]:
    """Objects matched by name: extra, missing, or `compare`d when both sides have them."""
    found: list[_Difference] = []
    for name in sorted(set(live) | set(replayed)):
        ours, theirs = live.get(name), replayed.get(name)
        label = f"{kind_of(ours if theirs is None else theirs) if kind_of else kind} {name}"
        if theirs is None:
            found.append(_Difference(f"{label} {_EXTRA.format(revision=revision)}"))
        elif ours is None:
            found.append(_Difference(f"{label} {_MISSING}"))
        elif ours != theirs:
            found += [_Difference(line) for line in compare(name, ours, theirs)]
    return found


def _sequence_differences(
    live: Mapping[str, _Sequence], replayed: Mapping[str, _Sequence], revision: str
) -> list[_Difference]:
    at = f"at revision {revision}"
    found: list[_Difference] = []
    for name in sorted(set(live) | set(replayed)):
        ours, theirs = live.get(name), replayed.get(name)
        if ours is None or theirs is None:
            one = ours or theirs
            if one is not None and one.owner is None:
                # An owned sequence on one side only goes with its column, compared there.
                where = _EXTRA.format(revision=revision) if theirs is None else _MISSING
                found.append(_Difference(f"sequence {name} {where}"))
            continue
        if ours.owner != theirs.owner:
            found.append(_Difference(
                f"sequence {name}: owned by {ours.owner or 'no column'} in the database, "
                f"by {theirs.owner or 'no column'} {at}"
            ))
        if ours.structure != theirs.structure:
            found.append(_Difference(
                f"sequence {name}: {ours.structure} in the database, {theirs.structure} {at}"
            ))
    return found


def _table_differences(
    live: Mapping[str, _Table], replayed: Mapping[str, _Table], revision: str
) -> list[_Difference]:
    """Table by table; a table missing on one side is one line weighing all it holds."""
    found: list[_Difference] = []
    extra, missing = _EXTRA.format(revision=revision), _MISSING
    for name in sorted(set(live) | set(replayed)):
        ours, theirs = live.get(name), replayed.get(name)
        if theirs is None:
            assert ours is not None
            found.append(_Difference(f"table {name} {extra}", ours.weight))
            continue
        if ours is None:
            found.append(_Difference(f"table {name} {missing}", theirs.weight, name))
            continue
        found += [_Difference(line) for line in _column_differences(name, ours, theirs, revision)]
        found += [_Difference(line)
                  for line in _constraint_differences(name, ours, theirs, revision)]
    return found


def _constraint_differences(table: str, live: _Table, replayed: _Table, revision: str) -> list[str]:
    lines: list[str] = []
    extra, missing = _EXTRA.format(revision=revision), _MISSING
    for kind, structure in sorted(
        set(live.constraints) | set(replayed.constraints),
        key=lambda key: (_KINDS.index(key[0]), key[1]),
    ):
        ours = live.constraints.get((kind, structure), ())
        theirs = replayed.constraints.get((kind, structure), ())
        only_ours = [n for n in ours if n not in theirs]
        only_theirs = [n for n in theirs if n not in ours]
        # Same structure, other name: the object is there, but a later revision that names
        # it (drop_constraint, drop_index) would not find it.
        for our_name, their_name in zip(only_ours, only_theirs, strict=False):
            lines.append(f"{kind} on {table}({structure}) is named {our_name or '(unnamed)'} in "
                         f"the database, {their_name or '(unnamed)'} at revision {revision}")
        paired = min(len(only_ours), len(only_theirs))
        for names, where in ((only_ours[paired:], extra), (only_theirs[paired:], missing)):
            for object_name in names:
                label = f"{kind} {object_name}" if object_name else kind
                lines.append(f"{label} ({table}: {structure}) {where}")
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


def _labels(labels: tuple[str, ...]) -> str:
    return ", ".join(repr(label) for label in labels) or "(none)"


def _view_difference(
    name: str, ours: tuple[str, str], theirs: tuple[str, str], revision: str
) -> str:
    """Where the two definitions part, briefly: a whole view definition is too long a line."""
    (our_kind, our_sql), (their_kind, their_sql) = ours, theirs
    if our_kind != their_kind:
        return f"view {name}: a {our_kind} in the database, a {their_kind} at revision {revision}"
    start = 0
    while start < min(len(our_sql), len(their_sql)) and our_sql[start] == their_sql[start]:
        start += 1
    # From a few words before the one where they part, for context.
    start = our_sql.rfind(" ", 0, max(0, our_sql.rfind(" ", 0, start) - _VIEW_CONTEXT_CHARS)) + 1

    def part(sql: str) -> str:
        text = sql[start:start + _VIEW_EXCERPT_CHARS]
        prefix = "…" if start else ""
        suffix = "…" if len(sql) > start + _VIEW_EXCERPT_CHARS else ""
        return f"{prefix}{text}{suffix}"

    return (f"{our_kind} {name}: defined as {part(our_sql)!r} in the database, "
            f"{part(their_sql)!r} at revision {revision}")
