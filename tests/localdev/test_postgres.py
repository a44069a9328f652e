"""The local PostgreSQL server's data folder, when we are root and the server runs as the
postgres user."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from localdev.postgres import (
    LocalPostgres,
    PostgresUnavailable,
    folder_closed_to_others,
    free_port,
)


def test_a_checkout_inside_a_closed_folder_is_refused_in_one_line_as_root() -> None:
    # GIVEN a checkout inside a folder only its owner may enter (as a clone in /root would be)
    base = Path(tempfile.mkdtemp(prefix="closed-"))
    try:
        base.chmod(0o700)
        server = LocalPostgres(data_dir=base / "checkout" / ".local" / "postgres",
                               port=free_port())
        if os.geteuid() != 0:
            # THEN as another user the server runs as that user, who owns the folder: it starts
            server.start()
            server.stop()
            return
        # WHEN root starts the server (it runs as postgres) THEN it says what blocks it and
        # what to do, in one line
        with pytest.raises(PostgresUnavailable) as raised:
            server.start()
        message = str(raised.value)
        assert "\n" not in message
        assert f"cannot enter {base} (mode 0700)" in message
        assert f"chmod o+x {base}" in message
        assert not (base / "checkout" / ".local" / "postgres" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_folder_closed_to_others_finds_the_first_closed_one() -> None:
    open_one = Path(tempfile.mkdtemp(prefix="open-"))
    try:
        open_one.chmod(0o755)
        inner = open_one / "a" / "b"
        inner.mkdir(parents=True)
        (open_one / "a").chmod(0o750)
        assert folder_closed_to_others(inner) == open_one / "a"
        (open_one / "a").chmod(0o755)
        assert folder_closed_to_others(inner) is None
    finally:
        shutil.rmtree(open_one, ignore_errors=True)
