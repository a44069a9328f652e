"""Database URLs: accept what operators paste, never show a password."""

from __future__ import annotations

import re

import sqlalchemy as sa

DRIVER = "postgresql+psycopg"
# Every form a password takes in what operators paste: URL userinfo with or without a scheme
# (`postgresql://USER:PASSWORD@HOST`, `USER:PASSWORD@HOST:5432/DB`), a query parameter,
# libpq conninfo (`password=...`, quoted or not), and JSON (`"password": "..."`).
_PASSWORD_IN_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)([^\s'\"]*)(@)", re.I)
_PASSWORD_IN_BARE_URL = re.compile(r"((?:^|[\s'\"(=,;])[^:/@\s'\"]+:)([^\s'\"/]*)(@)")
_PASSWORD_IN_QUERY = re.compile(r"([?&]password=)([^&\s'\"]+)", re.IGNORECASE)
_PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_IN_JSON = re.compile(r"(\"password\"\s*:\s*\")((?:[^\"\\]|\\.)*)(\")", re.IGNORECASE)


class DatabaseUrlError(ValueError):
    """The URL is not a PostgreSQL URL we can use."""


def normalize_url(url: str) -> sa.URL:
    """Parse a PostgreSQL URL and pin the psycopg 3 driver (``postgres://`` included)."""
    try:
        parsed = sa.make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError) as error:
        # A bad port, an IPv6 host without brackets or no scheme at all; the text is masked
        # and cut, as what was pasted may be anything.
        shown = mask_text(url.strip())
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise DatabaseUrlError(
            f"Database URL {shown!r} is not a valid PostgreSQL URL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (an IPv6 host in brackets: "
            "[::1])"
        ) from error
    if parsed.host and "@" in parsed.host:
        # `user:p@ss@host`: the URL splits at the first @, so part of the password would
        # be taken for the host and shown in every connection error.
        raise DatabaseUrlError(
            f"Database URL {mask_url(parsed)!r} has an @ that is not encoded in its user or "
            "password; write it as %40 (p@ss becomes p%40ss)"
        )
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
    return mask_text(url.render_as_string(hide_password=True))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove passwords from free text: URL and conninfo forms, and any known secret values."""
    masked = _PASSWORD_IN_URL.sub(r"\1***\3", text)
    masked = _PASSWORD_IN_BARE_URL.sub(r"\1***\3", masked)
    masked = _PASSWORD_IN_QUERY.sub(r"\1***", masked)
    masked = _PASSWORD_IN_JSON.sub(r"\1***\3", masked)
    masked = _PASSWORD_IN_CONNINFO.sub(r"\1***", masked)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, "***")
    return masked
