"""Revision phases (expand / contract) and their deferral, on a real PostgreSQL.

One small history of our own covers each statement kind; the deploy's plan and apply are
driven by the live release (CloudFormation's OldResourceProperties) as a deploy drives them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource.commands.deploy import DeployRequest
from migration_resource.engine import MigrationEngine, MigrationRefused, Release
from migration_resource.phases import PhaseMarkerError
from tests.migration_resource.conftest import EngineFactory
from tests.migration_resource.support import linear_history, version_rows

BASE = 'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), ' \
       'sa.Column("name", sa.Text), sa.Column("size", sa.Integer), sa.Column("note", sa.Text))'
# revision id → (upgrade body, expected phase)
KINDS = {
    "r01_base": (BASE + '\n    op.create_table("tags", sa.Column("id", sa.Integer, '
                 'primary_key=True))', "expand"),
    "r02_add_nullable": ('op.add_column("items", sa.Column("colour", sa.Text))', "expand"),
    "r03_new_table": ('op.create_table("labels", sa.Column("id", sa.Integer, primary_key=True))',
                      "expand"),
    "r04_copy_data": ('op.execute("UPDATE items SET colour = name WHERE colour IS NULL")',
                      "expand"),
    "r05_drop_column": ('op.drop_column("items", "note")', "contract"),
    "r06_rename": ('op.alter_column("items", "name", new_column_name="title")', "contract"),
    "r07_type_change": ('op.alter_column("items", "size", type_=sa.BigInteger)', "contract"),
    "r08_not_null": ('op.alter_column("items", "colour", nullable=False)', "contract"),
    "r09_required_column": ('op.add_column("items", sa.Column("sku", sa.Text, '
                            'nullable=False))', "contract"),
    "r10_delete_all": ('op.execute("DELETE FROM tags")', "contract"),
    "r11_drop_table": ('op.drop_table("tags")', "contract"),
}


def history(folder: Path, bodies: dict[str, str]) -> Path:
    return linear_history(folder, bodies)


def test_each_statement_kind_gets_its_phase(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    scripts = history(tmp_path / "kinds", {rev: body for rev, (body, _) in KINDS.items()})
    engine = make_engine(script_location=scripts)
    engine.migrate("r01_base")
    outcome = engine.dry_run()
    phases = {p["revision"]: p["phase"] for p in outcome.phases or ()}
    assert phases == {rev: phase for rev, (_, phase) in KINDS.items() if rev != "r01_base"}
    why = {p["revision"]: p["why"] for p in outcome.phases or ()}
    assert why["r05_drop_column"] == "drop_column" and why["r06_rename"] == "rename"
    # the dry run says it in words too, and the admin status lists them by phase
    assert any(note.startswith("phases: expand r02_add_nullable, r03_new_table, "
                               "r04_copy_data; contract r05_drop_column (drop_column)")
               for note in outcome.notes)
    status = engine.status(with_phases=True)
    assert "expand: r02_add_nullable, r03_new_table, r04_copy_data; contract: " \
           "r05_drop_column" in status.message


def test_the_revision_file_may_state_its_phase_with_a_reason(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    marked = '# migration-phase: expand -- the note column was never read by any release\n' \
             '    op.drop_column("items", "note")'
    scripts = history(tmp_path / "marked", {"r01_base": BASE, "r02_drop": marked,
                                            "r03_add": 'op.add_column("items", '
                                            'sa.Column("x", sa.Text))'})
    engine = make_engine(script_location=scripts)
    engine.migrate("r01_base")
    (drop, _) = engine.dry_run().phases or ()
    assert (drop["phase"], drop["why"], drop["marked"]) == (
        "expand", "the note column was never read by any release", True)
    # without a reason the line is refused, saying how to write it
    (scripts / "versions" / "r02_drop.py").write_text(
        (scripts / "versions" / "r02_drop.py").read_text().replace(
            " -- the note column was never read by any release", ""))
    with pytest.raises(PhaseMarkerError, match="must name expand or contract and a reason"):
        make_engine(script_location=scripts).dry_run()


RELEASE = {"r01_base": BASE,
           "r02_add": 'op.add_column("items", sa.Column("colour", sa.Text))',
           "r03_drop": 'op.drop_column("items", "note")'}


def deploy(engine: MigrationEngine, live: str | None, target: str = "r03_drop") -> tuple[
        tuple[str, ...], tuple[str, ...]]:
    request = DeployRequest(target=target, target_heads=(target,), history_digest=None,
                            allow_destructive=False, snapshot_before_migrate=False,
                            live_release=(live,) if live else None)
    planned = engine.plan_deploy(request)
    outcome = engine.apply_deploy(request, planned.plan)
    return tuple(a.revision for a in outcome.applied), outcome.deferred


def test_a_contract_revision_waits_until_the_live_release_contains_it(
    tmp_path: Path, make_engine: EngineFactory, db: sa.Engine
) -> None:
    scripts = history(tmp_path / "release", RELEASE)
    production = {"script_location": scripts, "stage": "production"}
    make_engine(**production).migrate("r01_base")
    with db.begin() as connection:
        connection.exec_driver_sql("INSERT INTO items (name, note) VALUES ('a', 'kept')")
    # release N (live: r01) brings the drop: the expand part runs, the drop waits
    assert deploy(make_engine(**production), live="r01_base") == (("r02_add",), ("r03_drop",))
    assert version_rows(db) == ["r02_add"]
    # release N fails and rolls back: the next try still has r01 live, the drop still waits
    assert deploy(make_engine(**production), live="r01_base") == ((), ("r03_drop",))
    # release N+1 (live: N, whose target is r03): the deferral does not approve the drop,
    # production still needs AllowDestructive or the revision's approval line naming it
    with pytest.raises(MigrationRefused, match=(
            r"r03_drop: drop_column blocked in production; .*"
            r"`# migration-approve: drop_column items\.note -- <why>`")):
        deploy(make_engine(**production), live="r03_drop")
    assert version_rows(db) == ["r02_add"]
    drop = scripts / "versions" / "r03_drop.py"
    drop.write_text(drop.read_text().replace(
        '    op.drop_column("items", "note")',
        '    # migration-approve: drop_column items.note -- no release reads it since r02\n'
        '    op.drop_column("items", "note")'))
    assert deploy(make_engine(**production), live="r03_drop") == (("r03_drop",), ())
    assert version_rows(db) == ["r03_drop"]
    with db.connect() as connection:
        assert connection.exec_driver_sql("SELECT name FROM items").scalar_one() == "a"


def test_no_known_live_release_defers_every_contract_revision(
    tmp_path: Path, make_engine: EngineFactory, db: sa.Engine
) -> None:
    scripts = history(tmp_path / "unknown", RELEASE)
    make_engine(script_location=scripts).migrate("r01_base")
    assert deploy(make_engine(script_location=scripts), live=None) == (
        ("r02_add",), ("r03_drop",))
    # an empty database has no code that could need anything: everything runs
    fresh = history(tmp_path / "fresh", RELEASE)
    with db.begin() as connection:
        connection.exec_driver_sql("DROP TABLE items, alembic_version, migration_audit")
    assert deploy(make_engine(script_location=fresh), live=None)[1] == ()
    assert version_rows(db) == ["r03_drop"]


def test_without_a_live_release_only_the_trailing_contract_revisions_wait(
    tmp_path: Path, make_engine: EngineFactory, db: sa.Engine
) -> None:
    # GIVEN a team's long history adopted on a first deploy: a drop in the middle (older
    # history), more work after it, and a drop at the end
    scripts = history(tmp_path / "long", {
        **RELEASE, "r04_add": 'op.add_column("items", sa.Column("shape", sa.Text))',
        "r05_drop": 'op.drop_column("items", "size")'})
    make_engine(script_location=scripts).migrate("r01_base")
    # THEN the middle drop runs with the rest (the gate judges it as before), the last waits
    assert deploy(make_engine(script_location=scripts), live=None, target="r05_drop") == (
        ("r02_add", "r03_drop", "r04_add"), ("r05_drop",))
    assert version_rows(db) == ["r04_add"]


def test_a_revision_after_a_deferred_contract_revision_is_refused(
    tmp_path: Path, make_engine: EngineFactory, db: sa.Engine
) -> None:
    scripts = history(tmp_path / "after", {
        **RELEASE, "r04_add": 'op.add_column("items", sa.Column("shape", sa.Text))'})
    make_engine(script_location=scripts).migrate("r01_base")
    with pytest.raises(MigrationRefused, match=r"revision r04_add comes after contract revision "
                       r"r03_drop.*Make r03_drop the last revision of this release"):
        deploy(make_engine(script_location=scripts), live="r01_base", target="r04_add")
    assert version_rows(db) == ["r01_base"]
    # an application container stops before it instead
    outcome = make_engine(script_location=scripts).migrate(
        "r04_add", release=Release(contains=None, refuse_after_contract=False))
    assert [a.revision for a in outcome.applied] == ["r02_add"]
    assert outcome.deferred == ("r03_drop", "r04_add")


def test_release_split_is_pure() -> None:
    split = Release(contains=frozenset({"a"})).split(
        ["b", "c"], {"b": "expand", "c": "contract"}, "c", lambda r: frozenset({"a", "b"}))
    assert (split.run, split.deferred, split.target) == (("b",), ("c",), "b")
