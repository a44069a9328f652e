"""A local AWS Lambda Invoke API, so unmodified boto3 can invoke handlers on this machine.

    python -m localdev.lambda_invoke --name NAME --handler MODULE:FUNCTION --code-dir DIR
        [--env KEY=VALUE ...] [--timeout SECONDS] [--memory MB] [--port PORT] [--python EXE]

serves ``POST /2015-03-31/functions/{name}/invocations`` on 127.0.0.1 until interrupted. Point
boto3 at it with ``endpoint_url=`` or ``AWS_ENDPOINT_URL_LAMBDA`` (``AWS_ENDPOINT_URL`` can
keep pointing at another emulator for the other services).

Decisions:
- Every invocation runs in a new Python process started in the function's code folder, with
  only that folder on the import path: a cold start each time. It is slower than a warm
  Lambda, but nothing (module caches, a fetched secret, a half-configured logger) leaks from
  one invocation to the next, so code that works here does not depend on a warm container.
  Concurrent invocations run side by side, as Lambda scales out.
- The process's environment is built, not inherited: what the Lambda runtime sets, the
  caller's AWS credentials and ``AWS_ENDPOINT_URL*`` (what the execution role and the
  emulator provide), then the function's own variables. A variable the function needs but
  its configuration forgot fails here as it would in AWS.
- Bytecode is cached in a folder of the server's (``PYTHONPYCACHEPREFIX``): the code folder,
  e.g. a synthesized asset in cdk.out, stays untouched, as Lambda's read-only /var/task does.
- The timeout clock starts with the process, imports included (Lambda gives a cold start's
  init phase its own budget); ``get_remaining_time_in_millis()`` agrees with when the
  process is killed. Memory is reported, not enforced.
- Answers follow the service: 200 with the handler's JSON result, or with
  ``X-Amz-Function-Error: Unhandled`` and ``{errorMessage, errorType, stackTrace}``;
  404 ``ResourceNotFoundException`` for unknown functions; ``Event`` (202) and ``DryRun``
  (204) invocation types; ``LogType=Tail`` returns the last 4 KB of the log. Versions,
  aliases and ClientContext are not emulated (only ``$LATEST``).

This file imports only the standard library: it is also the runtime that runs inside each
invocation's process (``--run-invocation``), possibly under another interpreter (``--python``,
e.g. the Python 3.12 a bundled asset was built for).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account, so ARNs agree with the emulator's
DEFAULT_REGION = "us-east-1"
API_PREFIX = "/2015-03-31/functions/"
API_SUFFIX = "/invocations"
LOG_TAIL_BYTES = 4096
RUNNER_FLAG = "--run-invocation"
RUNNER_PATH = Path(__file__).resolve()
# What the execution role and the local emulator provide to a deployed function.
FORWARDED_PREFIXES = ("AWS_ENDPOINT_URL",)
FORWARDED_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class LocalFunction:
    """One function: its handler, the folder it runs from, its environment and limits.

    Defaults are Lambda's (3 s, 128 MB). `handler` is ``module:function``; Lambda's own
    ``module.function`` spelling is accepted too, so a template's value can be passed as is.
    `python` runs the handler; 3.11 or newer, as the runtime starts it with ``-P`` (no
    script folder on the import path).
    """

    handler: str
    code_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 3.0
    memory_mb: int = 128
    python: str = sys.executable

    def __post_init__(self) -> None:
        split_handler(self.handler)  # a malformed name fails at registration, not per call
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds}")


def split_handler(handler: str) -> tuple[str, str]:
    module, separator, function = handler.partition(":")
    if not separator:
        module, _, function = handler.rpartition(".")
    if not module or not function:
        raise ValueError(f"Handler {handler!r} is not 'module:function' (or 'module.function')")
    return module, function


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Execution:
    payload: bytes
    failed: bool
    log: str


class LambdaInvokeServer:
    """An HTTP server on 127.0.0.1 answering Lambda's Invoke for the registered functions."""

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        *,
        port: int = 0,
        region: str | None = None,
    ) -> None:
        self.functions = dict(functions)
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get(
            "AWS_REGION") or DEFAULT_REGION
        self._port = port
        self._http: AppHTTPServer[LambdaInvokeServer] | None = None
        self._thread: threading.Thread | None = None
        self._cache_dir: Path | None = None
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        if self._http is None:
            raise RuntimeError("The server is not started")
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> LambdaInvokeServer:
        if self._http is not None:
            return self
        self._http = AppHTTPServer(("127.0.0.1", self._port), _RequestHandler, self)
        # A short poll interval: stop() waits for the loop to notice, up to one interval.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
            name="lambda-invoke", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (when started), kill running invocations, drop the bytecode cache."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._lock:
            for process in self._running:
                _kill_group(process)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
        self._http, self._thread, self._cache_dir = None, None, None

    def __enter__(self) -> LambdaInvokeServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    # -- the Invoke operation --------------------------------------------------------------
    def answer_post(self, raw_path: str, body: bytes, *, invocation_type: str | None,
                    log_type: str | None) -> _Response:
        """The answer to one POST: Invoke on its path, 404 elsewhere.

        Public so that a server routing several AWS services can hand Lambda's requests here.
        """
        url = urlsplit(raw_path)
        if not is_invoke_path(url.path):
            return _error(404, "UnknownOperationException",
                          f"No operation at POST {url.path}; only Invoke is served")
        qualifier = parse_qs(url.query).get("Qualifier", [None])[0]
        return self.invoke(
            unquote(url.path[len(API_PREFIX):-len(API_SUFFIX)]), body, qualifier=qualifier,
            invocation_type=invocation_type or "RequestResponse", log_type=log_type or "None",
        )

    def invoke(
        self,
        function_name: str,
        payload: bytes,
        *,
        qualifier: str | None = None,
        invocation_type: str = "RequestResponse",
        log_type: str = "None",
    ) -> _Response:
        name, named_qualifier = parse_function_name(function_name)
        qualifier = qualifier or named_qualifier
        function = self.functions.get(name)
        if function is None or qualifier not in (None, "$LATEST"):
            shown = self.arn(name) + (f":{qualifier}" if qualifier else "")
            return _error(404, "ResourceNotFoundException", f"Function not found: {shown}")
        try:
            event = json.loads(payload) if payload.strip() else {}
        except ValueError as error:
            return _error(400, "InvalidRequestContentException",
                          f"Could not parse request body into json: {error}")
        if invocation_type == "DryRun":
            return _Response(204)
        if invocation_type == "Event":
            threading.Thread(target=self._execute, args=(name, function, event),
                             daemon=True).start()
            return _Response(202)
        if invocation_type != "RequestResponse":
            return _error(400, "InvalidParameterValueException",
                          f"Unsupported InvocationType {invocation_type!r}")
        execution = self._execute(name, function, event)
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST"}
        if execution.failed:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if log_type == "Tail":
            tail = execution.log.encode("utf-8")[-LOG_TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode("ascii")
        return _Response(200, execution.payload, headers)

    def _execute(self, name: str, function: LocalFunction, event: object) -> _Execution:
        request_id = str(uuid.uuid4())
        started = time.time()
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime(started))}/[$LATEST]{uuid.uuid4().hex}"
        context = {
            "function_name": name,
            "function_version": "$LATEST",
            "invoked_function_arn": self.arn(name),
            "memory_limit_in_mb": str(function.memory_mb),  # a string, as Lambda's runtime
            "aws_request_id": request_id,
            "log_group_name": f"/aws/lambda/{name}",
            "log_stream_name": stream,
            "deadline_ms": int((started + function.timeout_seconds) * 1000),
        }
        request = json.dumps({"handler": function.handler, "event": event, "context": context})
        log: list[str] = []
        self._log(name, log, f"START RequestId: {request_id} Version: $LATEST")
        answer = self._run(name, function, request=request.encode("utf-8"),
                           request_id=request_id, stream=stream, log=log)
        error = answer.get("error")
        if isinstance(error, dict):
            payload = json.dumps(error).encode("utf-8")
            self._log(name, log, f"{error['errorType']}: {error['errorMessage']}")
        else:
            payload = str(answer["result"]).encode("utf-8")
        seconds = time.time() - started
        self._log(name, log, f"END RequestId: {request_id}")
        self._log(name, log, f"REPORT RequestId: {request_id}\tDuration: {seconds * 1000:.2f} ms"
                             f"\tMemory Size: {function.memory_mb} MB")
        return _Execution(payload=payload, failed=error is not None, log="\n".join(log) + "\n")

    def _run(self, name: str, function: LocalFunction, *, request: bytes, request_id: str,
             stream: str, log: list[str]) -> dict[str, Any]:
        """One runtime process: its answer, {"result": JSON text} or {"error": payload}."""
        try:
            process = subprocess.Popen(
                [function.python, "-P", str(RUNNER_PATH), RUNNER_FLAG],
                cwd=function.code_dir, env=self._environment(name, function, stream),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: the sandbox, killed whole
            )
        except OSError as error:  # no such interpreter or code folder: the function's fault
            return {"error": _error_payload(
                "Runtime.InvalidEntrypoint",
                f"RequestId: {request_id} Error: cannot start the runtime: {error}")}
        with self._lock:
            self._running.add(process)
        assert process.stdin and process.stdout and process.stderr
        result: list[bytes] = []
        readers = [
            threading.Thread(target=self._pump_log, args=(name, process.stderr, log),
                             daemon=True),
            threading.Thread(target=_read_all, args=(process.stdout, result), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            process.stdin.write(request)
            process.stdin.close()
        except BrokenPipeError:
            pass  # the runtime died at start; its exit status tells why
        try:
            process.wait(timeout=function.timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.wait()
            return {"error": _error_payload(
                "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after "
                f"{function.timeout_seconds:.2f} seconds")}
        finally:
            # The invocation's sandbox ends with it: children it left would hold the pipes.
            _kill_group(process)
            with self._lock:
                self._running.discard(process)
            for reader in readers:
                reader.join()
        answer = _runtime_answer(b"".join(result))
        if answer is None:
            status = (f"signal: {signal.Signals(-process.returncode).name}"
                      if process.returncode < 0 else f"exit status {process.returncode}")
            return {"error": _error_payload(
                "Runtime.ExitError",
                f"RequestId: {request_id} Error: Runtime exited with error: {status}")}
        return answer

    def _environment(self, name: str, function: LocalFunction, stream: str) -> dict[str, str]:
        code_dir = str(Path(function.code_dir).resolve())
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "PYTHONPATH": code_dir,
            "PYTHONUNBUFFERED": "1",  # Lambda shows print() at once
            "PYTHONPYCACHEPREFIX": str(self._bytecode_cache()),
            "LAMBDA_TASK_ROOT": code_dir,
            "_HANDLER": function.handler,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        }
        environment.update(
            (key, value) for key, value in os.environ.items()
            if key in FORWARDED_NAMES or key.startswith(FORWARDED_PREFIXES)
        )
        environment.update(function.env)
        return environment

    def _bytecode_cache(self) -> Path:
        with self._lock:
            if self._cache_dir is None:
                self._cache_dir = Path(tempfile.mkdtemp(prefix="lambda-pycache-"))
            return self._cache_dir

    def _pump_log(self, name: str, stream: IO[bytes], log: list[str]) -> None:
        for raw in stream:
            self._log(name, log, raw.decode("utf-8", errors="replace").rstrip("\n"))

    @staticmethod
    def _log(name: str, log: list[str], line: str) -> None:
        log.append(line)
        logger.info("[%s] %s", name, line)


def is_invoke_path(path: str) -> bool:
    return path.startswith(API_PREFIX) and path.endswith(API_SUFFIX)


def parse_function_name(function_name: str) -> tuple[str, str | None]:
    """A name, ``name:qualifier``, a partial ARN or an ARN → (name, qualifier)."""
    parts = function_name.split(":")
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], or ACCOUNT:function:NAME
    rest = parts[parts.index("function") + 1:] if "function" in parts else parts
    return rest[0] if rest else "", rest[1] if len(rest) > 1 else None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)


