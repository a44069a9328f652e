"""The local AWS API: starts, answers boto3, forgets on reset, and says why it would not start."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import boto3
import pytest

from localdev.moto_server import MotoServer, MotoServerError
from localdev.postgres import free_port
from tests.conftest import Aws


def test_the_aws_fixture_reaches_moto_with_plain_boto3_clients(aws: Aws) -> None:
    # GIVEN the aws fixture's environment WHEN a client is built without any arguments
    boto3.client("sns").create_topic(Name="alarms")
    # THEN it talked to moto, which the helper's client sees too
    topics = aws.client("sns").list_topics()["Topics"]
    assert [t["TopicArn"].rsplit(":", 1)[-1] for t in topics] == ["alarms"]


def test_reset_forgets_everything(aws: Aws, moto_server: MotoServer) -> None:
    aws.client("sns").create_topic(Name="alarms")
    moto_server.reset()
    assert aws.client("sns").list_topics()["Topics"] == []


def test_each_test_starts_from_a_clean_state(aws: Aws) -> None:
    # the two tests above created topics; the fixture reset them
    assert aws.client("sns").list_topics()["Topics"] == []


def test_start_stop_and_context_manager(tmp_path: Path) -> None:
    server = MotoServer(port=free_port(), log_path=tmp_path / "moto.log")
    with server:
        assert server.endpoint == f"http://127.0.0.1:{server.port}"
        server.start()  # idempotent
        server.reset()
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    assert (tmp_path / "moto.log").stat().st_size > 0


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    # GIVEN the port is taken by a socket that accepts connections but never answers
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MotoServer(port=taken.getsockname()[1], log_path=tmp_path / "moto.log",
                            startup_timeout_seconds=10)
        started = time.monotonic()
        # WHEN moto is started there THEN it fails fast with moto's own words
        with pytest.raises(MotoServerError, match="Address already in use"):
            server.start()
    assert time.monotonic() - started < 10
