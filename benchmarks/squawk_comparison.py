"""The change gate beside squawk, statement by statement, on team-style histories.

    python benchmarks/squawk_comparison.py [--team-history 264] [--json counts.json]
        [--before benchmarks/squawk_comparison_before.json] [--output docs/GATE_VS_SQUAWK.md]

The corpus: every history in tests/histories (written the way teams write revisions), the
sample application's history, and a generated long team history (`localdev.team_history`,
`--team-history N` revisions; 0 leaves it out). Each revision is rendered with Alembic's
offline mode, as the plan renders it (BEGIN and COMMIT included, so an autocommit_block shows),
and judged as its own deploy on a database holding the tables of the revisions before it (the
common production case: a release brings a revision or two). The gate
(`migration_resource.gate`) judges each statement; squawk (`squawk-cli`, a development
requirement, never in the Lambda bundle) judges the revision's file, and each of its findings
is put on the statement at its line. Squawk's session-timeout rules (the engine sets the
timeouts itself) and its style rules (types and names, not safety) are left out.

Every statement where the two disagree is listed with why. A squawk finding on one of its lock
rules that the gate lacks is `missed` unless the gate knows better: the table was created by
the same revision (no rows, no running code use it), or the default is computed once (a stable
or immutable function). After the lock rules of issue 27, `missed` is 0 on every history here;
`--before` adds the counts of an earlier run (the same script against an older gate) to show
what changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from pglast import ast
from pglast.enums import ObjectType
from pglast.parser import ParseError, parse_sql

from localdev.history_env import NAMING_CONVENTION, write_script_directory
from localdev.team_history import MIN_COUNT, write_team_history
from migration_resource.execution import alembic_quiet, render_offline
from migration_resource.gate import LOCKING, StatementJudge, _statements
from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings
from sample_app.models import NAMING_CONVENTION as SAMPLE_NAMING_CONVENTION

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / "tests" / "histories"
SAMPLE = ROOT / "alembic" / "versions"
DEFAULT_TEAM_HISTORY = 264
_OFFLINE_URL = sa.make_url("postgresql://offline@localhost/offline")
# Left out: squawk asks for timeouts the engine sets on its own session, and for style.
NOISE = ("require-timeout-settings,require-lock-timeout,require-statement-timeout,"
         "prefer-robust-stmts,prefer-bigint-over-int,prefer-bigint-over-smallint,"
         "prefer-identity,prefer-text-field,prefer-timestamptz,ban-char-field,"
         "transaction-nesting")
# Squawk's rule → the gate's rules for the same risk.
SAME: dict[str, frozenset[str]] = {
    "adding-required-field": frozenset({"add_column_not_null_without_default"}),
    "require-concurrent-index-creation": frozenset({"create_index_not_concurrently"}),
    "require-concurrent-index-deletion": frozenset({"drop_index_not_concurrently"}),
    "require-concurrent-reindex": frozenset({"reindex_not_concurrently"}),
    "ban-concurrent-index-creation-in-transaction": frozenset({"concurrently_in_transaction"}),
    "adding-not-nullable-field": frozenset({"set_not_null"}),
    "setting-not-nullable-field": frozenset({"set_not_null"}),
    "adding-foreign-key-constraint": frozenset({"foreign_key_without_not_valid"}),
    "constraint-missing-not-valid": frozenset({"foreign_key_without_not_valid",
                                               "check_without_not_valid",
                                               "add_unique_constraint", "add_primary_key",
                                               "validate_in_same_transaction"}),
    "disallowed-unique-constraint": frozenset({"add_unique_constraint"}),
    "adding-serial-primary-key-field": frozenset({"add_primary_key"}),
    "adding-field-with-default": frozenset({"add_column_rewrites_table"}),
    "ban-drop-column": frozenset({"drop_column"}),
    "ban-drop-table": frozenset({"drop_table"}),
    "renaming-column": frozenset({"rename"}),
    "renaming-table": frozenset({"rename"}),
    "changing-column-type": frozenset({"alter_column_type"}),
    "ban-truncate-cascade": frozenset({"truncate"}),
}
# Squawk's rules about locks held or rows scanned: a miss on one of these is the gate's gap.
LOCK_RULES = frozenset(rule for rule, same in SAME.items() if same & {
    "create_index_not_concurrently", "drop_index_not_concurrently", "reindex_not_concurrently",
    "concurrently_in_transaction", "add_column_not_null_without_default", "set_not_null",
    "foreign_key_without_not_valid", "check_without_not_valid", "add_unique_constraint",
    "add_primary_key", "add_column_rewrites_table", "validate_in_same_transaction"})
# What gives each added row its own value: a rewrite.
PER_ROW = ("clock_timestamp", "random", "gen_random_uuid", "uuid_generate", "nextval",
           "timeofday", "generated", "identity", "serial")
NEW_TABLE = "the table was created by the same revision: no rows, no running code use it"
COMPUTED_ONCE = ("the default is a stable or immutable expression: PostgreSQL computes it once, "
                 "no rewrite")
STATEMENT_SHOWN = 90


@dataclass
class Row:
    history: str
    revision: str
    statement: str
    squawk: list[str]
    gate: list[str]
    why: str
    missed: bool = False


@dataclass
class Counts:
    statements: int = 0
    agree: int = 0
    both_lock: int = 0  # ... of which both flag under a lock rule of squawk's
    squawk_only_lock: int = 0  # squawk's lock findings the gate does not make (all reasons)
    missed: int = 0  # ... of which the gate has no reason for: a gap
    gate_only: int = 0
    other: int = 0

    def add(self, other: Counts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Report:
    counts: dict[str, Counts] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    unrendered: list[str] = field(default_factory=list)

    @property
    def total(self) -> Counts:
        total = Counts()
        for counts in self.counts.values():
            total.add(counts)
        return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--team-history", type=int, default=DEFAULT_TEAM_HISTORY,
                        help="revisions of the generated team history (0: leave it out)")
    parser.add_argument("--output", type=Path, help="write the markdown report here too")
    parser.add_argument("--json", type=Path, help="write the counts as JSON here")
    parser.add_argument("--before", type=Path, help="counts of an earlier run, shown beside")
    args = parser.parse_args(argv)
    if args.team_history and args.team_history < MIN_COUNT:
        parser.error(f"--team-history needs at least {MIN_COUNT} revisions (or 0)")
    squawk = squawk_binary()
    if squawk is None:
        print("squawk is not installed beside this Python: pip install -r requirements-dev.txt",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gate-vs-squawk-"))
    try:
        report = compare_corpus(corpus(work, args.team_history), squawk=squawk, work=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    before = json.loads(args.before.read_text()) if args.before else None
    text = render(report, before)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(
            {name: vars(counts) for name, counts in report.counts.items()}, indent=2) + "\n")
    return 0


def squawk_binary() -> str | None:
    return shutil.which("squawk", path=str(Path(sys.executable).parent))


def corpus(work: Path, team_history: int) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """(name, script directory, naming convention) of each history compared."""
    for folder in sorted(p for p in HISTORIES.iterdir() if any(p.glob("*.py"))):
        if folder.name.startswith("__"):
            continue
        yield folder.name, write_script_directory(work / folder.name,
                                                  versions_from=folder), NAMING_CONVENTION
    yield "sample", write_script_directory(work / "sample", versions_from=SAMPLE), \
        SAMPLE_NAMING_CONVENTION
    if team_history:
        name = f"team_history_{team_history}"
        yield name, write_team_history(work / name, team_history).folder, NAMING_CONVENTION


def compare_corpus(histories: Iterator[tuple[str, Path, dict[str, str]]], *, squawk: str,
                   work: Path) -> Report:
    report = Report()
    for name, folder, convention in histories:
        counts = report.counts.setdefault(name, Counts())
        tables: set[str] = set()
        for revision, sql in rendered_revisions(folder, convention, report.unrendered, name):
            report.rows += compare(name, revision, sql, squawk=squawk, work=work, counts=counts,
                                   tables=frozenset(tables))
            tables = tables_after(sql, tables)
    return report


def rendered_revisions(folder: Path, convention: dict[str, str], unrendered: list[str],
                       name: str) -> list[tuple[str, str]]:
    """(revision, its SQL) in upgrade order, each rendered from its own parent; a merge runs
    no statement of its own and is left out."""
    settings = EngineSettings(database_url=_OFFLINE_URL, script_location=folder,
                              naming_convention=convention)
    script = ScriptDirectory.from_config(alembic_config(folder))
    found = []
    for one in reversed(list(script.walk_revisions())):
        parents = one.down_revision
        start = "base" if parents is None else (parents if isinstance(parents, str) else None)
        if start is None:
            continue
        with alembic_quiet():
            rendering = render_offline(settings, start, one.revision)
        if rendering.error is not None or one.revision not in rendering.sql:
            unrendered.append(f"{name} {one.revision} ({type(rendering.error).__name__})")
            continue
        found.append((one.revision, rendering.sql[one.revision]))
    return found


def tables_after(sql: str, tables: set[str]) -> set[str]:
    """The public tables after the revision's SQL ran: what it created, less what it dropped
    or renamed. (The comparison's model of the database; a deploy reads the real one.)"""
    after = set(tables)
    try:
        statements = parse_sql(sql)
    except ParseError:
        return after
    for raw in statements:
        stmt = raw.stmt
        if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
            after.add(stmt.relation.relname or "")
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
            for obj in stmt.objects or ():
                names = [n.sval for n in obj if isinstance(n, ast.String)]
                after.discard(names[-1] if names else "")
        elif (isinstance(stmt, ast.RenameStmt) and stmt.renameType == ObjectType.OBJECT_TABLE
              and stmt.relation is not None and stmt.newname):
            after.discard(stmt.relation.relname or "")
            after.add(stmt.newname)
    return after


def compare(name: str, revision: str, sql: str, *, squawk: str, work: Path, counts: Counts,
            tables: frozenset[str] = frozenset()) -> list[Row]:
    """The rows where the two disagree on one revision's statements; `counts` is added to."""
    judge = _judge(tables)
    pieces = list(_statements(sql))
    by_line = squawk_findings(squawk, [text for text, _ in pieces], work)
    rows = []
    for index, (text, _) in enumerate(pieces):
        body = text.strip().rstrip(";")
        gate = sorted({f.rule for f in judge.findings(revision, body)})
        if not body or body.upper() in ("BEGIN", "COMMIT") or "alembic_version" in body:
            continue
        counts.statements += 1
        found = by_line.get(index, [])
        covered = frozenset().union(*(SAME.get(rule, frozenset()) for rule in found))
        if (all(rule in SAME and SAME[rule] & set(gate) for rule in found)
                and set(gate) <= covered):
            counts.agree += 1
            counts.both_lock += bool(set(found) & LOCK_RULES)
            continue
        row = Row(name, revision, _shown(body), found, gate, "")
        row.why, row.missed = why(body, found, gate, judge)
        if any(rule in LOCK_RULES and not SAME[rule] & set(gate) for rule in found):
            counts.squawk_only_lock += 1
            counts.missed += row.missed
        elif [rule for rule in gate if rule not in covered]:
            counts.gate_only += 1
        else:
            counts.other += 1
        rows.append(row)
    return rows


def _judge(tables: frozenset[str]) -> StatementJudge:
    """A judge knowing the tables before the revision. (A gate from before it could know
    them, for a `--before` run of this script against an older commit, judges without.)"""
    try:
        from migration_resource.gate import LiveTables  # noqa: PLC0415
    except ImportError:
        return StatementJudge()
    return StatementJudge(live=LiveTables(frozenset(("public", t) for t in tables)))


def squawk_findings(squawk: str, statements: list[str], work: Path) -> dict[int, list[str]]:
    """statement index → squawk's rules on it, from one run over the revision's file."""
    path = work / "revision.sql"
    starts: list[int] = []
    lines: list[str] = []
    for text in statements:
        starts.append(len(lines))
        lines += (text.strip().rstrip(";") + ";").splitlines()
    path.write_text("\n".join(lines) + "\n")
    result = subprocess.run([squawk, "--reporter", "json", f"--exclude={NOISE}", str(path)],
                            capture_output=True, text=True, check=False, timeout=60)
    found: dict[int, set[str]] = {}
    for violation in json.loads(result.stdout or "[]"):
        index = max(i for i, start in enumerate(starts) if start <= violation["line"])
        found.setdefault(index, set()).add(violation["rule_name"])
    return {index: sorted(rules) for index, rules in found.items()}


def why(statement: str, squawk: list[str], gate: list[str],
        judge: StatementJudge) -> tuple[str, bool]:
    """Why the two differ on a statement, and whether it is a gap of the gate's."""
    lock_missed = [rule for rule in squawk if rule in LOCK_RULES and not SAME[rule] & set(gate)]
    if lock_missed:
        if _acts_on_new_tables(statement, judge):
            return NEW_TABLE, False
        if lock_missed == ["adding-field-with-default"] and _computed_once(statement):
            return COMPUTED_ONCE, False
        return f"not covered by the gate: {', '.join(lock_missed)}", True
    return _other_reason(squawk, gate), False


def _other_reason(squawk: list[str], gate: list[str]) -> str:
    covered = frozenset().union(*(SAME.get(rule, frozenset()) for rule in squawk))
    gate_only = [rule for rule in gate if rule not in covered]
    if gate_only:
        kinds = {rule: _kind(rule) for rule in gate_only}
        if all(kind == LOCKING for kind in kinds.values()):
            return f"the gate's own lock rule: squawk has none for it ({', '.join(gate_only)})"
        if all(kind == "note" for kind in kinds.values()):
            return "the gate's note: a revision's own timeouts hold for it alone"
        return ("the gate's own rule: squawk has none for data changes or for code it cannot "
                "see into")
    unknown = [rule for rule in squawk if rule not in SAME]
    if unknown:
        return f"squawk's {unknown[0]}: not a data-loss or lock rule the gate keeps"
    return "the same risk under another name"


def _computed_once(statement: str) -> bool:
    """A DEFAULT PostgreSQL computes once when the column is added: none of the per-row
    kinds (told by text here, apart from the gate's own judgement of it)."""
    text = statement.lower()
    return "default" in text and not any(word in text for word in PER_ROW)


def _acts_on_new_tables(statement: str, judge: StatementJudge) -> bool:
    """Whether what the statement changes was created earlier in the same revision."""
    try:
        (raw,) = parse_sql(statement)
    except (ParseError, ValueError):
        return False
    stmt = raw.stmt
    created = judge.created
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_INDEX:
        names = [tuple(n.sval or "" for n in obj if isinstance(n, ast.String))
                 for obj in stmt.objects or ()]
        indexes: set[tuple[str, str]] = getattr(created, "indexes", set())  # older gates lack it
        return bool(names) and all(("public", name[-1]) in indexes for name in names)
    relation = getattr(stmt, "relation", None)
    return isinstance(relation, ast.RangeVar) and created.has(
        (relation.schemaname or "public", relation.relname or ""))


def _kind(rule: str) -> str:
    from migration_resource.gate import _KIND_OF_RULE  # noqa: PLC0415 - the gate's own table

    return _KIND_OF_RULE.get(rule, "")


def _shown(statement: str) -> str:
    text = " ".join(statement.split()).replace("|", "\\|")
    return text if len(text) <= STATEMENT_SHOWN else text[:STATEMENT_SHOWN - 1] + "…"


def render(report: Report, before: dict[str, dict[str, int]] | None = None) -> str:
    total = report.total
    lines = [
        "# The change gate beside squawk",
        "",
        "Generated by `python benchmarks/squawk_comparison.py --before",
        "benchmarks/squawk_comparison_before.json --output docs/GATE_VS_SQUAWK.md`",
        "(squawk-cli, a development requirement). The corpus: the tests' team-style histories,",
        "the sample application's, and a generated long team history; each revision judged as",
        "its own deploy on the tables of the revisions before it; squawk's session-timeout and",
        "style rules left out. *Missed* counts squawk's lock findings the gate has no answer",
        "for; a lock finding on a table the same revision created is the gate's precision,",
        "not a miss.",
        "",
        f"{total.statements} statements; the two agree on {total.agree} ({total.both_lock} "
        "flagged by both under a lock rule of squawk's); squawk-only on its "
        f"lock rules: {total.squawk_only_lock} ({total.missed} missed); gate-only: "
        f"{total.gate_only}; other differences: {total.other}.",
        "",
        "| history | statements | agree | both, lock rules | squawk-only, lock rules "
        "| of which missed | gate-only | other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, counts in [*report.counts.items(), ("all", total)]:
        lines.append(f"| {name} | {counts.statements} | {counts.agree} | {counts.both_lock} | "
                     f"{counts.squawk_only_lock} | {counts.missed} | {counts.gate_only} | "
                     f"{counts.other} |")
    if before is not None:
        lines += ["", "Before and after: the same script and corpus; before is the gate "
                  "as it was before the lock rules of issue 27", "(`benchmarks/"
                  "squawk_comparison_before.json`: this script run with `--json` in a checkout "
                  "of", "commit 2f38cc0 with tests/histories/ops_console copied in, then "
                  "`--before` that file):", "",
                  "| history | agree before | agree now | squawk-only lock before | "
                  "squawk-only lock now | missed before | missed now |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, counts in [*report.counts.items(), ("all", total)]:
            old = before.get(name) or _summed(before)
            lines.append(f"| {name} | {old['agree']} | {counts.agree} | "
                         f"{old['squawk_only_lock']} | {counts.squawk_only_lock} | "
                         f"{old['missed']} | {counts.missed} |")
    lines += ["", "Every statement where they differ:", "",
              "| history | revision | statement | squawk | gate | why |",
              "|---|---|---|---|---|---|"]
    for row in report.rows:
        lines.append(f"| {row.history} | {row.revision} | `{row.statement}` | "
                     f"{', '.join(row.squawk) or '-'} | {', '.join(row.gate) or '-'} | "
                     f"{row.why} |")
    if report.unrendered:
        lines += ["", "Not rendered offline (they read rows; the plan runs them in a scratch "
                  "database): " + ", ".join(report.unrendered) + "."]
    return "\n".join(lines)


def _summed(before: dict[str, dict[str, int]]) -> dict[str, int]:
    names = ("agree", "squawk_only_lock", "missed")
    return {name: sum(counts.get(name, 0) for counts in before.values()) for name in names}


if __name__ == "__main__":
    raise SystemExit(main())
