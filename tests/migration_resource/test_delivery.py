"""The answer to CloudFormation: bounded attempts against a local HTTPS ResponseURL."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from localdev.https_recorder import HttpsRecorder
from localdev.postgres import free_port
from migration_resource.delivery import ELLIPSIS, fit_response, send_response

BODY = {
    "Status": "SUCCESS", "PhysicalResourceId": "db-migrations-appdb", "StackId": "stack",
    "RequestId": "req-1", "LogicalResourceId": "Migrations", "Reason": "", "NoEcho": False,
    "Data": {"State": "up_to_date", "SnapshotId": ""},
}
GIVING_UP = "Giving up sending the response to CloudFormation after"


class Sleeps(list[float]):
    """Records the sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_success(response_recorder: HttpsRecorder) -> None:
    url = response_recorder.url("/cfn?X-Amz-Signature=secret-signature")
    sleeps = Sleeps()
    assert send_response(url, BODY, ssl_verify=str(response_recorder.ca_file), sleep=sleeps)
    [request] = response_recorder.requests
    # what crhelper sends: the JSON body, an empty content-type, the signed path and query
    assert request.body == BODY
    assert request.headers["content-type"] == ""
    assert request.path == "/cfn?X-Amz-Signature=secret-signature"
    assert sleeps == []


def test_failures_then_success(
    response_recorder: HttpsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="migration_resource.delivery")
    response_recorder.drop_next(2)
    response_recorder.answer_next(503)
    sleeps = Sleeps()
    url = response_recorder.url("/cfn?X-Amz-Signature=secret-signature")
    assert send_response(url, BODY, ssl_verify=str(response_recorder.ca_file), sleep=sleeps)
    assert [r.outcome for r in response_recorder.requests] == ["dropped", "dropped", "answered",
                                                                "answered"]
    assert [r.status for r in response_recorder.requests][2:] == [503, 200]
    assert sleeps == [1, 2, 4]
    assert "attempt 1 of 5" in caplog.text and "HTTP 503" in caplog.text
    assert "secret-signature" not in caplog.text  # the pre-signed URL's signature is not logged


def test_unreachable_url_gives_up_after_bounded_attempts(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a URL where nothing listens
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/cfn"
    sleeps = Sleeps()
    started = time.monotonic()
    # WHEN the answer is sent THEN it gives up, quickly, without raising
    assert send_response(url, BODY, attempts=4, backoff_seconds=(1, 2), sleep=sleeps) is False
    assert time.monotonic() - started < 2
    assert sleeps == [1, 2, 2]  # the last backoff repeats; no sleep after the last attempt
    assert f"{GIVING_UP} 4 attempts" in caplog.text
    assert caplog.text.count("failed, attempt") == 4


def test_hanging_server_hits_the_socket_timeout(response_recorder: HttpsRecorder) -> None:
    response_recorder.hang_next(count=2, seconds=10)
    sleeps = Sleeps()
    started = time.monotonic()
    assert send_response(response_recorder.url("/cfn"), BODY,
                         ssl_verify=str(response_recorder.ca_file), attempts=2,
                         timeout_seconds=0.3, sleep=sleeps) is False
    assert time.monotonic() - started < 3
    assert [r.outcome for r in response_recorder.requests] == ["hung", "hung"]
    assert sleeps == [1]


def test_a_client_error_is_final(
    response_recorder: HttpsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    # an expired pre-signed URL answers 403 and will do so on every retry
    response_recorder.answer_next(403, count=5)
    sleeps = Sleeps()
    assert send_response(response_recorder.url("/cfn"), BODY,
                         ssl_verify=str(response_recorder.ca_file), sleep=sleeps) is False
    assert len(response_recorder.requests) == 1 and sleeps == []
    assert f"{GIVING_UP} 1 attempts" in caplog.text


def test_an_untrusted_certificate_is_a_failed_attempt(response_recorder: HttpsRecorder) -> None:
    sleeps = Sleeps()
    assert send_response(response_recorder.url("/cfn"), BODY, attempts=2, sleep=sleeps) is False
    assert response_recorder.requests == [] and sleeps == [1]
    # ssl_verify=False, as crhelper allows, skips verification
    assert send_response(response_recorder.url("/cfn"), BODY, ssl_verify=False, sleep=sleeps)


def test_malformed_url_and_odd_body_never_raise() -> None:
    sleeps = Sleeps()
    assert send_response(f"https://127.0.0.1:{free_port()}x/cfn", BODY, attempts=2,
                         sleep=sleeps) is False
    assert send_response("https://127.0.0.1:9/cfn", {"Data": {"when": object()}}, attempts=1,
                         sleep=sleeps) is False


# -- fitting into 4 KB ----------------------------------------------------------------------
def size(body: dict[str, object]) -> int:
    return len(json.dumps(body).encode())


def test_small_bodies_are_unchanged_copies() -> None:
    fitted = fit_response(BODY)
    assert fitted == BODY and fitted is not BODY and fitted["Data"] is not BODY["Data"]


def test_largest_outputs_are_dropped_first() -> None:
    body = {**BODY, "Data": {"State": "pending_migrations", "Big": "x" * 3000,
                             "Medium": "y" * 900, "Small": "z" * 10}}
    fitted = fit_response(body)
    assert size(fitted) <= 4096
    assert fitted["Data"] == {"State": "pending_migrations", "Medium": "y" * 900,
                              "Small": "z" * 10}
    assert body["Data"]["Big"]  # type: ignore[index]  # the original is untouched


def test_reason_keeps_its_state_and_its_next_step() -> None:
    reason = ("inconsistent: alembic_version holds 'f00d' which no migration script defines "
              + "detail " * 800 + "See docs/RUNBOOK.md#inconsistent")
    fitted = fit_response({**BODY, "Status": "FAILED", "Reason": reason,
                           "Data": {"Huge": "d" * 5000}})
    assert size(fitted) <= 4096
    assert fitted["Data"] == {}
    assert fitted["Reason"].startswith("inconsistent: alembic_version holds 'f00d'")
    assert fitted["Reason"].endswith("See docs/RUNBOOK.md#inconsistent")
    assert ELLIPSIS in fitted["Reason"]
    assert size(fitted) > 4000  # cut no more than needed


@pytest.mark.parametrize("limit", [300, 1000, 4096])
def test_non_ascii_reasons_fit_too(limit: int) -> None:
    # "é" serialises as \\u00e9: six bytes for one character
    fitted = fit_response({**BODY, "Reason": "état: " + "é" * 3000 + " next step"}, limit)
    assert size(fitted) <= limit
    assert fitted["Reason"].startswith("état") and fitted["Reason"].endswith("next step")


def test_an_empty_reason_stays_empty() -> None:
    fitted = fit_response({**BODY, "PhysicalResourceId": "p" * 5000, "Reason": ""})
    assert fitted["Reason"] == "" and fitted["Data"] == {}


def test_a_body_that_cannot_be_serialised_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    circular: dict[str, object] = {}
    circular["self"] = circular
    assert send_response("https://127.0.0.1:9/cfn", {"Data": circular}, sleep=Sleeps()) is False
    assert f"{GIVING_UP} 0 attempts" in caplog.text
