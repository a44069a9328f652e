"""The local Lambda Invoke API, driven by unmodified boto3 as a deployed function would be."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from localdev.lambda_invoke import LambdaInvokeServer, LocalFunction, parse_function_name

REPO_ROOT = Path(__file__).resolve().parents[2]

HANDLER_MODULE = textwrap.dedent('''
    import os
    import time

    INVOCATIONS = 0  # module state: a warm container would keep counting


    def echo(event, context):
        global INVOCATIONS
        INVOCATIONS += 1
        print("printed by the handler")
        return {
            "event": event,
            "invocations": INVOCATIONS,
            "function_name": context.function_name,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "request_id": context.aws_request_id,
            "log_group": context.log_group_name,
            "greeting": os.environ.get("GREETING"),
            "leaked": os.environ.get("LEAKED_FROM_THE_CALLER"),
            "runtime_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
            "cwd": os.getcwd(),
        }


    def remaining(event, context):
        first = context.get_remaining_time_in_millis()
        time.sleep(0.3)
        return [first, context.get_remaining_time_in_millis()]


    def fail(event, context):
        raise ValueError("the handler says no")


    def sleep(event, context):
        time.sleep(30)
''')


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "app.py").write_text(HANDLER_MODULE)
    (folder / "broken.py").write_text("import no_such_module_anywhere\n")
    return folder


@pytest.fixture
def server(code_dir: Path) -> Iterator[LambdaInvokeServer]:
    functions = {
        "echo": LocalFunction("app:echo", code_dir, env={"GREETING": "hello"}, memory_mb=256),
        "remaining": LocalFunction("app.remaining", code_dir, timeout_seconds=5),
        "fail": LocalFunction("app:fail", code_dir),
        "sleep": LocalFunction("app:sleep", code_dir, timeout_seconds=1),
        "broken": LocalFunction("broken:handler", code_dir),
    }
    with LambdaInvokeServer(functions, region="eu-west-1") as running:
        yield running


def client(endpoint: str) -> Any:
    return boto3.client(
        "lambda", endpoint_url=endpoint, region_name="eu-west-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 0}),
    )


def invoke(server: LambdaInvokeServer, name: str, payload: object = None,
           **options: str) -> tuple[dict[str, Any], Any]:
    response = client(server.endpoint).invoke(
        FunctionName=name, Payload=json.dumps(payload or {}).encode(), **options
    )
    return response, json.loads(response["Payload"].read())


def test_result_context_and_environment(
    server: LambdaInvokeServer, code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a variable in the caller's environment that a deployed function would not see
    monkeypatch.setenv("LEAKED_FROM_THE_CALLER", "secret")
    # WHEN boto3 invokes the function twice
    response, result = invoke(server, "echo", {"hello": "world"})
    _, again = invoke(server, "echo")
    # THEN the handler's JSON result comes back, run from its code folder with its own env
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert result["event"] == {"hello": "world"}
    assert result["function_name"] == "echo" == result["runtime_name"]
    assert result["arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:echo"
    assert result["memory"] == "256"  # a string, as in Lambda's Python runtime
    assert result["log_group"] == "/aws/lambda/echo"
    assert result["greeting"] == "hello" and result["leaked"] is None
    assert Path(result["cwd"]) == code_dir.resolve()
    # AND each invocation is a cold start: module state does not survive
    assert result["invocations"] == again["invocations"] == 1
    assert result["request_id"] != again["request_id"]
    # AND the code folder is left as it was (bytecode goes elsewhere)
    assert sorted(p.name for p in code_dir.iterdir()) == ["app.py", "broken.py"]


def test_unhandled_error(server: LambdaInvokeServer) -> None:
    response, error = invoke(server, "fail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "the handler says no"
    assert any("app.py" in line and "in fail" in line for line in error["stackTrace"])
    assert not any("lambda_invoke.py" in line for line in error["stackTrace"])


def test_import_error_and_timeout_are_function_errors(server: LambdaInvokeServer) -> None:
    response, error = invoke(server, "broken")
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'broken'" in error["errorMessage"]

    response, error = invoke(server, "sleep")
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in error["errorMessage"]


def test_unknown_function_is_resource_not_found(server: LambdaInvokeServer) -> None:
    lambda_client = client(server.endpoint)
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as raised:
        lambda_client.invoke(FunctionName="nope", Payload=b"{}")
    assert "Function not found: arn:aws:lambda:eu-west-1:123456789012:function:nope" in str(
        raised.value
    )
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="echo", Qualifier="7", Payload=b"{}")


def test_remaining_time_counts_down_from_the_timeout(server: LambdaInvokeServer) -> None:
    _, (first, later) = invoke(server, "remaining")
    assert 0 < first <= 5000
    assert 250 <= first - later < 2000


def test_function_arn_log_tail_and_other_invocation_types(server: LambdaInvokeServer) -> None:
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:echo"
    response, result = invoke(server, arn, {"via": "arn"}, LogType="Tail")
    assert result["event"] == {"via": "arn"}
    log = base64.b64decode(response["LogResult"]).decode()
    assert "START RequestId: " in log and "printed by the handler" in log
    assert "REPORT RequestId: " in log
    lambda_client = client(server.endpoint)
    assert lambda_client.invoke(FunctionName="echo", InvocationType="DryRun")[
        "StatusCode"] == 204
    assert lambda_client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")[
        "StatusCode"] == 202


def test_malformed_payload_is_rejected(server: LambdaInvokeServer) -> None:
    lambda_client = client(server.endpoint)
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException):
        lambda_client.invoke(FunctionName="echo", Payload=b"{not json")


def test_function_names() -> None:
    assert parse_function_name("migrate") == ("migrate", None)
    assert parse_function_name("migrate:$LATEST") == ("migrate", "$LATEST")
    assert parse_function_name("123456789012:function:migrate") == ("migrate", None)
    assert parse_function_name("arn:aws:lambda:us-east-1:1:function:migrate:prod") == (
        "migrate", "prod")
    with pytest.raises(ValueError, match="module:function"):
        LocalFunction("nohandler", Path())


def test_command_line_serves_until_terminated(code_dir: Path) -> None:
    # GIVEN the server started as the local deploy starts it
    process = subprocess.Popen(
        [sys.executable, "-m", "localdev.lambda_invoke", "--name", "echo", "--handler",
         "app:echo", "--code-dir", str(code_dir), "--env", "GREETING=from the cli"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-1"},
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        endpoint = first_line.rsplit(" ", 1)[-1].strip()
        assert endpoint.startswith("http://127.0.0.1:"), first_line
        # WHEN it is invoked, then terminated
        response = client(endpoint).invoke(FunctionName="echo", Payload=b"{}")
        assert json.loads(response["Payload"].read())["greeting"] == "from the cli"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    # THEN it stops cleanly, having logged the invocation as CloudWatch would show it
    assert process.returncode == 0, stderr
    assert "[echo] START RequestId:" in stderr and "[echo] printed by the handler" in stderr
