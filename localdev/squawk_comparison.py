"""The change gate beside squawk, statement by statement, on the tests' team-style histories.

    python -m localdev.squawk_comparison [--output docs/GATE_VS_SQUAWK.md]

Each revision of each history in tests/histories is rendered with Alembic's offline mode, as
the plan renders it, and judged as its own deploy on a database that holds the tables of the
revisions before it (the common production case: a release brings a revision or two). The
gate (`migration_resource.gate`) and squawk (`squawk-cli`, a development requirement, never in
the Lambda bundle) each judge every statement. Squawk's session-timeout rules (the engine sets
the timeouts itself) and its style rules (types and names, not safety) are left out.

The report is a table of every statement where the two disagree, with why: the gate is right
there by design (a table the same revision created holds no rows; data changes and code the
gate cannot see into, which squawk has no rule for), or squawk has a rule the gate does not
cover yet. Revisions that read rows cannot be rendered offline; they are listed, as the plan
runs them in a scratch database instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from localdev.history_env import NAMING_CONVENTION, write_script_directory
from migration_resource.execution import alembic_quiet, render_offline
from migration_resource.gate import StatementJudge, _statements
from migration_resource.revisions import alembic_config
from migration_resource.settings import EngineSettings

HISTORIES = Path(__file__).resolve().parents[1] / "tests" / "histories"
NAMES = ("branchy", "concurrent_indexes", "flask_app", "seeded_service")
# Left out: squawk asks for timeouts the engine sets on its own session, and for style.
NOISE = ("require-timeout-settings,require-lock-timeout,require-statement-timeout,"
         "prefer-robust-stmts,prefer-bigint-over-int,prefer-bigint-over-smallint,"
         "prefer-identity,prefer-text-field,prefer-timestamptz,ban-char-field")
# Squawk's rule → the gate's rules for the same risk.
SAME: dict[str, frozenset[str]] = {
    "adding-required-field": frozenset({"add_column_not_null_without_default"}),
    "require-concurrent-index-creation": frozenset({"create_index_not_concurrently"}),
    "adding-not-nullable-field": frozenset({"set_not_null"}),
    "setting-not-nullable-field": frozenset({"set_not_null"}),
    "adding-foreign-key-constraint": frozenset({"foreign_key_without_not_valid"}),
    "constraint-missing-not-valid": frozenset({"foreign_key_without_not_valid",
                                               "check_without_not_valid"}),
    "ban-drop-column": frozenset({"drop_column"}),
    "ban-drop-table": frozenset({"drop_table"}),
    "renaming-column": frozenset({"rename"}),
    "renaming-table": frozenset({"rename"}),
    "changing-column-type": frozenset({"alter_column_type"}),
    "ban-truncate-cascade": frozenset({"truncate"}),
}
# What squawk covers that the gate does not yet, in the gate's words.
NOT_YET = {
    "disallowed-unique-constraint": "ADD CONSTRAINT ... UNIQUE builds its index under a lock "
                                    "that blocks reads and writes: not covered yet",
    "require-concurrent-index-deletion": "DROP INDEX without CONCURRENTLY: not covered yet",
    "adding-field-with-default": "a volatile default rewrites the table: not covered yet",
    "adding-serial-primary-key-field": "a serial key on an existing table rewrites it: not "
                                       "covered yet",
}
STATEMENT_SHOWN = 90


@dataclass
class Row:
    history: str
    revision: str
    statement: str
    squawk: list[str]
    gate: list[str]
    why: str


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, help="write the markdown report here too")
    args = parser.parse_args(argv)
    squawk = shutil.which("squawk", path=str(Path(sys.executable).parent))
    if squawk is None:
        print("squawk is not installed beside this Python: pip install -r requirements-dev.txt",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gate-vs-squawk-"))
    try:
        rows: list[Row] = []
        counts = {"statements": 0, "agree": 0}
        unrendered: list[str] = []
        for name in NAMES:
            folder = write_script_directory(work / name, versions_from=HISTORIES / name)
            for revision, sql in rendered_revisions(folder, unrendered, name):
                rows += compare(name, revision, sql, squawk=squawk, work=work, counts=counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(rows, counts, unrendered)
    print(report)
    if args.output is not None:
        args.output.write_text(report + "\n")
    return 0


def rendered_revisions(
    folder: Path, unrendered: list[str], name: str
) -> list[tuple[str, str]]:
    """(revision, its SQL) in upgrade order, each rendered from its own parent."""
    settings = EngineSettings(database_url=_OFFLINE_URL, script_location=folder,
                              naming_convention=NAMING_CONVENTION)
    script = ScriptDirectory.from_config(alembic_config(folder))
    found = []
    for one in reversed(list(script.walk_revisions())):
        parents = one.down_revision
        start = "base" if parents is None else (parents if isinstance(parents, str) else None)
        if start is None:  # a merge: it runs no statement of its own
            continue
        with alembic_quiet():
            rendering = render_offline(settings, start, one.revision)
        if rendering.error is not None or one.revision not in rendering.sql:
            unrendered.append(f"{name} {one.revision} ({type(rendering.error).__name__})")
            continue
        found.append((one.revision, rendering.sql[one.revision]))
    return found


def compare(name: str, revision: str, sql: str, *, squawk: str, work: Path,
            counts: dict[str, int]) -> list[Row]:
    judge = StatementJudge()
    rows = []
    for text, _ in _statements(sql):
        body = text.strip().rstrip(";")
        if not body or body.upper() in ("BEGIN", "COMMIT") or "alembic_version" in body:
            continue
        counts["statements"] += 1
        gate = sorted({f.rule for f in judge.findings(revision, body)})
        found = squawk_rules(squawk, body, work)
        covered = frozenset().union(*(SAME.get(rule, frozenset()) for rule in found))
        if (all(rule in SAME and SAME[rule] & set(gate) for rule in found)
                and set(gate) <= covered):
            counts["agree"] += 1
            continue
        rows.append(Row(name, revision, _shown(body), found, gate,
                        why(body, found, gate, judge)))
    return rows


def squawk_rules(squawk: str, statement: str, work: Path) -> list[str]:
    path = work / "statement.sql"
    path.write_text(statement + ";\n")
    result = subprocess.run([squawk, "--reporter", "json", f"--exclude={NOISE}", str(path)],
                            capture_output=True, text=True, check=False, timeout=60)
    violations = json.loads(result.stdout or "[]")
    return sorted({v["rule_name"] for v in violations})


def why(statement: str, squawk: list[str], gate: list[str], judge: StatementJudge) -> str:
    covered = frozenset().union(*(SAME.get(rule, frozenset()) for rule in squawk))
    gate_only = [rule for rule in gate if rule not in covered]
    if gate_only:
        return ("the gate's own rule: squawk has none for data changes or for code it cannot "
                "see into")
    missing = [rule for rule in squawk if rule in NOT_YET]
    if missing:
        return NOT_YET[missing[0]]
    if squawk and judge.created.tables:
        return "the table was created by the same revision: no rows, no running code use it"
    unknown = [rule for rule in squawk if rule not in SAME]
    if unknown:
        return f"squawk's {unknown[0]}: not a data-loss or lock rule the gate keeps"
    return "the same risk under another name"


def render(rows: list[Row], counts: dict[str, int], unrendered: list[str]) -> str:
    lines = [
        "# The change gate beside squawk",
        "",
        "Generated by `python -m localdev.squawk_comparison --output docs/GATE_VS_SQUAWK.md`",
        "(squawk-cli, a development requirement; the tests' team-style histories, each revision",
        "judged as its own deploy on the tables of the revisions before it; squawk's",
        "session-timeout and style rules left out).",
        "",
        f"{counts['statements']} statements; the two agree on {counts['agree']}; they differ on "
        f"{len(rows)}:",
        "",
        "| history | revision | statement | squawk | gate | why |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.history} | {row.revision} | `{row.statement}` | "
                     f"{', '.join(row.squawk) or '-'} | {', '.join(row.gate) or '-'} | "
                     f"{row.why} |")
    if unrendered:
        lines += ["", "Not rendered offline (they read rows; the plan runs them in a scratch "
                  "database): " + ", ".join(unrendered) + "."]
    return "\n".join(lines)


def _shown(statement: str) -> str:
    text = " ".join(statement.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= STATEMENT_SHOWN else text[:STATEMENT_SHOWN - 1] + "…"


# Offline rendering connects to nothing; the settings only need a well-formed URL.
_OFFLINE_URL = sa.make_url("postgresql://offline@localhost/offline")

if __name__ == "__main__":
    sys.exit(main())
