"""A local HTTPS server playing CloudFormation's pre-signed S3 ResponseURL.

It records every PUT (path with query, headers, JSON body) and answers 200 like S3. Tests can
make it misbehave: drop the next requests (connection closed without an answer), hang on them
for a bounded time (socket-timeout tests), or answer them with another status.

The certificate comes from a throwaway ``trustme`` CA; clients verify it with ``ca_file``
(crhelper's and our sender's ``ssl_verify``). crhelper always speaks HTTPS, so a plain HTTP
recorder would not do.
"""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import trustme

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Upper bound on any hang, so a forgotten hang cannot block a test run.
MAX_HANG_SECONDS = 30.0

Outcome = Literal["answered", "dropped", "hung"]


@dataclass(frozen=True)
class RecordedRequest:
    """One PUT as the server saw it; ``body`` is the parsed JSON (None if not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    outcome: Outcome
    status: int | None  # the status answered, None when dropped or hung


@dataclass(frozen=True)
class _Plan:
    outcome: Outcome
    status: int = 200
    seconds: float = 0.0


@dataclass
class HttpsRecorder:
    """Threaded HTTPS server on 127.0.0.1; ``port=0`` picks a free port."""

    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _folder: Path | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _plans: deque[_Plan] = field(default_factory=deque, init=False, repr=False)
    _records: list[RecordedRequest] = field(default_factory=list, init=False, repr=False)
    # Set on stop() so hanging handlers give up at once.
    _released: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        self._folder = Path(tempfile.mkdtemp(prefix="https-recorder-"))
        authority = trustme.CA()
        authority.cert_pem.write_to_path(str(self._folder / "ca.pem"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(HOST, "localhost").configure_cert(context)
        self._released.clear()
        server = ThreadingHTTPServer((HOST, self.port), _handler_class(self))
        server.daemon_threads = True
        # The handshake runs in the handler's thread (on first read), not in accept(): a
        # client that never completes it must not block the accepting thread.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="https-recorder",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._released.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> HttpsRecorder:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate (for ``ssl_verify``)."""
        if self._folder is None:
            raise RuntimeError("HttpsRecorder is not started")
        return self._folder / "ca.pem"

    def url(self, path: str = "/") -> str:
        if self._server is None:
            raise RuntimeError("HttpsRecorder is not started")
        return f"https://{HOST}:{self.port}/{path.lstrip('/')}"

    # -- what it saw ----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every PUT received, in order, whatever was done with it."""
        with self._lock:
            return list(self._records)

    @property
    def answered(self) -> list[RecordedRequest]:
        """The PUTs that got a 2xx answer: what CloudFormation would have accepted."""
        return [r for r in self.requests if r.outcome == "answered" and r.status is not None
                and 200 <= r.status < 300]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._plans.clear()

    # -- misbehaviour -----------------------------------------------------------------------
    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next ``count`` PUTs without answering."""
        self._plan(_Plan("dropped"), count)

    def hang_next(self, count: int = 1, seconds: float = 5.0) -> None:
        """Hold the next ``count`` PUTs unanswered for ``seconds`` (at most 30), then close."""
        self._plan(_Plan("hung", seconds=min(seconds, MAX_HANG_SECONDS)), count)

    def answer_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` PUTs with ``status`` (e.g. 403 for an expired URL)."""
        self._plan(_Plan("answered", status=status), count)

    def _plan(self, plan: _Plan, count: int) -> None:
        with self._lock:
            self._plans.extend([plan] * count)

    def _next_plan(self) -> _Plan:
        with self._lock:
            return self._plans.popleft() if self._plans else _Plan("answered")

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._records.append(record)


def _handler_class(recorder: HttpsRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without it small answers wait ~40 ms for delayed ACKs (Nagle's algorithm).
        disable_nagle_algorithm = True

        def do_PUT(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            plan = recorder._next_plan()
            recorder._record(RecordedRequest(
                method="PUT", path=self.path, headers=dict(self.headers.items()),
                raw_body=raw, body=body, outcome=plan.outcome,
                status=plan.status if plan.outcome == "answered" else None,
            ))
            if plan.outcome == "hung":
                recorder._released.wait(plan.seconds)
            if plan.outcome != "answered":
                self.close_connection = True
                return
            self.send_response(plan.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("https recorder: " + format, *args)

    return Handler
