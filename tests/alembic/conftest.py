"""pytest-alembic's two inputs: the alembic configuration and an engine on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_alembic
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.alembic.support import make_alembic_config


@pytest.fixture
def alembic_config() -> pytest_alembic.Config:
    return pytest_alembic.Config(alembic_config=make_alembic_config())


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
