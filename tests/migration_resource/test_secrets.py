"""Passwords never appear in logs, errors or answers."""

from __future__ import annotations

import logging

import pytest

from migration_resource.admin import answer_admin_event
from migration_resource.dsn import mask_text, mask_url, normalize_url
from migration_resource.engine import DatabaseUnavailable, MigrationEngine
from migration_resource.settings import EngineSettings
from tests.migration_resource.support import SAMPLE_SCRIPTS

PASSWORD = "s3cr3t-Pa55word"
# A closed port: connecting fails, and the failure must not carry the password.
URL = f"postgresql://migrator:{PASSWORD}@127.0.0.1:9/appdb"


def test_urls_are_masked() -> None:
    assert PASSWORD not in mask_url(normalize_url(URL))
    for scheme in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        url = URL.replace("postgresql://", f"{scheme}://", 1)
        assert PASSWORD not in mask_url(normalize_url(url)) and PASSWORD not in mask_text(url)
    assert mask_text(f"could not use {URL}") == "could not use postgresql://migrator:***@127.0.0.1:9/appdb"
    assert mask_text(f"host=db password={PASSWORD} user=x") == "host=db password=*** user=x"
    assert mask_text(f"token {PASSWORD}", (PASSWORD,)) == "token ***"


def test_settings_repr_hides_the_password() -> None:
    settings = EngineSettings(database_url=normalize_url(URL), script_location=SAMPLE_SCRIPTS)
    assert PASSWORD not in repr(settings)


def test_connection_failure_is_reported_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[int] = []
    sleeps: list[float] = []
    engine = MigrationEngine(
        EngineSettings(database_url=normalize_url(URL), script_location=SAMPLE_SCRIPTS),
        on_connection_error=lambda: errors.append(1), sleep=sleeps.append,
    )
    with pytest.raises(DatabaseUnavailable) as failure:
        engine.migrate()
    message = str(failure.value)
    # retried briefly (a resuming database), each failure counted, then reported
    assert len(errors) == 3 and sleeps == [1.0, 2.0]
    assert message.startswith("Cannot connect to the database (3 attempts)")
    assert "Check the host, port, credentials" in message
    assert PASSWORD not in message
    answer = answer_admin_event(engine, {"admin_operation": "status"})
    assert answer["ok"] is False and answer["error"] == "database_unavailable"
    assert PASSWORD not in str(answer)
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


def test_non_postgres_urls_are_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValueError, match="is not PostgreSQL") as refused:
        normalize_url(f"mysql://root:{PASSWORD}@db/app")
    assert PASSWORD not in str(refused.value)


# Every form a password comes in, valid or not. The valid ones reach a closed port.
URL_FORMS = {
    "scheme": f"postgresql://migrator:{PASSWORD}@127.0.0.1:9/appdb",
    "heroku scheme": f"postgres://migrator:{PASSWORD}@127.0.0.1:9/appdb",
    "psycopg2 driver": f"postgresql+psycopg2://migrator:{PASSWORD}@127.0.0.1:9/appdb",
    "psycopg 3 driver": f"postgresql+psycopg://migrator:{PASSWORD}@127.0.0.1:9/appdb",
    "heroku scheme, psycopg 3": f"postgres+psycopg://migrator:{PASSWORD}@127.0.0.1:9/appdb",
    "query parameter": f"postgresql://migrator@127.0.0.1:9/appdb?password={PASSWORD}",
    "ipv6 in brackets": f"postgresql://migrator:{PASSWORD}@[::1]:9/appdb",
    "no scheme": f"migrator:{PASSWORD}@127.0.0.1:5432/appdb",
    "bad port": f"postgresql://migrator:{PASSWORD}@127.0.0.1:notaport/appdb",
    "ipv6 without brackets": f"postgresql://migrator:{PASSWORD}@::1:5432/appdb",
    "conninfo": f"host=127.0.0.1 port=9 user=migrator password={PASSWORD} dbname=appdb",
    "an @ in the password": "postgresql://migrator:s3cr3t@Pa55word@127.0.0.1:9/appdb",
    "unsupported driver": f"postgresql+asyncpg://migrator:{PASSWORD}@127.0.0.1:9/appdb",
}
MALFORMED = {"no scheme", "bad port", "ipv6 without brackets", "conninfo", "an @ in the password",
             "unsupported driver"}


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_a_password_in_any_url_form_never_reaches_the_cli_output(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.scripts.test_remote_admin import run_cli  # noqa: PLC0415 - the CLI's own helper

    url = URL_FORMS[form]
    result = run_cli("--json", "status", database_url=url,
                     env={"DATABASE_CONNECT_ATTEMPTS": "1"})
    output = result.stdout + result.stderr
    assert PASSWORD not in output and "Pa55word" not in output
    assert "Traceback" not in output
    if form in MALFORMED:
        # a usage error: the URL is named (masked) with the form expected
        assert result.returncode == 2, output
        assert ("is not a valid PostgreSQL URL" in output or "is not PostgreSQL" in output
                or "has an @ that is not encoded" in output or "is not supported" in output)
    else:
        assert result.returncode == 1, output
        assert "Cannot connect to the database" in output


def test_an_echoed_operation_name_is_bounded() -> None:
    engine = MigrationEngine(EngineSettings(database_url=normalize_url(URL),
                                            script_location=SAMPLE_SCRIPTS))
    answer = answer_admin_event(engine, {"admin_operation": "x" * 1_000_000})
    assert answer["ok"] is False and answer["error"] == "bad_request"
    assert len(str(answer)) < 2_000
