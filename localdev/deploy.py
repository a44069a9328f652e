"""`make deploy-local`: play CloudFormation's part for the migration custom resource, offline.

    python -m localdev.deploy deploy  [--stage dev] [--cdk-out cdk.out] [--local-dir .local]
    python -m localdev.deploy destroy [--local-dir .local]

What runs for real: the synthesized template's `Custom::DatabaseMigration` properties, the
migration function's code from its asset folder in cdk.out (one process per invocation,
through the local Lambda Invoke API), a PostgreSQL server whose data stays in
`<local-dir>/postgres`, a moto server for Secrets Manager, RDS, EventBridge and Lambda
permissions, and an HTTPS ResponseURL.

Decisions:
- moto keeps state only while it runs, so it is started for each deploy and stopped at the
  end; the secret, the RDS instance record and the crhelper polling rules are created anew
  each run. What must persist lives in files: the database in `<local-dir>/postgres` and
  the last deployed properties in `<local-dir>/deploy-state.json` (Create, Update or "no
  changes" is decided from them). Snapshot ids are therefore only meaningful for the run.
- moto cannot put a stack in UPDATE_ROLLBACK_IN_PROGRESS, and the handler reads its stack's
  status to recognise a rollback. The function's CloudFormation endpoint is therefore a tiny
  DescribeStacks server of ours that answers the status this deploy is in; the rollback is
  played as CloudFormation plays it: an Update back to the old properties while the stack is
  UPDATE_ROLLBACK_IN_PROGRESS (a Delete during ROLLBACK_IN_PROGRESS for a failed Create).
- The bundle is built for the Lambda runtime (CPython 3.12, manylinux wheels), so it runs under
  a Python 3.12 (LAMBDA_PYTHON, else the one this machine is known to have), with the pinned
  boto3 installed beside it as the Lambda runtime provides it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import boto3
from botocore.config import Config

from localdev.https_recorder import HttpsRecorder
from localdev.lambda_invoke import ACCOUNT_ID, LambdaInvokeServer, LocalFunction
from localdev.moto_server import MotoServer
from localdev.postgres import (
    LOCAL_DATABASE,
    LOCAL_PORT,
    LocalPostgres,
    PostgresUnavailable,
    free_port,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
RESOURCE_TYPE = "Custom::DatabaseMigration"
LOGICAL_ID = "DatabaseMigration"
STATE_FILE = "deploy-state.json"
# Enough for the handler's snapshot waits; each poll is one invocation.
MAX_POLLS = 60
POLL_PAUSE_SECONDS = 0.5
KNOWN_PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class DeployError(RuntimeError):
    """The local environment could not be set up (not a failed deploy)."""


# -- what the synthesized app says ---------------------------------------------------------
@dataclass(frozen=True)
class SynthesizedResource:
    stack_name: str
    properties: dict[str, str]  # as CloudFormation sends them: every scalar a string
    handler: str
    code_dir: Path
    environment: dict[str, str]  # the function's plain (non-token) variables
    timeout_seconds: float
    memory_mb: int


def read_synthesized(cdk_out: Path, stage: str) -> SynthesizedResource:
    for template_path in sorted(cdk_out.glob(f"*-{stage}-*.template.json")):
        template = json.loads(template_path.read_text())
        resources: dict[str, Any] = template.get("Resources", {})
        custom = resources.get(LOGICAL_ID)
        if custom is None or custom.get("Type") != RESOURCE_TYPE:
            continue
        function_id = custom["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
        function = resources[function_id]["Properties"]
        asset_hash = str(function["Code"]["S3Key"]).removesuffix(".zip")
        code_dir = cdk_out / f"asset.{asset_hash}"
        if not code_dir.is_dir():
            raise DeployError(f"{code_dir} is missing: synthesize with bundling first")
        variables = function.get("Environment", {}).get("Variables", {})
        return SynthesizedResource(
            stack_name=template_path.name.removesuffix(".template.json"),
            properties={key: _cfn_string(value) for key, value in custom["Properties"].items()
                        if key != "ServiceToken"},
            handler=str(function["Handler"]),
            code_dir=code_dir,
            environment={key: value for key, value in variables.items()
                         if isinstance(value, str)},
            timeout_seconds=float(function.get("Timeout", 3)),
            memory_mb=int(function.get("MemorySize", 128)),
        )
    raise DeployError(f"no {RESOURCE_TYPE} {LOGICAL_ID} in {cdk_out} for stage {stage!r}; "
                      f"run `make synth CDK_STAGE={stage}`")


def _cfn_string(value: object) -> str:
    # CloudFormation hands custom resources every scalar property as a string.
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


# -- the stack status the handler reads ----------------------------------------------------
class StackStatusServer:
    """Answers CloudFormation's DescribeStacks with the status this local deploy is in."""

    def __init__(self, stack_id: str, stack_name: str) -> None:
        self.stack_id, self.stack_name = stack_id, stack_name
        self.status = "CREATE_IN_PROGRESS"
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _status_handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> StackStatusServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def describe_stacks_xml(self) -> bytes:
        return (
            '<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
            "<DescribeStacksResult><Stacks><member>"
            f"<StackId>{escape(self.stack_id)}</StackId>"
            f"<StackName>{escape(self.stack_name)}</StackName>"
            "<CreationTime>2020-01-01T00:00:00Z</CreationTime>"
            f"<StackStatus>{escape(self.status)}</StackStatus>"
            "</member></Stacks></DescribeStacksResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</DescribeStacksResponse>"
        ).encode()


