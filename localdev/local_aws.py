"""The local AWS that outlives a deploy: one endpoint on 127.0.0.1 for the functions and the CLI.

    python -m localdev.local_aws serve --local-dir .local [--port 54330]

`make deploy-local` starts it in the background (`ensure_running`) and leaves it up, so that
after a deploy the admin CLI reaches the deployed function exactly as it would in AWS:

    export AWS_ENDPOINT_URL=http://127.0.0.1:54330
    python scripts/remote_admin.py --stack-name DbMigrations-dev-Application status

`make destroy-local` stops it (`stop`).

Each request is routed by the service named in its SigV4 credential scope:
- Lambda's Invoke → the functions registered in `<local-dir>/aws/functions.json`, each
  invocation a fresh process (localdev.lambda_invoke);
- CloudFormation's DescribeStacks → the stacks in `<local-dir>/aws/stacks.json` (status and
  outputs);
- everything else (Secrets Manager, RDS, EventBridge, IAM, Lambda's other operations) →
  a moto server this process runs.

Decisions:
- The deploy tells this server what is deployed through those two files, read on every
  request, rather than through an API of ours: a deploy, a crash or a restart cannot leave
  the two sides disagreeing, and the files say what the local stack holds.
- moto cannot hold a CloudFormation stack in UPDATE_ROLLBACK_IN_PROGRESS, which is how the
  function recognises a rollback; the stacks file can, so DescribeStacks is ours.
- moto keeps its records in memory: after a restart of this server (a reboot) they are gone.
  Every deploy therefore re-creates what it needs (`ensure` semantics), so a deploy after a
  restart works, and records the new secret ARN in the function's environment.
- The server runs in its own session, so `stop` ends it together with moto and any running
  invocation, whatever state they are in.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from localdev.lambda_invoke import (
    AppHTTPServer,
    LambdaInvokeServer,
    LocalFunction,
    is_invoke_path,
)
from localdev.moto_server import MotoServer
from localdev.postgres import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 54330  # next to the local PostgreSQL's 54329
HEALTH_PATH = "/_localdev/health"
STARTUP_TIMEOUT_SECONDS = 40.0
STOP_TIMEOUT_SECONDS = 10.0
# Hop-by-hop headers are the proxy's own business (RFC 9110, section 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}

logger = logging.getLogger(__name__)


class LocalAwsError(RuntimeError):
    """The local AWS could not be started or reached."""


# -- what is deployed: files the deploy writes and the server reads --------------------------
@dataclass(frozen=True)
class FunctionRecord:
    """A deployed function: LocalFunction's fields as JSON."""

    name: str
    handler: str
    code_dir: str
    env: dict[str, str]
    timeout_seconds: float
    memory_mb: int
    python: str

    def local_function(self) -> LocalFunction:
        return LocalFunction(handler=self.handler, code_dir=Path(self.code_dir), env=self.env,
                             timeout_seconds=self.timeout_seconds, memory_mb=self.memory_mb,
                             python=self.python)


@dataclass(frozen=True)
class StackRecord:
    name: str
    stack_id: str
    status: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalAwsFiles:
    """The server's folder, `<local-dir>/aws`."""

    folder: Path

    @classmethod
    def under(cls, local_dir: Path) -> LocalAwsFiles:
        return cls(local_dir / "aws")

    @property
    def server_file(self) -> Path:  # pid and endpoint of the running server
        return self.folder / "server.json"

    @property
    def functions_file(self) -> Path:
        return self.folder / "functions.json"

    @property
    def stacks_file(self) -> Path:
        return self.folder / "stacks.json"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"

    @property
    def moto_log(self) -> Path:
        return self.folder / "moto.log"

    @property
    def function_log(self) -> Path:  # every invocation's output, as CloudWatch Logs would hold
        return self.folder / "lambda.log"

    def functions(self) -> dict[str, FunctionRecord]:
        raw = _read_json(self.functions_file)
        return {name: FunctionRecord(**value) for name, value in raw.items()}

    def put_function(self, record: FunctionRecord) -> None:
        raw = _read_json(self.functions_file)
        raw[record.name] = asdict(record)
        _write_json(self.functions_file, raw)

    def remove_function(self, name: str) -> None:
        raw = _read_json(self.functions_file)
        raw.pop(name, None)
        _write_json(self.functions_file, raw)

    def stacks(self) -> dict[str, StackRecord]:
        raw = _read_json(self.stacks_file)
        return {name: StackRecord(**value) for name, value in raw.items()}

    def put_stack(self, record: StackRecord) -> None:
        raw = _read_json(self.stacks_file)
        raw[record.name] = asdict(record)
        _write_json(self.stacks_file, raw)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _write_json(path: Path, value: object) -> None:
    # Written whole then renamed: the server may read the file at any moment.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)


