"""Fixtures for engine tests: settings and engines on a fresh real database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from localdev.history_env import NAMING_CONVENTION as TEAM_NAMING_CONVENTION
from migration_resource.dsn import normalize_url
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
from sample_app.models import NAMING_CONVENTION as SAMPLE_NAMING_CONVENTION
from tests.migration_resource.support import SAMPLE_SCRIPTS

EngineFactory = Callable[..., MigrationEngine]


@pytest.fixture
def make_engine(database_url: str) -> Iterator[EngineFactory]:
    """Build engines on the test database; keyword arguments override EngineSettings.

    The naming convention is a setting (the engine does not run a folder's env.py): the
    sample application's for its scripts, else the Flask convention the team-style test
    histories rely on (`localdev.history_env`), unless `naming_convention` is given.
    """
    engines: list[MigrationEngine] = []

    def build(**overrides: object) -> MigrationEngine:
        values: dict[str, object] = {
            "database_url": normalize_url(database_url),
            "script_location": SAMPLE_SCRIPTS,
            "lock_wait_seconds": 5,
        }
        values.update(overrides)
        values.setdefault("naming_convention", SAMPLE_NAMING_CONVENTION
                          if values["script_location"] == SAMPLE_SCRIPTS
                          else TEAM_NAMING_CONVENTION)
        engine = MigrationEngine(EngineSettings(**values))  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: EngineFactory) -> MigrationEngine:
    return make_engine()
