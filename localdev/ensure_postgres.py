"""Make sure the PostgreSQL server binaries exist before the tests need them.

Installs Debian's `postgresql` package when we are root on a Debian-like machine; otherwise
fails with one line saying how. Skipped when DATABASE_URL points at a server already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from localdev.postgres import INSTALL_HINT, PostgresUnavailable, find_bin_dir


def ensure_binaries() -> str:
    try:
        return str(find_bin_dir())
    except PostgresUnavailable:
        pass
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable(INSTALL_HINT)
    print("PostgreSQL server binaries missing: installing Debian's postgresql package...",
          file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]):
        if subprocess.run(argv, env=env, check=False).returncode != 0:
            raise PostgresUnavailable(f"'{' '.join(argv)}' failed; {INSTALL_HINT}")
    return str(find_bin_dir())


def main() -> int:
    if os.environ.get("DATABASE_URL"):
        print("Using the PostgreSQL server at DATABASE_URL", file=sys.stderr)
        return 0
    try:
        print(f"PostgreSQL server binaries: {ensure_binaries()}", file=sys.stderr)
    except PostgresUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
