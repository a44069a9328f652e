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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from localdev.https_recorder import HttpsRecorder
from localdev.moto_server import MotoServer
from localdev.postgres import LocalPostgres, free_port
from localdev.synthetic_history import write_history
from migration_resource.dsn import DRIVER

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on a running server (DATABASE_URL or our own)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield sa.make_url(external).set(drivername=DRIVER).render_as_string(
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


AWS_TEST_REGION = "us-east-1"


@dataclass(frozen=True)
class Aws:
    """The moto server a test talks to; ``client(name)`` builds boto3 clients for it."""

    endpoint: str
    region: str = AWS_TEST_REGION

    def client(self, name: str) -> Any:
        return boto3.client(name, endpoint_url=self.endpoint, region_name=self.region)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server (a local AWS API) for the whole run."""
    server = MotoServer(port=free_port(), log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """A clean moto state, and an environment in which plain boto3 clients reach it."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    # botocore reads AWS_DEFAULT_REGION; the Lambda runtime (and crhelper) AWS_REGION.
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return Aws(endpoint=moto_server.endpoint)


@pytest.fixture
def response_recorder() -> Iterator[HttpsRecorder]:
    """An HTTPS server standing in for CloudFormation's pre-signed ResponseURL."""
    with HttpsRecorder() as recorder:
        yield recorder
