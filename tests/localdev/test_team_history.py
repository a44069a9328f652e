"""The team-style history generator writes histories plain Alembic runs to head and back, and
the engine runs through its own environment, the naming convention as a setting."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from localdev.history_env import NAMING_CONVENTION
from localdev.team_history import write_team_history
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
from tests.histories.support import schema_dump, scratch_database


def test_plain_alembic_runs_a_team_history_up_to_head_and_down_to_base(
    tmp_path: Path, db: sa.Engine
) -> None:
    # GIVEN a short history with what the long one has: a merge, autocommit blocks, data reads
    history = write_team_history(tmp_path / "history", 40, seed_rows=5)
    config = Config()
    config.set_main_option("script_location", str(history.folder))
    config.attributes["connection"] = db  # env.py connects, runs and commits
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [history.head]
    assert {r.revision for r in script.walk_revisions()} == set(history.ordered)
    [merge] = history.merges
    merged = script.get_revision(merge).down_revision
    assert isinstance(merged, tuple) and len(merged) == 2
    assert set(merged) <= history.branched
    texts = {r: Path(script.get_revision(r).path).read_text() for r in history.ordered}
    reads = [texts[r] for r in history.data_migrations]
    assert len(reads) == 3
    assert any(".fetchone()" in t for t in reads)
    assert any("for row in conn.execute(sa.select(" in t for t in reads)
    assert "ADD VALUE" in "".join(texts[r] for r in history.autocommit)
    concurrent = {name for r in history.autocommit
                  for name in re.findall(r"create_index\(op\.f\('(\w+)'\)", texts[r])}
    assert len(concurrent) >= 3

    # WHEN plain Alembic upgrades an empty database to head
    command.upgrade(config, "head")

    # THEN every revision ran; each data migration raises when its read finds no row, so
    # getting here means the seeded rows were there, and what they read was written
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == history.head
        statuses = connection.scalar(sa.text("SELECT enum_range(NULL::order_status)::text"))
        assert statuses == "{pending,paid,shipped,refunded,cancelled}"
        assert connection.scalar(
            sa.text("SELECT count(*) FROM orders WHERE status = 'refunded'")) == 1
        indexes = set(connection.scalars(sa.text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indisvalid")))
        assert concurrent <= indexes

    # WHEN it downgrades to base
    command.downgrade(config, "base")

    # THEN nothing of the history is left but Alembic's own table
    with db.connect() as connection:
        tables = connection.scalars(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
        assert tables == ["alembic_version"]
        assert connection.scalar(sa.text("SELECT to_regtype('order_status')")) is None


def test_the_engine_runs_a_team_history_through_its_own_environment(
    tmp_path: Path, server_url: str
) -> None:
    # GIVEN a team history whose env.py (carrying the convention) plain Alembic runs, and the
    # same env.py made to fail: the engine must not need it
    history = write_team_history(tmp_path / "history", 40, seed_rows=5)
    dumps = []
    with scratch_database(server_url) as url:
        db = sa.create_engine(url, poolclass=sa.NullPool)
        config = Config()
        config.set_main_option("script_location", str(history.folder))
        config.attributes["connection"] = db
        command.upgrade(config, "head")
        db.dispose()
        dumps.append(schema_dump(url))
    (history.folder / "env.py").write_text("raise RuntimeError('not the engine environment')\n")

    # WHEN the engine migrates an empty database with the convention as a setting
    with scratch_database(server_url) as url:
        engine = MigrationEngine(EngineSettings(database_url=sa.make_url(url),
                                                script_location=history.folder,
                                                naming_convention=NAMING_CONVENTION))
        try:
            outcome = engine.migrate()
        finally:
            engine.close()
        dumps.append(schema_dump(url))

    # THEN it ran every revision and named every constraint as the team's env.py did
    assert outcome.final == (history.head,)
    assert len(outcome.applied) == len(history.ordered)
    assert dumps[0] == dumps[1]
