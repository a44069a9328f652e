"""Checksums of revision files: what makes an edited, already applied migration visible.

Only file bytes are read (no import, no compile), so the CDK app can compute the same
history digest at synth time and the engine can compare it with one query.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

# A revision whose file contains this runs statements outside a transaction; if it dies
# half-way the database may hold part of it, so a failure must block until resolved.
NON_TRANSACTIONAL_MARKER = "autocommit_block"
# The older spelling of the same thing: `op.execute("COMMIT")` ends the revision's
# transaction (teams wrote it before ALTER TYPE ... ADD VALUE could run in one).
_EXPLICIT_COMMIT = re.compile(
    r"""execute\(\s*(?:sa\.text\(\s*)?[rbu]?["']\s*(COMMIT|END)\b""", re.I
)


def file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def history_digest(versions_dir: Path) -> str:
    """SHA-256 over every revision file's name and checksum, in name order."""
    digest = hashlib.sha256()
    for path in sorted(versions_dir.glob("*.py")):
        digest.update(f"{path.name}\0{file_checksum(path)}\n".encode())
    return digest.hexdigest()


def is_transactional(path: Path) -> bool:
    text = path.read_text(errors="replace")
    return NON_TRANSACTIONAL_MARKER not in text and _EXPLICIT_COMMIT.search(text) is None