def _status_handler(owner: StackStatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            action = parse_qs(body).get("Action", [""])[0]
            if action == "DescribeStacks":
                status, payload = 200, owner.describe_stacks_xml()
            else:
                status, payload = 400, (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code>"
                    f"<Message>only DescribeStacks is served, not {escape(action)}</Message>"
                    "</Error></ErrorResponse>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the handler's own log says what it read

    return Handler


# -- the deploy ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalEnvironment:
    local_dir: Path
    postgres_port: int = LOCAL_PORT
    python: str = ""  # the Lambda runtime's interpreter; "" finds one
    runtime_dir: Path = REPO_ROOT / ".local" / "lambda-runtime-py312"

    @property
    def state_file(self) -> Path:
        return self.local_dir / STATE_FILE

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(data_dir=self.local_dir / "postgres", port=self.postgres_port)


def deploy(resource: SynthesizedResource, env: LocalEnvironment) -> int:
    """Play the stack's deploy for the custom resource; 0 when it succeeded or had nothing to do."""
    env.local_dir.mkdir(parents=True, exist_ok=True)
    start_database(env)  # started or reused either way: the local database stays usable
    previous = _read_state(env.state_file)
    if previous is not None and previous["properties"] == resource.properties:
        print(f"{resource.stack_name} (local): no changes")
        return 0
    python, runtime_path = lambda_runtime(env)
    stack_id = previous["stack_id"] if previous else (
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{resource.stack_name}/{uuid.uuid4()}")
    log_path = env.local_dir / "deploy-local.log"
    _log_function_output_to(log_path)
    print(f"{resource.stack_name} (local): deploying; the function's log is in {log_path}")
    with _aws(env, resource, stack_id, python=python, runtime_path=runtime_path) as cfn:
        if previous is None:
            return cfn.create(resource.properties)
        return cfn.update(previous["physical_resource_id"], previous["properties"],
                          resource.properties)


def start_database(env: LocalEnvironment) -> None:
    from localdev.postgres import _create_database, _running_as_root  # noqa: PLC0415

    if _running_as_root():
        env.local_dir.chmod(0o755)  # the postgres user must reach its data folder
    server = env.postgres
    server.start()
    _create_database(server, LOCAL_DATABASE)


def destroy(env: LocalEnvironment) -> int:
    env.postgres.stop()
    for part in ("postgres", STATE_FILE, "deploy-local.log", "moto.log"):
        path = env.local_dir / part
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    print(f"stopped the local PostgreSQL server and removed the local deploy in {env.local_dir}")
    return 0


def lambda_runtime(env: LocalEnvironment) -> tuple[str, Path]:
    """A Python 3.12 and a folder with the pinned boto3, as the Lambda runtime has them."""
    python = env.python or os.environ.get("LAMBDA_PYTHON") or (
        str(KNOWN_PYTHON_312) if KNOWN_PYTHON_312.exists() else shutil.which("python3.12") or "")
    if not python:
        raise DeployError("no Python 3.12 found for the Lambda bundle; set LAMBDA_PYTHON")
    pin = next(line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("boto3=="))
    target = env.runtime_dir / pin.replace("==", "-")
    if not (target / "boto3").is_dir():
        from cdk_app.bundling import PIP_OPTIONS  # noqa: PLC0415 - only for the first run

        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *PIP_OPTIONS, "--target", str(target),
                        pin], check=True, timeout=600)
    return python, target


@contextmanager
def _aws(env: LocalEnvironment, resource: SynthesizedResource, stack_id: str, *,
         python: str, runtime_path: Path) -> Iterator[LocalCloudFormation]:
    with MotoServer(port=free_port(), log_path=env.local_dir / "moto.log") as moto, \
            HttpsRecorder() as recorder, \
            StackStatusServer(stack_id, resource.stack_name) as stack:
        aws = _Clients(moto.endpoint)
        secret_arn = _create_records(aws, resource, env)
        function_name = f"{resource.stack_name}-MigrationFunction"
        _register_function(aws, function_name)
        function = LocalFunction(
            resource.handler, resource.code_dir, timeout_seconds=resource.timeout_seconds,
            memory_mb=resource.memory_mb, python=python,
            env={
                **resource.environment,
                "DATABASE_SECRET_ARN": secret_arn,
                "PYTHONPATH": f"{resource.code_dir.resolve()}:{runtime_path}",
                "AWS_ENDPOINT_URL": moto.endpoint,
                "AWS_ENDPOINT_URL_CLOUDFORMATION": stack.endpoint,
                "CFN_RESPONSE_CA_BUNDLE": str(recorder.ca_file),
                **CREDENTIALS,
            },
        )
        with LambdaInvokeServer({function_name: function}, region=REGION) as invoke_api:
            yield LocalCloudFormation(
                resource=resource, stack=stack, recorder=recorder, aws=aws,
                lambda_client=aws.client("lambda", endpoint=invoke_api.endpoint,
                                         read_timeout=resource.timeout_seconds + 60),
                function_name=function_name, state_file=env.state_file,
            )


@dataclass(frozen=True)
class _Clients:
    endpoint: str

    def client(self, name: str, *, endpoint: str | None = None,
               read_timeout: float = 60) -> Any:
        return boto3.client(
            name, endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(read_timeout=read_timeout, retries={"max_attempts": 1}),
        )


def _create_records(aws: _Clients, resource: SynthesizedResource, env: LocalEnvironment) -> str:
    """The secret RDS would attach (local credentials) and the database record to snapshot."""
    secret = aws.client("secretsmanager").create_secret(
        Name=f"{resource.stack_name}-database",
        SecretString=json.dumps({
            "engine": "postgres", "host": "127.0.0.1", "port": env.postgres_port,
            "username": env.postgres.user, "dbname": LOCAL_DATABASE,
            # the local server trusts 127.0.0.1; the driver still wants a password field
            "password": "local-trust-auth",
        }),
    )
    rds = aws.client("rds")
    credentials = {"MasterUsername": env.postgres.user, "MasterUserPassword": "local-only-1"}
    if "DbClusterIdentifier" in resource.properties:
        rds.create_db_cluster(DBClusterIdentifier=resource.properties["DbClusterIdentifier"],
                              Engine="aurora-postgresql", **credentials)
    if "DbInstanceIdentifier" in resource.properties:
        rds.create_db_instance(
            DBInstanceIdentifier=resource.properties["DbInstanceIdentifier"],
            Engine="postgres", DBInstanceClass="db.t4g.micro", AllocatedStorage=20,
            **credentials)
    return str(secret["ARN"])


def _register_function(aws: _Clients, name: str) -> None:
    """A record of the function in moto: crhelper's polling adds an EventBridge permission."""
    role = aws.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    aws.client("lambda").create_function(
        FunctionName=name, Runtime="python3.12", Role=role["Role"]["Arn"],
        Handler="index.handler", Code={"ZipFile": _placeholder_zip()})


def _placeholder_zip() -> bytes:
    import io  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # moto only records it; the invocations go to the asset through the local Invoke API
        archive.writestr("index.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


@dataclass
class LocalCloudFormation:
    """Sends the custom resource's requests as CloudFormation does and prints its events."""

    resource: SynthesizedResource
    stack: StackStatusServer
    recorder: HttpsRecorder
    aws: _Clients
    lambda_client: Any
    function_name: str
    state_file: Path

    def create(self, properties: dict[str, str]) -> int:
        self._event("CREATE_IN_PROGRESS")
        answer = self._request("Create", properties)
        if answer["Status"] == "SUCCESS":
            self._event("CREATE_COMPLETE")
            self._save(str(answer["PhysicalResourceId"]), properties)
            return self._done(answer, "CREATE_COMPLETE")
        self._event("CREATE_FAILED", answer.get("Reason", ""))
        self.stack.status = "ROLLBACK_IN_PROGRESS"
        self._event("DELETE_IN_PROGRESS")
        rollback = self._request("Delete", properties,
                                 physical_id=str(answer.get("PhysicalResourceId") or ""))
        self._event("DELETE_COMPLETE" if rollback["Status"] == "SUCCESS" else "DELETE_FAILED",
                    rollback.get("Reason", ""))
        self._stack_status("ROLLBACK_COMPLETE" if rollback["Status"] == "SUCCESS"
                           else "ROLLBACK_FAILED")
        print("The deploy failed; the database was left as it was before it.")
        return 1

    def update(self, physical_id: str, old: dict[str, str], new: dict[str, str]) -> int:
        self.stack.status = "UPDATE_IN_PROGRESS"
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                print(f"  {key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}")
        self._event("UPDATE_IN_PROGRESS")
        answer = self._request("Update", new, physical_id=physical_id, old=old)
        if answer["Status"] == "SUCCESS":
            self._event("UPDATE_COMPLETE")
            self._save(physical_id, new)
            return self._done(answer, "UPDATE_COMPLETE")
        self._event("UPDATE_FAILED", answer.get("Reason", ""))
        # CloudFormation's rollback: the previous properties again, during the rollback status
        self.stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
        self._stack_status("UPDATE_ROLLBACK_IN_PROGRESS")
        self._event("UPDATE_IN_PROGRESS")
        rollback = self._request("Update", old, physical_id=physical_id, old=new)
        if rollback["Status"] == "SUCCESS":
            self._event("UPDATE_COMPLETE")
            self._stack_status("UPDATE_ROLLBACK_COMPLETE")
        else:
            self._event("UPDATE_FAILED", rollback.get("Reason", ""))
            self._stack_status("UPDATE_ROLLBACK_FAILED")
        print("The deploy failed; the database was left as it was before it.")
        return 1

    def _request(self, request_type: str, properties: dict[str, str], *,
                 physical_id: str = "", old: dict[str, str] | None = None) -> dict[str, Any]:
        """Invoke the function, then fire crhelper's scheduled polls until it answers."""
        before = len(self.recorder.requests)
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}",
            "ResponseURL": self.recorder.url(f"/responses/{uuid.uuid4().hex}"),
            "StackId": self.stack.stack_id,
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": LOGICAL_ID,
            "ResourceType": RESOURCE_TYPE,
            "ResourceProperties": {"ServiceToken": "local", **properties},
        }
        if physical_id:
            event["PhysicalResourceId"] = physical_id
        if old is not None:
            event["OldResourceProperties"] = {"ServiceToken": "local", **old}
        self._invoke(event)
        events = self.aws.client("events")
        for _ in range(MAX_POLLS):
            if len(self.recorder.requests) > before:
                break
            time.sleep(POLL_PAUSE_SECONDS)
            for rule in events.list_rules()["Rules"]:
                for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                    self._invoke(json.loads(target["Input"]))
        if len(self.recorder.requests) == before:
            return {"Status": "FAILED", "Reason": "local deploy: the function never answered"}
        body = self.recorder.requests[before].body
        return dict(body) if isinstance(body, dict) else {"Status": "FAILED",
                                                           "Reason": "unreadable answer"}

    def _invoke(self, event: Mapping[str, Any]) -> None:
        answer = self.lambda_client.invoke(FunctionName=self.function_name,
                                           Payload=json.dumps(event).encode())
        if answer.get("FunctionError"):
            print(f"  the function failed: {answer['Payload'].read().decode()[:500]}",
                  file=sys.stderr)

    def _event(self, status: str, reason: str = "") -> None:
        line = (f"{self.resource.stack_name} | {time.strftime('%H:%M:%S')} | {status:<27} | "
                f"{RESOURCE_TYPE} | {LOGICAL_ID}")
        print(f"{line} {reason}".rstrip(), flush=True)

    def _stack_status(self, status: str) -> None:
        print(f"{self.resource.stack_name} | {time.strftime('%H:%M:%S')} | {status:<27} | "
              f"AWS::CloudFormation::Stack | {self.resource.stack_name}", flush=True)

    def _done(self, answer: Mapping[str, Any], status: str) -> int:
        self._stack_status(status)
        data = answer.get("Data") or {}
        print(f"State: {data.get('State', '?')}")
        print(f"Revision: {data.get('FromRevision', '?')} → {data.get('ToRevision', '?')} "
              f"({data.get('Applied', '0')} applied)")
        print(f"Snapshot: {data.get('SnapshotId') or 'none'}")
        return 0

    def _save(self, physical_id: str, properties: dict[str, str]) -> None:
        self.state_file.write_text(json.dumps({
            "stack_id": self.stack.stack_id, "physical_resource_id": physical_id,
            "properties": properties}, indent=2) + "\n")


def _read_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _log_function_output_to(path: Path) -> None:
    # lambda_invoke logs each invocation's output; the console shows CloudFormation's view.
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    target = logging.getLogger("localdev.lambda_invoke")
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    target.propagate = False


# -- the command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.deploy")
    parser.add_argument("command", choices=("deploy", "destroy"))
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--cdk-out", type=Path, default=REPO_ROOT / "cdk.out")
    parser.add_argument("--local-dir", type=Path, default=REPO_ROOT / ".local")
    parser.add_argument("--postgres-port", type=int, default=LOCAL_PORT)
    args = parser.parse_args(argv)
    env = LocalEnvironment(local_dir=args.local_dir.resolve(), postgres_port=args.postgres_port)
    if args.command == "destroy":
        return destroy(env)
    try:
        return deploy(read_synthesized(args.cdk_out, args.stage), env)
    except (DeployError, PostgresUnavailable) as error:
        print(f"deploy-local: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