# -- the server ------------------------------------------------------------------------------
class LocalAwsServer:
    """The routing HTTP server, moto behind it, and the Invoke API for the functions file."""

    def __init__(self, files: LocalAwsFiles, port: int) -> None:
        self.files = files
        self.moto = MotoServer(port=free_port(), log_path=files.moto_log)
        self.lambdas = LambdaInvokeServer({})
        self._http = AppHTTPServer(("127.0.0.1", port), _RoutingHandler, self)
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def serve_until_stopped(self) -> None:
        self.moto.start()
        try:
            _write_json(self.files.server_file, {"pid": os.getpid(), "endpoint": self.endpoint})
            self._http.serve_forever(poll_interval=0.1)
        finally:
            self._http.server_close()
            self.lambdas.stop()
            self.moto.stop()

    def shutdown(self) -> None:
        # from another thread: serve_forever returns once the loop notices
        threading.Thread(target=self._http.shutdown, daemon=True).start()

    def invoke(self, raw_path: str, body: bytes, headers: Any) -> tuple[int, dict[str, str],
                                                                         bytes]:
        with self._lock:  # the deploy may have registered new code since the last request
            self.lambdas.functions = {name: record.local_function()
                                      for name, record in self.files.functions().items()}
        answer = self.lambdas.answer_post(
            raw_path, body, invocation_type=headers.get("X-Amz-Invocation-Type"),
            log_type=headers.get("X-Amz-Log-Type"))
        return answer.status, dict(answer.headers), answer.body

    def cloudformation(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = parse_qs(body.decode())
        action = form.get("Action", [""])[0]
        if action != "DescribeStacks":
            return _query_error("InvalidAction", f"{action or 'This action'} is not emulated "
                                                 "locally; only DescribeStacks is")
        wanted = form.get("StackName", [""])[0]
        stacks = [stack for stack in self.files.stacks().values()
                  if not wanted or wanted in (stack.name, stack.stack_id)]
        if wanted and not stacks:
            return _query_error("ValidationError", f"Stack with id {wanted} does not exist")
        members = "".join(_stack_xml(stack) for stack in stacks)
        payload = (
            '<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
            f"<DescribeStacksResult><Stacks>{members}</Stacks></DescribeStacksResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</DescribeStacksResponse>").encode()
        return 200, {"Content-Type": "text/xml"}, payload

    def forward_to_moto(self, method: str, raw_path: str, headers: Any,
                        body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.moto.port, timeout=120)
        try:
            connection.request(method, raw_path, body=body or None, headers={
                key: value for key, value in headers.items() if key.lower() not in HOP_BY_HOP})
            answer = connection.getresponse()
            payload = answer.read()
            kept = {key: value for key, value in answer.getheaders()
                    if key.lower() not in HOP_BY_HOP}
            return answer.status, kept, payload
        finally:
            connection.close()


def _stack_xml(stack: StackRecord) -> str:
    outputs = "".join(
        f"<member><OutputKey>{escape(key)}</OutputKey><OutputValue>{escape(value)}"
        "</OutputValue></member>" for key, value in sorted(stack.outputs.items()))
    return (f"<member><StackId>{escape(stack.stack_id)}</StackId>"
            f"<StackName>{escape(stack.name)}</StackName>"
            "<CreationTime>2020-01-01T00:00:00Z</CreationTime>"
            f"<StackStatus>{escape(stack.status)}</StackStatus>"
            f"<Outputs>{outputs}</Outputs></member>")


def _query_error(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    payload = ("<ErrorResponse><Error><Type>Sender</Type>"
               f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
               f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
    return 400, {"Content-Type": "text/xml"}, payload


def signing_service(authorization: str | None) -> str:
    """The service of a SigV4 Authorization header's scope (…/REGION/SERVICE/aws4_request)."""
    for part in (authorization or "").replace(",", " ").split():
        if part.startswith("Credential="):
            scope = part.removeprefix("Credential=").split("/")
            return scope[3] if len(scope) >= 5 else ""
    return ""


class _RoutingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: AppHTTPServer[LocalAwsServer]

    def do_GET(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            self._send(200, {"Content-Type": "application/json"},
                       json.dumps({"pid": os.getpid()}).encode())
            return
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def _route(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        service = signing_service(self.headers.get("Authorization"))
        app = self.server.app
        try:
            if service == "lambda" and method == "POST" and \
                    is_invoke_path(urlsplit(self.path).path):
                status, headers, payload = app.invoke(self.path, body, self.headers)
            elif service == "cloudformation":
                status, headers, payload = app.cloudformation(body)
            else:
                status, headers, payload = app.forward_to_moto(method, self.path, self.headers,
                                                               body)
        except Exception as error:  # one bad request must not end the server
            logger.exception("%s %s failed", method, self.path)
            status, headers, payload = 500, {"Content-Type": "text/plain"}, str(error).encode()
        self._send(status, headers, payload, head=method == "HEAD")

    def _send(self, status: int, headers: Mapping[str, str], payload: bytes, *,
              head: bool = False) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


# -- starting and stopping it from the deploy --------------------------------------------------
@dataclass(frozen=True)
class RunningServer:
    pid: int
    endpoint: str


def running(files: LocalAwsFiles) -> RunningServer | None:
    """The server recorded in the folder, if it is alive and answering."""
    recorded = _read_json(files.server_file)
    if not recorded:
        return None
    server = RunningServer(pid=int(recorded["pid"]), endpoint=str(recorded["endpoint"]))
    return server if _alive(server.pid) and _answers(server.endpoint) else None


def ensure_running(files: LocalAwsFiles, port: int = DEFAULT_PORT) -> RunningServer:
    """The running server, or a new one started in the background on `port`."""
    server = running(files)
    if server is not None:
        return server
    files.server_file.unlink(missing_ok=True)
    files.folder.mkdir(parents=True, exist_ok=True)
    # The server and the functions it starts see the local endpoint only, never an
    # AWS_ENDPOINT_URL* or profile of the caller's that would send them elsewhere.
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("AWS_", "BOTO"))}
    with files.server_log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "localdev.local_aws", "serve", "--folder", str(files.folder),
             "--port", str(port)],
            cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalAwsError(
                f"the local AWS endpoint did not start on port {port}:\n"
                f"{_tail(files.server_log).strip()}\n"
                f"If another checkout's local deploy holds the port, run `make destroy-local` "
                f"there, or choose another: `make deploy-local LOCAL_AWS_PORT=...`")
        server = running(files)
        if server is not None:
            return server
        time.sleep(0.1)
    stop(files)
    _signal_group(process.pid, signal.SIGKILL)  # also when it never recorded itself
    process.wait()
    raise LocalAwsError(f"the local AWS endpoint did not answer within "
                        f"{STARTUP_TIMEOUT_SECONDS:.0f} s:\n{_tail(files.server_log)}\n"
                        f"It was stopped; run the deploy again, and if it keeps failing read "
                        f"{files.server_log} and {files.moto_log}")


def stop(files: LocalAwsFiles) -> bool:
    """Stop the recorded server with moto and its invocations; True if one was running."""
    recorded = _read_json(files.server_file)
    files.server_file.unlink(missing_ok=True)
    if not recorded or not _alive(int(recorded["pid"])):
        return False
    pid = int(recorded["pid"])
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)  # whatever is left of its session
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours (a test that started it) is not alive
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}{HEALTH_PATH}", timeout=2):  # noqa: S310
            return True
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@contextlib.contextmanager
def _stop_on_sigterm(server: LocalAwsServer) -> Iterator[None]:
    def stop_serving(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    previous = signal.signal(signal.SIGTERM, stop_serving)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.local_aws")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--folder", type=Path, required=True,
                        help="where functions.json, stacks.json and the logs live")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    files = LocalAwsFiles(args.folder.resolve())
    files.folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    function_log = logging.FileHandler(files.function_log)
    function_log.setFormatter(logging.Formatter("%(message)s"))
    invocations = logging.getLogger("localdev.lambda_invoke")
    invocations.addHandler(function_log)
    invocations.propagate = False
    try:
        server = LocalAwsServer(files, args.port)
    except OSError as error:
        print(f"cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 2
    print(f"local AWS endpoint {server.endpoint} (moto at {server.moto.endpoint})", flush=True)
    with _stop_on_sigterm(server):
        server.serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
