"""The local AWS endpoint: one port routing Invoke, DescribeStacks and the rest (moto).

The server runs as the background process `make deploy-local` starts; the tests reach it with
plain boto3 clients, as the admin CLI does.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localdev.local_aws import (
    FunctionRecord,
    LocalAwsError,
    LocalAwsFiles,
    RunningServer,
    StackRecord,
    ensure_running,
    signing_service,
    stop,
)
from localdev.postgres import free_port


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsFiles]:
    files = LocalAwsFiles.under(tmp_path_factory.mktemp("local-aws"))
    try:
        yield files
    finally:
        stop(files)


@pytest.fixture(scope="module")
def server(files: LocalAwsFiles) -> RunningServer:
    return ensure_running(files, free_port())


def client(server: RunningServer, service: str) -> Any:
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_the_service_comes_from_the_signature_scope() -> None:
    header = ("AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/cloudformation/"
              "aws4_request, SignedHeaders=host;x-amz-date, Signature=abc")
    assert signing_service(header) == "cloudformation"
    assert signing_service(None) == ""
    assert signing_service("Bearer token") == ""


def test_other_services_reach_moto(server: RunningServer) -> None:
    secrets = client(server, "secretsmanager")
    secrets.create_secret(Name="routed", SecretString='{"password": "x"}')
    assert secrets.get_secret_value(SecretId="routed")["SecretString"] == '{"password": "x"}'
    with pytest.raises(ClientError) as missing:
        secrets.get_secret_value(SecretId="absent")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_describe_stacks_answers_from_the_stacks_file(files: LocalAwsFiles,
                                                      server: RunningServer) -> None:
    cloudformation = client(server, "cloudformation")
    files.put_stack(StackRecord("App", "arn:aws:cloudformation:us-east-1:1:stack/App/1",
                                "UPDATE_ROLLBACK_IN_PROGRESS", {"MigrationFunctionName": "fn"}))
    by_name = cloudformation.describe_stacks(StackName="App")["Stacks"][0]
    assert by_name["StackStatus"] == "UPDATE_ROLLBACK_IN_PROGRESS"
    assert by_name["Outputs"] == [{"OutputKey": "MigrationFunctionName", "OutputValue": "fn"}]
    # the function asks by the stack's id; a status written later is read at once
    files.put_stack(StackRecord("App", "arn:aws:cloudformation:us-east-1:1:stack/App/1",
                                "UPDATE_ROLLBACK_COMPLETE", {}))
    by_id = cloudformation.describe_stacks(
        StackName="arn:aws:cloudformation:us-east-1:1:stack/App/1")["Stacks"][0]
    assert by_id["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    with pytest.raises(ClientError) as unknown:
        cloudformation.describe_stacks(StackName="Other")
    assert unknown.value.response["Error"]["Code"] == "ValidationError"
    assert "Stack with id Other does not exist" in unknown.value.response["Error"]["Message"]


def test_invoke_runs_the_function_registered_last(files: LocalAwsFiles, server: RunningServer,
                                                  tmp_path: Path) -> None:
    for version in ("one", "two"):
        code = tmp_path / version
        code.mkdir()
        (code / "app.py").write_text(textwrap.dedent(f"""
            import os
            def handler(event, context):
                return {{"version": "{version}", "echo": event,
                         "endpoint": os.environ["AWS_ENDPOINT_URL"]}}
        """))
    lambdas = client(server, "lambda")
    for version in ("one", "two"):
        # WHEN a deploy registers new code
        files.put_function(FunctionRecord(
            name="fn", handler="app.handler", code_dir=str(tmp_path / version),
            env={"AWS_ENDPOINT_URL": server.endpoint}, timeout_seconds=30, memory_mb=128,
            python=sys.executable))
        # THEN the next invocation runs it
        answer = lambdas.invoke(FunctionName="fn", Payload=b'{"n": 1}')
        assert json.loads(answer["Payload"].read()) == {
            "version": version, "echo": {"n": 1}, "endpoint": server.endpoint}
    with pytest.raises(ClientError) as absent:
        lambdas.invoke(FunctionName="absent", Payload=b"{}")
    assert absent.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "START RequestId" in files.function_log.read_text()


def test_a_running_server_is_reused_and_stop_ends_it_with_moto(tmp_path: Path) -> None:
    files = LocalAwsFiles.under(tmp_path)
    started = ensure_running(files, free_port())
    try:
        assert ensure_running(files, free_port()) == started  # reused, not a second one
        moto_port = _moto_port(files)
    finally:
        assert stop(files) is True
    assert not _alive(started.pid)
    assert not files.server_file.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", moto_port), timeout=1).close()
    assert stop(files) is False  # nothing left to stop


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(LocalAwsError, match="did not start") as refused:
            ensure_running(LocalAwsFiles.under(tmp_path), taken.getsockname()[1])
    # the reason from the server's log, and what to do about it
    assert "Address already in use" in str(refused.value)
    assert "LOCAL_AWS_PORT=" in str(refused.value)


def _moto_port(files: LocalAwsFiles) -> int:
    line = next(line for line in files.server_log.read_text().splitlines()
                if "moto at" in line)
    return int(line.rsplit(":", 1)[1].rstrip(")"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