def _read_all(stream: IO[bytes], into: list[bytes]) -> None:
    into.append(stream.read())


def _error(status: int, code: str, message: str) -> _Response:
    body = json.dumps({"Type": "User", "Message": message}).encode("utf-8")
    return _Response(status, body, {"Content-Type": "application/json",
                                    "X-Amzn-ErrorType": code})


def _error_payload(error_type: str, message: str, stack: list[str] | None = None) -> dict[
        str, object]:
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


def _runtime_answer(raw: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(raw)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


App = TypeVar("App")


class AppHTTPServer(ThreadingHTTPServer, Generic[App]):
    """A threading HTTP server on which request handlers find the application as `app`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 app: App) -> None:
        super().__init__(address, handler)
        self.app = app


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: AppHTTPServer[LambdaInvokeServer]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(self.server.app.answer_post(
            self.path, body, invocation_type=self.headers.get("X-Amz-Invocation-Type"),
            log_type=self.headers.get("X-Amz-Log-Type")))

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


# -- the runtime: runs inside each invocation's process ------------------------------------
class LambdaContext:
    """The context object of Lambda's Python runtime (the attributes handlers read)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.function_name: str = values["function_name"]
        self.function_version: str = values["function_version"]
        self.invoked_function_arn: str = values["invoked_function_arn"]
        self.memory_limit_in_mb: str = values["memory_limit_in_mb"]
        self.aws_request_id: str = values["aws_request_id"]
        self.log_group_name: str = values["log_group_name"]
        self.log_stream_name: str = values["log_stream_name"]
        self.identity: object = None
        self.client_context: object = None
        self._deadline_ms: int = values["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def run_invocation() -> int:
    """Read one request on stdin, run the handler, write the answer on the original stdout.

    The handler's own stdout is sent to stderr, the log, as Lambda sends print() to
    CloudWatch; the original stdout carries nothing but the answer.
    """
    with os.fdopen(os.dup(1), "w", encoding="utf-8") as channel:
        os.dup2(2, 1)
        request = json.load(sys.stdin)
        context = LambdaContext(request["context"])
        _configure_runtime_logging(context.aws_request_id)
        answer = _answer(request["handler"], request["event"], context)
        channel.write(json.dumps(answer))
    return 0


def _answer(handler_name: str, event: object, context: LambdaContext) -> dict[str, object]:
    module_name, function_name = split_handler(handler_name)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # Lambda reports any import failure the same way
        return {"error": _reported(_error_payload(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}",
            _stack(error)))}
    handler: Callable[[object, LambdaContext], object] | None = getattr(
        module, function_name, None)
    if handler is None:
        return {"error": _reported(_error_payload(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'"))}
    try:
        result = handler(event, context)
    except Exception as error:  # an unhandled error is the function's answer
        return {"error": _reported(_error_payload(type(error).__name__, str(error),
                                                  _stack(error)))}
    try:
        return {"result": json.dumps(result)}
    except (TypeError, ValueError) as error:
        return {"error": _reported(_error_payload(
            "Runtime.MarshalError", f"Unable to marshal response: {error}"))}


def _stack(error: BaseException) -> list[str]:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    return traceback.format_list(frames)


def _reported(error: dict[str, object]) -> dict[str, object]:
    """Log the error as Lambda's runtime does, then answer it."""
    stack = error["stackTrace"]
    trace = "".join(stack) if isinstance(stack, list) else ""
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}"
          + (f"\nTraceback (most recent call last):\n{trace}" if trace else ""),
          file=sys.stderr)
    return error


def _configure_runtime_logging(request_id: str) -> None:
    # Lambda's runtime gives the root logger a handler (level WARNING): a handler's
    # basicConfig() is then a no-op there, and must be here too.
    formatter = logging.Formatter(
        f"[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t{request_id}\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)


# -- the command line ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localdev.lambda_invoke",
        description="Serve Lambda's Invoke API on 127.0.0.1 for one local function.",
    )
    parser.add_argument("--name", required=True, help="the function name callers invoke")
    parser.add_argument("--handler", required=True, help="module:function")
    parser.add_argument("--code-dir", required=True, type=Path,
                        help="the folder the code runs from (e.g. a cdk.out asset)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable of the function (repeatable)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="the function timeout (default: 3, as Lambda)")
    parser.add_argument("--memory", type=int, default=128, metavar="MB",
                        help="reported memory size (default: 128)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the handler (default: this one)")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--region", help="default: $AWS_DEFAULT_REGION or us-east-1")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == [RUNNER_FLAG]:
        return run_invocation()
    parser = build_parser()
    args = parser.parse_args(arguments)
    env: dict[str, str] = {}
    for item in args.env:
        key, separator, value = item.partition("=")
        if not separator or not key:
            parser.error(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    if not args.code_dir.is_dir():
        parser.error(f"--code-dir {args.code_dir} is not a folder")
    try:
        function = LocalFunction(handler=args.handler, code_dir=args.code_dir, env=env,
                                 timeout_seconds=args.timeout, memory_mb=args.memory,
                                 python=args.python)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    server = LambdaInvokeServer({args.name: function}, port=args.port, region=args.region)
    server.start()
    # SIGTERM (how a parent stops us) ends the wait like Ctrl-C, so stop() still runs.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Lambda function {args.name} ({args.handler}) at {server.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
