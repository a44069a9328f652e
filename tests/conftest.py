"""Shared fixtures: one real PostgreSQL server for the whole run, a fresh database per test.

The server is started here (and stopped at the end) unless DATABASE_URL points at one
already; tests never fall back to SQLite or a mock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from localdev.postgres import LocalPostgres, free_port
from localdev.synthetic_history import write_history

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on a running server (DATABASE_URL or our own)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield sa.make_url(external).set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False
        )
        return
    base = Path(tempfile.mkdtemp(prefix="pgtest-"))
    base.chmod(0o755)  # the postgres user must reach the data folder when we are root
    server = LocalPostgres(data_dir=base / "data", port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def synthetic(tmp_path: Path) -> Callable[..., tuple[Path, list[str]]]:
    """Write a synthetic history; returns its folder and revision ids (base first)."""
    counter = iter(range(1000))

    def write(count: int, **options: object) -> tuple[Path, list[str]]:
        folder = tmp_path / f"history_{next(counter)}"
        return folder, write_history(folder, count, **options)  # type: ignore[arg-type]

    return write


@pytest.fixture
def db(database_url: str) -> Iterator[sa.Engine]:
    """A plain SQLAlchemy engine on the test database, to look at it from outside."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()
