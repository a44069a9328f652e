"""Database URLs: accept what operators paste, never show a password."""

from __future__ import annotations

import importlib.util
import re

import sqlalchemy as sa

# psycopg2-binary, the driver the design card names and the Lambda bundles ship: what a
# plain `postgresql://` or `postgres://` URL selects (SQLAlchemy's own default for the former).
DRIVER = "postgresql+psycopg2"
# Drivers a URL may name explicitly, and the module each needs: psycopg 3 works where it is
# installed (not in the bundles). Others (asyncpg, pg8000, ...) are refused: the engine runs
# synchronous Alembic migrations and is tested with these two only.
KNOWN_DRIVERS = {"psycopg2": "psycopg2", "psycopg": "psycopg"}
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
    """Parse a PostgreSQL URL and settle its driver.

    ``postgresql://`` and ``postgres://`` select psycopg2 (``postgresql+psycopg2``); an explicit
    ``+psycopg2`` or ``+psycopg`` (psycopg 3) is kept, if that driver is installed. Anything
    else is a ``DatabaseUrlError`` naming the URL with its password masked.
    """
    try:
        parsed = sa.make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError):
        # A bad port, an IPv6 host without brackets or no scheme at all; the text is masked
        # and cut, as what was pasted may be anything (a password with a space or a quote
        # included: everything between the user and the last @ is the password).
        shown = mask_text(_mask_userinfo(url.strip()))
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise DatabaseUrlError(
            f"Database URL {shown!r} is not a valid PostgreSQL URL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (an IPv6 host in brackets: "
            "[::1])"
        ) from None  # the parser's own error may quote the URL
    if parsed.host and any(c.isspace() or c in "'\"" for c in parsed.host):
        # No host has these: part of an unencoded password was taken for the host, and
        # which part cannot be told; nothing after the scheme is shown.
        raise DatabaseUrlError(
            f"Database URL {parsed.drivername}://*** has a space or a quote where its host "
            "is: encode the password's special characters (a space as %20, @ as %40)")
    if parsed.host and "@" in parsed.host:
        # `user:p@ss@host`: the URL splits at the first @, so part of the password would
        # be taken for the host and shown in every connection error.
        raise DatabaseUrlError(
            f"Database URL {mask_text(_mask_userinfo(url.strip()))!r} has an @ that is not "
            "encoded in its user or "
            "password; write it as %40 (p@ss becomes p%40ss)"
        )
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise DatabaseUrlError(
            f"Database URL {mask_url(parsed)!r} is not PostgreSQL; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        )
    _, _, driver = parsed.drivername.partition("+")
    if not driver:
        return parsed.set(drivername=DRIVER)
    module = KNOWN_DRIVERS.get(driver)
    if module is None:
        raise DatabaseUrlError(
            f"Database URL {mask_url(parsed)!r} names the driver {driver[:40]!r}, which is not "
            "supported; write postgresql:// (psycopg2) or postgresql+psycopg:// (psycopg 3)"
        )
    if importlib.util.find_spec(module) is None:
        # Found now rather than as an import error at the first connection.
        raise DatabaseUrlError(
            f"Database URL {mask_url(parsed)!r} names the driver {driver!r}, whose package "
            f"({module}) is not installed here; write postgresql:// to use psycopg2"
        )
    return parsed.set(drivername=f"postgresql+{driver}")


def _mask_userinfo(text: str) -> str:
    """A pasted URL with whatever stands between `USER:` and its last @ replaced by ***."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    userinfo, at, host = rest.rpartition("@")
    if not at:
        # No @: `user:password/db` with the host left out reads as host:port; whatever
        # follows the first `:` of the authority may be a password.
        authority, slash, path = rest.partition("/")
        if ":" not in authority:
            return text
        return f"{scheme}{separator}{authority.split(':', 1)[0]}:***{slash}{path}"
    if ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{separator}{user}:***@{host}"


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
