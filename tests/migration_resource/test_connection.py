"""The database URL from Secrets Manager (moto) or DATABASE_URL, connected to the real server."""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config

from migration_resource.connection import (
    clear_secret_cache,
    database_url_from_environment,
    url_from_secret,
)
from migration_resource.dsn import DatabaseUrlError, mask_url, normalize_url
from migration_resource.engine import DatabaseUnavailable, MigrationEngine
from migration_resource.settings import EngineSettings, SettingsError
from tests.conftest import Aws
from tests.migration_resource.support import SAMPLE_SCRIPTS

ODD_PASSWORD = "p@ss:w/o%rd?#&=+ 'x"  # every character a URL would mangle


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_secret_cache()
    yield
    clear_secret_cache()


def secret_for(database_url: str) -> dict[str, Any]:
    """The RDS-generated secret's shape, for the test database. Our test server trusts any
    password, so an odd one is used unless an external server needs its real one."""
    url = sa.make_url(database_url)
    return {"engine": "postgres", "host": url.host, "port": url.port or 5432,
            "username": url.username, "password": url.password or ODD_PASSWORD,
            "dbname": url.database, "dbInstanceIdentifier": "appdb"}


def full_text(error: BaseException) -> str:
    """Everything a traceback of the error would print."""
    return "".join(traceback.format_exception(error))


