"""Target revisions are validated before any database is touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from migration_resource.dsn import normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.revisions import TargetRevisionError, check_target_syntax
from migration_resource.settings import EngineSettings
from tests.alembic.support import ADD_DISPLAY_NAME, BACKFILL_DISPLAY_NAME
from tests.migration_resource.support import SAMPLE_SCRIPTS, linear_history, version_rows

# Nothing listens here: a target check that reached the database would fail differently.
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nowhere"


@pytest.fixture
def offline_engine() -> MigrationEngine:
    return MigrationEngine(
        EngineSettings(database_url=normalize_url(UNREACHABLE), script_location=SAMPLE_SCRIPTS)
    )


@pytest.mark.parametrize(
    "target",
    [
        "'; DROP TABLE users; --",
        "head; DELETE FROM alembic_version",
        "abc123 OR 1=1",
        "-1",
        "+2",
        "head~1",
        "@head",
        "bad label@head",
        "x" * 33,
        "",
        "   ",
        "rev\nDROP",
    ],
)
def test_sql_looking_and_malformed_targets_are_refused(
    offline_engine: MigrationEngine, target: str
) -> None:
    for operation in (offline_engine.status, offline_engine.migrate, offline_engine.dry_run):
        with pytest.raises(TargetRevisionError, match=r"not a revision id|is empty"):
            operation(target)


@pytest.mark.parametrize("target", ["0123456789ab", "base", "deadbeef"])
def test_well_formed_ids_the_scripts_do_not_define_are_refused(
    offline_engine: MigrationEngine, target: str
) -> None:
    with pytest.raises(TargetRevisionError, match="not defined by the migration scripts"):
        offline_engine.migrate(target)


def test_head_heads_full_ids_and_unique_prefixes_resolve(offline_engine: MigrationEngine) -> None:
    catalogue = offline_engine.catalogue
    assert catalogue.resolve_target("head") == catalogue.head
    assert catalogue.resolve_target("heads") == catalogue.head
    assert catalogue.resolve_target(ADD_DISPLAY_NAME) == ADD_DISPLAY_NAME
    assert catalogue.resolve_target(BACKFILL_DISPLAY_NAME[:6]) == BACKFILL_DISPLAY_NAME


def test_short_or_ambiguous_prefixes_are_refused(
    synthetic: Callable[..., tuple[object, list[str]]], make_engine: Callable[..., MigrationEngine]
) -> None:
    folder, ids = synthetic(40)
    catalogue = make_engine(script_location=folder).catalogue
    with pytest.raises(TargetRevisionError, match="not defined"):
        catalogue.resolve_target(ids[0][:2])
    first_chars = [i[0] for i in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)
    with pytest.raises(TargetRevisionError, match="ambiguous"):
        catalogue.resolve_target(shared)  # a one-character prefix several ids share


def test_syntax_check_accepts_plain_ids() -> None:
    assert check_target_syntax(" head ") == "head"
    assert check_target_syntax("a1b2c3d4e5f6") == "a1b2c3d4e5f6"


def test_ids_alembic_accepts_with_dots_work_as_targets(
    make_engine: Callable[..., MigrationEngine], db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a team that names its revisions by version (`alembic revision --rev-id v1.0`)
    scripts = linear_history(tmp_path / "versions", {
        "v1.0": 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))',
        "v1.1": 'op.add_column("notes", sa.Column("body", sa.Text))',
    })
    engine = make_engine(script_location=scripts)
    # THEN each is a target for a migration, a status and a downgrade
    assert [a.revision for a in engine.migrate("v1.0").applied] == ["v1.0"]
    assert engine.status("v1.1").classification.pending == ("v1.1",)
    assert [a.revision for a in engine.migrate("v1.1").applied] == ["v1.1"]
    assert version_rows(db) == ["v1.1"]
    engine.downgrade("v1.0", confirm=True)
    assert version_rows(db) == ["v1.0"]
