"""A throwaway (or persistent) PostgreSQL server for tests and local deploys.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` system user through ``runuser``. The server listens on 127.0.0.1 only, trusts
local connections (it holds nothing but test data) and runs with ``fsync=off`` for speed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with "
    "'apt-get install -y postgresql' (Debian/Ubuntu) or put their bin folder on PATH"
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server would not start."""


def find_bin_dir() -> Path:
    """Folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(INSTALL_HINT)


def _version_key(folder: str) -> int:
    version = Path(folder).parent.name
    return int(version) if version.isdigit() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocalPostgres:
    """One server: its data folder, port and superuser. Start is idempotent."""

    data_dir: Path
    port: int
    user: str = "postgres"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = self._run(["pg_ctl", "-D", str(self.data_dir), "status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        if self.is_running():
            return
        self._prepare_data_dir()
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        log_file = self.data_dir / "server.log"
        self._run(
            ["pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(log_file), "-w", "start"],
            check=True,
        )

    def stop(self) -> None:
        if self.is_running():
            self._run(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], check=True)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _running_as_root():
            blocked = folder_closed_to_others(self.data_dir.parent)
            if blocked is not None:
                raise PostgresUnavailable(
                    f"PostgreSQL runs as the postgres user (we are root) and cannot enter "
                    f"{blocked} (mode {blocked.stat().st_mode & 0o777:04o}): put the checkout "
                    f"where that user can reach it (e.g. under /srv), or `chmod o+x {blocked}`")
            shutil.chown(self.data_dir, user="postgres", group="postgres")
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            ["initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8",
             "--locale=C.UTF-8"],
            check=True,
        )

    def _run(self, argv: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        command = [str(find_bin_dir() / argv[0]), *argv[1:]]
        if _running_as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}\n{tail}"
            )
        return result


def folder_closed_to_others(folder: Path) -> Path | None:
    """The first folder on the way to `folder` (itself included) that other users cannot
    enter, or None: the postgres user must pass through each to reach its data."""
    for one in [*reversed(folder.resolve().parents), folder.resolve()]:
        if one.exists() and not one.stat().st_mode & 0o001:
            return one
    return None


def _running_as_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def database_server(
    work: Path, *, server: type[LocalPostgres] = LocalPostgres, kind: str = ""
) -> Iterator[str]:
    """For benchmarks: DATABASE_URL when set, else a throwaway `server` in work/pgdata."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    local = server(data_dir=work / "pgdata", port=free_port())
    print(f"Starting a throwaway PostgreSQL server{kind}...", file=sys.stderr)
    local.start()
    try:
        yield local.url
    finally:
        local.stop()


# -- a persistent local server for trying the CLI by hand ----------------------------------
LOCAL_DATA_DIR = Path(__file__).resolve().parents[1] / ".local" / "postgres"
LOCAL_PORT = 54329
LOCAL_DATABASE = "app"


def local_server() -> LocalPostgres:
    return LocalPostgres(data_dir=LOCAL_DATA_DIR, port=LOCAL_PORT)


def main(argv: list[str]) -> int:
    """`start` (idempotent; creates the `app` database) or `stop` the local server."""
    server = local_server()
    if argv == ["start"]:
        start_with_database(server, LOCAL_DATABASE)
        plain_url = server.url_for(LOCAL_DATABASE).replace("+psycopg2", "")
        print(f"export DATABASE_URL={plain_url}")
        return 0
    if argv == ["stop"]:
        server.stop()
        print(f"stopped the local PostgreSQL server ({LOCAL_DATA_DIR} keeps its data)")
        return 0
    print("usage: python -m localdev.postgres start|stop", file=sys.stderr)
    return 2


def start_with_database(server: LocalPostgres, name: str) -> None:
    """Start (or reuse) a server whose data folder is kept, and create `name` if missing."""
    folder = server.data_dir.parent
    folder.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        folder.chmod(0o755)  # the postgres user must reach its data folder
    server.start()
    _create_database(server, name)


def _create_database(server: LocalPostgres, name: str) -> None:
    psql = [str(find_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(server.port),
            "-U", server.user, "-d", "postgres", "-tAc"]
    exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not exists:
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], capture_output=True, check=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