class CountingClients:
    """Builds real Secrets Manager clients and counts how often it is asked to."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.aws.client("secretsmanager")


def test_secret_gives_a_url_that_connects(aws: Aws, database_url: str) -> None:
    # GIVEN the database's credentials in Secrets Manager
    secret = secret_for(database_url)
    arn = aws.client("secretsmanager").create_secret(
        Name="appdb-credentials", SecretString=json.dumps(secret))["ARN"]
    # WHEN the URL is read from the environment the Lambda has
    url = database_url_from_environment({"DATABASE_SECRET_ARN": arn})
    # THEN it uses psycopg2, keeps the odd password intact and connects
    assert url.drivername == "postgresql+psycopg2"
    assert url.password == secret["password"]
    assert "sslmode" not in url.query  # loopback: the local server has no certificate
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_database()").scalar() == url.database
    engine.dispose()
    # and survives the string round trip the handler makes into EngineSettings
    assert sa.make_url(url.render_as_string(hide_password=False)) == url


def test_secret_is_read_once_per_container(aws: Aws) -> None:
    secrets = aws.client("secretsmanager")
    secret = {"host": "127.0.0.1", "port": 5432, "username": "app", "password": ODD_PASSWORD,
              "dbname": "appdb"}
    arn = secrets.create_secret(Name="db", SecretString=json.dumps(secret))["ARN"]
    clients = CountingClients(aws)
    first = database_url_from_environment({"DATABASE_SECRET_ARN": arn}, secrets_client=clients)
    # WHEN the secret disappears after the first read
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    # THEN the next invocation in the same container still has the URL, without asking AWS
    again = database_url_from_environment({"DATABASE_SECRET_ARN": arn}, secrets_client=clients)
    assert again == first and clients.calls == 1
    # AND once the cache is cleared, the missing secret is a clear error
    clear_secret_cache()
    with pytest.raises(SettingsError, match="ResourceNotFoundException") as missing:
        database_url_from_environment({"DATABASE_SECRET_ARN": arn}, secrets_client=clients)
    assert "secretsmanager:GetSecretValue" in str(missing.value)
    assert ODD_PASSWORD not in full_text(missing.value)


def test_secret_wins_over_database_url(aws: Aws) -> None:
    secret = {"host": "db.internal", "username": "app", "password": "pw"}
    arn = aws.client("secretsmanager").create_secret(
        Name="db", SecretString=json.dumps(secret))["ARN"]
    url = database_url_from_environment(
        {"DATABASE_SECRET_ARN": arn, "DATABASE_URL": "postgresql://other@127.0.0.1/x"})
    assert url.host == "db.internal"


def test_remote_hosts_require_tls_and_defaults_fill_gaps() -> None:
    url = url_from_secret({"host": "appdb.abc.us-east-1.rds.amazonaws.com", "username": "app",
                           "password": ODD_PASSWORD})
    assert url.query == {"sslmode": "require"}
    assert (url.port, url.database) == (5432, "postgres")
    assert ODD_PASSWORD not in repr(url) and ODD_PASSWORD not in str(url)
    assert url_from_secret({"host": "localhost", "port": "6543", "username": "a",
                            "password": "b"}).port == 6543


def test_database_url_is_normalised() -> None:
    url = database_url_from_environment({"DATABASE_URL": " postgres://app:pw@db:5433/appdb "})
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database) == ("db", 5433, "appdb")


def test_neither_variable_names_both() -> None:
    with pytest.raises(SettingsError, match="Neither DATABASE_SECRET_ARN nor DATABASE_URL"):
        database_url_from_environment({"DATABASE_SECRET_ARN": " ", "DATABASE_URL": ""})


@pytest.mark.parametrize("secret_string, message", [
    (json.dumps({"username": "app", "password": ODD_PASSWORD}), "has no host"),
    (json.dumps({"host": "h", "username": "app"}), "has no password"),
    (json.dumps({"host": "h", "username": "app", "password": ODD_PASSWORD, "port": "x"}),
     "port that is not a number"),
    (json.dumps({"engine": "mysql", "host": "h", "username": "app", "password": ODD_PASSWORD}),
     "engine 'mysql'"),
    (f"host=h user=app password={ODD_PASSWORD}", "is not a JSON object"),
    (f'{{"password": "{ODD_PASSWORD}", ', "is not a JSON object"),  # broken JSON
    (json.dumps([ODD_PASSWORD]), "is not a JSON object"),
])
def test_bad_secrets_are_named_but_never_shown(aws: Aws, secret_string: str, message: str) -> None:
    arn = aws.client("secretsmanager").create_secret(Name="db", SecretString=secret_string)["ARN"]
    with pytest.raises(SettingsError, match=message) as bad:
        database_url_from_environment({"DATABASE_SECRET_ARN": arn})
    text = full_text(bad.value)
    assert ODD_PASSWORD not in text and secret_string not in text
    assert "DATABASE_SECRET_ARN" in str(bad.value)


def test_unreachable_secrets_manager_is_a_settings_error() -> None:
    def unreachable() -> Any:
        return boto3.client("secretsmanager", endpoint_url="http://127.0.0.1:9",
                            region_name="us-east-1", aws_access_key_id="x",
                            aws_secret_access_key="x",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=1))

    with pytest.raises(SettingsError, match="EndpointConnectionError"):
        database_url_from_environment({"DATABASE_SECRET_ARN": "arn:aws:secretsmanager:x"},
                                      secrets_client=unreachable)


@pytest.fixture
def password_role(database_url: str) -> Iterator[tuple[str, str]]:
    """A role the server checks the password of (the test server trusts everyone else):
    a scram-sha-256 line for it alone, ahead of the trust lines, reloaded and removed after."""
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    role = f"rotator_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        hba = Path(conn.exec_driver_sql("SHOW hba_file").scalar_one())
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'first-password'")
        original = hba.read_text()
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
    time.sleep(0.2)  # the postmaster rereads pg_hba.conf on the signal
    try:
        yield role, "first-password"
    finally:
        with admin.connect() as conn:
            hba.write_text(original)
            conn.exec_driver_sql("SELECT pg_reload_conf()")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def test_a_rotated_secret_is_read_again_after_the_password_is_refused(
    aws: Aws, database_url: str, password_role: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aws_lambda_powertools.metrics import EphemeralMetrics  # noqa: PLC0415

    from migration_resource.handler import build_engine  # noqa: PLC0415 - the Lambda's path

    metrics = EphemeralMetrics(namespace="test")
    role, password = password_role
    secrets = aws.client("secretsmanager")
    secret = {**secret_for(database_url), "username": role, "password": password}
    arn = secrets.create_secret(Name=f"{role}-credentials",
                                SecretString=json.dumps(secret))["ARN"]
    env = {"DATABASE_SECRET_ARN": arn, "ALEMBIC_SCRIPT_LOCATION": str(SAMPLE_SCRIPTS)}
    monkeypatch.delenv("DATABASE_URL", raising=False)
    # GIVEN a warm container that read the secret once
    assert build_engine(env, metrics).status().classification.state == "empty"
    # WHEN the password is rotated (the database and the secret, not the container's cache)
    with sa.create_engine(database_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD 'second-password'")
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(
        {**secret, "password": "second-password"}))
    # THEN the next run is refused the cached password, reads the secret again and connects
    engine = build_engine(env, metrics)
    assert engine.status().classification.state == "empty"
    assert engine.settings.database_url.password == "second-password"


# Every URL scheme DATABASE_URL accepts, and the driver each selects: psycopg2 (the bundled
# driver) unless psycopg 3 is named, which works where it is installed (the dev requirements).
ACCEPTED_SCHEMES = {
    "postgresql": "psycopg2",
    "postgres": "psycopg2",
    "postgresql+psycopg2": "psycopg2",
    "postgresql+psycopg": "psycopg",
}
WRONG_PASSWORD = "Wr0ng-" + ODD_PASSWORD


@pytest.mark.parametrize("scheme", list(ACCEPTED_SCHEMES))
def test_every_accepted_url_form_connects_with_its_driver_and_hides_a_refused_password(
    scheme: str, database_url: str, password_role: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    driver = ACCEPTED_SCHEMES[scheme]
    role, password = password_role  # a role whose password the server checks
    server = sa.make_url(database_url)

    def url_with(secret: str) -> str:
        return (f"{scheme}://{role}:{quote(secret, safe='')}@{server.host}:{server.port}/"
                f"{server.database}")

    # GIVEN DATABASE_URL in this form, with the right password
    url = database_url_from_environment({"DATABASE_URL": url_with(password)})
    # THEN it selects its driver, and the engine connects through it
    assert url.drivername == f"postgresql+{driver}"
    engine = MigrationEngine(EngineSettings(database_url=url, script_location=SAMPLE_SCRIPTS))
    try:
        assert engine.status().classification.state == "empty"
        assert engine.database.dialect.driver == driver
        with engine.database.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_user").scalar() == role
    finally:
        engine.close()
    # WHEN the same form carries a password the server refuses
    refused = MigrationEngine(
        EngineSettings(database_url=database_url_from_environment(
            {"DATABASE_URL": url_with(WRONG_PASSWORD)}), script_location=SAMPLE_SCRIPTS,
            connect_attempts=1),
        sleep=lambda _: None)
    with pytest.raises(DatabaseUnavailable) as failure:
        refused.status()
    refused.close()
    # THEN the failure names the problem, and the password is in no message, cause or log
    assert "password authentication failed" in full_text(failure.value)
    for text in (full_text(failure.value), repr(refused.settings),
                 *(record.getMessage() for record in caplog.records)):
        assert WRONG_PASSWORD not in text and quote(WRONG_PASSWORD, safe="") not in text
        assert password not in text


@pytest.mark.parametrize("text, message", [
    (f"postgresql+asyncpg://app:{quote(ODD_PASSWORD, safe='')}@127.0.0.1/appdb",
     "names the driver 'asyncpg', which is not supported"),
    (f"postgresql+pg8000://app:{quote(ODD_PASSWORD, safe='')}@127.0.0.1/appdb",
     "names the driver 'pg8000', which is not supported"),
    # libpq's key=value form is not a URL: refused, naming the form expected
    ("host=127.0.0.1 port=5432 user=app password=Pa55-word dbname=appdb",
     "is not a valid PostgreSQL URL; expected postgresql://"),
])
def test_other_drivers_and_forms_are_usage_errors_without_the_password(
    text: str, message: str,
) -> None:
    with pytest.raises(DatabaseUrlError, match=message) as refused:
        database_url_from_environment({"DATABASE_URL": text})
    shown = full_text(refused.value)
    assert ODD_PASSWORD not in shown and quote(ODD_PASSWORD, safe="") not in shown
    assert "Pa55-word" not in shown
    assert "***" in str(refused.value)


# Passwords as operators paste them, unencoded, in URLs that do not parse (a typo'd port):
# a space, quotes, an @, a backslash. None of it may be shown.
RAW_PASSWORDS = ["S3cr et!", "it's \"mE\"", "p@zz w0rd", "bAck\\slAsh ok", "xq:yq:zq"]


@pytest.mark.parametrize("password", RAW_PASSWORDS)
@pytest.mark.parametrize("template", [
    "postgresql://app:{}@db.example:notaport/app",
    "app:{}@db.example:5x/app",
    "postgresql://app:{}@db.example:5432/app",  # parses: an @ in the password is refused
    "postgres://app:{}/db",  # the host left out: the password reads as a port
])
def test_a_password_with_any_characters_is_never_shown(template: str, password: str) -> None:
    text = template.format(password)
    try:
        url = normalize_url(text)
    except DatabaseUrlError as refused:
        shown = full_text(refused)
        assert "***" in shown
    else:
        shown = repr(url) + str(url) + mask_url(url)
    for part in (password, *password.split()):
        if len(part) > 2:
            assert part not in shown, shown


def test_explicit_drivers_are_kept_and_the_url_round_trips() -> None:
    for scheme, driver in ACCEPTED_SCHEMES.items():
        url = normalize_url(f"{scheme}://app:{quote(ODD_PASSWORD, safe='')}@db:5433/appdb")
        assert url.drivername == f"postgresql+{driver}" and url.password == ODD_PASSWORD
        # EngineSettings is given the URL as text by the handler: the same URL comes back
        assert normalize_url(url.render_as_string(hide_password=False)) == url
