"""Where the database is: a Secrets Manager secret in AWS, a URL locally.

In the Lambda, ``DATABASE_SECRET_ARN`` names the secret RDS/CDK generated and attached to the
database (JSON with host, port, username, password, dbname, engine). It is read once per
container: a custom resource run polls every minute and each poll would otherwise pay a
Secrets Manager call. A rotated password therefore reaches a warm container only after
``clear_secret_cache()`` or a cold start.

The URL is built with ``sqlalchemy.URL.create`` from the parts, so any character in a password
works; nothing from the secret's content ever goes into an error message.

TLS: for any host other than the local loopback the URL asks ``sslmode=require``. RDS for
PostgreSQL 15+ refuses unencrypted connections by default (``rds.force_ssl``), and
``require`` encrypts without needing the RDS CA bundle inside the Lambda; certificate
verification (``verify-full``) would need that bundle shipped and kept current. Loopback
hosts are the local deploy's embedded PostgreSQL, which has no certificate.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from migration_resource.dsn import DRIVER, normalize_url
from migration_resource.settings import SettingsError

SECRET_ARN_VARIABLE = "DATABASE_SECRET_ARN"  # noqa: S105 - a variable name, not a secret
URL_VARIABLE = "DATABASE_URL"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REQUIRED_SECRET_KEYS = ("host", "username", "password")
DEFAULT_PORT = 5432
# A secret attached to an instance created without a database name has no dbname;
# PostgreSQL's default database is then the only one there is.
DEFAULT_DBNAME = "postgres"

_cache: dict[str, sa.URL] = {}
_cache_lock = threading.Lock()


def database_url_from_environment(
    env: Mapping[str, str], *, secrets_client: Callable[[], Any] | None = None
) -> sa.URL:
    """The database URL from DATABASE_SECRET_ARN or DATABASE_URL.

    A secret's URL uses psycopg2 (``postgresql+psycopg2``, the driver the bundles ship);
    DATABASE_URL's driver is settled by ``normalize_url`` (plain ``postgresql://`` and
    ``postgres://`` select psycopg2, an explicit ``postgresql+psycopg://`` is kept).

    ``secrets_client`` builds a Secrets Manager client; it is called only when the secret is
    not cached yet (default: ``boto3.client("secretsmanager")``).
    """
    arn = env.get(SECRET_ARN_VARIABLE, "").strip()
    if arn:
        with _cache_lock:
            cached = _cache.get(arn)
        if cached is not None:
            return cached
        url = url_from_secret(_read_secret(arn, secrets_client or _default_secrets_client))
        with _cache_lock:
            _cache[arn] = url
        return url
    raw = env.get(URL_VARIABLE, "").strip()
    if raw:
        return normalize_url(raw)
    raise SettingsError(
        f"Neither {SECRET_ARN_VARIABLE} nor {URL_VARIABLE} is set; set {SECRET_ARN_VARIABLE} to "
        f"the database secret's ARN (in AWS) or {URL_VARIABLE}="
        "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (locally)"
    )


def clear_secret_cache() -> None:
    """Forget the secrets read so far (tests; after a password rotation)."""
    with _cache_lock:
        _cache.clear()


def url_from_secret(secret: Mapping[str, Any]) -> sa.URL:
    """A URL from the RDS secret's fields; errors name missing fields, never values."""
    missing = [key for key in REQUIRED_SECRET_KEYS if not secret.get(key)]
    if missing:
        raise SettingsError(
            f"The database secret ({SECRET_ARN_VARIABLE}) has no {', '.join(missing)}; attach "
            "the secret to the database so RDS fills in host, port, username, password and "
            "dbname"
        )
    engine = str(secret.get("engine") or "postgres")
    if not engine.startswith(("postgres", "aurora-postgresql")):
        raise SettingsError(
            f"The database secret ({SECRET_ARN_VARIABLE}) is for engine {engine[:40]!r}; "
            "only PostgreSQL is supported"
        )
    try:
        port = int(secret.get("port") or DEFAULT_PORT)
    except (TypeError, ValueError):
        raise SettingsError(
            f"The database secret ({SECRET_ARN_VARIABLE}) has a port that is not a number"
        ) from None
    host = str(secret["host"])
    query = {} if host in LOCAL_HOSTS else {"sslmode": "require"}
    return sa.URL.create(
        DRIVER,
        username=str(secret["username"]),
        password=str(secret["password"]),
        host=host,
        port=port,
        database=str(secret.get("dbname") or DEFAULT_DBNAME),
        query=query,
    )


def _read_secret(arn: str, secrets_client: Callable[[], Any]) -> Mapping[str, Any]:
    # botocore and boto3 load with the first secret read: a process that is given
    # DATABASE_URL (the local deploy, the sample application offline) never needs them.
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        answer = secrets_client().get_secret_value(SecretId=arn)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "ClientError"))
        raise SettingsError(
            f"Cannot read the database secret named by {SECRET_ARN_VARIABLE} ({code}); check "
            "that it exists and that the Lambda may call secretsmanager:GetSecretValue on it"
        ) from None
    except BotoCoreError as error:
        raise SettingsError(
            f"Cannot reach Secrets Manager for {SECRET_ARN_VARIABLE} ({type(error).__name__}); "
            "check the Lambda's network path (VPC endpoint or NAT) to Secrets Manager"
        ) from None
    text = answer.get("SecretString")
    try:
        secret = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        secret = None  # the decode error would quote the secret: say nothing of it
    if not isinstance(secret, dict):
        raise SettingsError(
            f"The database secret ({SECRET_ARN_VARIABLE}) is not a JSON object with host, "
            "port, username, password and dbname"
        )
    return secret


def _default_secrets_client() -> Any:
    import boto3  # noqa: PLC0415 - see _read_secret

    return boto3.client("secretsmanager")
