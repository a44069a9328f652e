"""A local AWS API (moto's server) for tests and the local deploy.

Boto3 reaches it through ``AWS_ENDPOINT_URL``. It runs as a subprocess of the ``moto_server``
script installed next to this interpreter, so tests exercise real HTTP calls rather than
in-process patches; ``reset()`` clears its state between tests without a restart (~1 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_CHARS = 2000


class MotoServerError(RuntimeError):
    """The server could not be started or did not answer."""


def moto_server_executable() -> Path:
    """The ``moto_server`` script of this interpreter's environment (the venv's bin/)."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise MotoServerError(
            f"{executable} not found; install the test tools with "
            "'pip install -r requirements-dev.txt' (moto[server])"
        )
    return executable


@dataclass
class MotoServer:
    """One moto server on 127.0.0.1:port; its output goes to ``log_path``."""

    port: int
    log_path: Path | None = None
    startup_timeout_seconds: float = STARTUP_TIMEOUT_SECONDS
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it answers HTTP; idempotent."""
        if self._process is not None and self._process.poll() is None:
            return
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"moto-{self.port}-", suffix=".log")
            Path(name).chmod(0o644)
            os.close(handle)
            self.log_path = Path(name)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(moto_server_executable()), "-H", HOST, "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + self.startup_timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise MotoServerError(
                    f"moto_server exited at start on port {self.port}:\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise MotoServerError(
            f"moto_server did not answer on {self.endpoint} within "
            f"{self.startup_timeout_seconds:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint)."""
        # S310: the URL is our own http://127.0.0.1 endpoint
        request = urllib.request.Request(  # noqa: S310
            f"{self.endpoint}/moto-api/reset", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 200:
                raise MotoServerError(f"moto reset answered HTTP {response.status}")

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own http://127.0.0.1 URL
                f"{self.endpoint}/moto-api/", timeout=1
            ):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            return False
