"""Database URLs: accept what operators paste, never show a password."""

from __future__ import annotations

import re

import sqlalchemy as sa

DRIVER = "postgresql+psycopg"
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


class DatabaseUrlError(ValueError):
    """The URL is not a PostgreSQL URL we can use."""


def normalize_url(url: str) -> sa.URL:
    """Parse a PostgreSQL URL and pin the psycopg 3 driver (``postgres://`` included)."""
    try:
        parsed = sa.make_url(url.strip())
    except sa.exc.ArgumentError as error:
        raise DatabaseUrlError(
            f"Database URL {mask_text(url)!r} is not a URL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        ) from error
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise DatabaseUrlError(
            f"Database URL {mask_url(parsed)!r} is not PostgreSQL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        )
    return parsed.set(drivername=DRIVER)


def mask_url(url: sa.URL | str) -> str:
    """The URL as text with the password replaced by ``***``."""
    if isinstance(url, str):
        return mask_text(url)
    return url.render_as_string(hide_password=True)


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove passwords from free text: URL and conninfo forms, and any known secret values."""
    masked = _PASSWORD_IN_URL.sub(r"\1***\3", text)
    masked = _PASSWORD_IN_CONNINFO.sub(r"\1***", masked)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, "***")
    return masked
