"""The stand-in for CloudFormation's ResponseURL: records PUTs, and misbehaves on request."""

from __future__ import annotations

import http.client
import json
import ssl
import time

import pytest

from localdev.https_recorder import HttpsRecorder


def put(recorder: HttpsRecorder, path: str, body: object, *, timeout: float = 5) -> int:
    context = ssl.create_default_context(cafile=str(recorder.ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", recorder.port, timeout=timeout,
                                             context=context)
    try:
        connection.request("PUT", path, body=json.dumps(body), headers={"content-type": ""})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_records_every_put(response_recorder: HttpsRecorder) -> None:
    url = response_recorder.url("/cfn/response?X-Amz-Signature=abc")
    assert url == f"https://127.0.0.1:{response_recorder.port}/cfn/response?X-Amz-Signature=abc"

    assert put(response_recorder, "/cfn/response?X-Amz-Signature=abc", {"Status": "SUCCESS"}) == 200

    [request] = response_recorder.requests
    assert request.method == "PUT"
    assert request.path == "/cfn/response?X-Amz-Signature=abc"
    assert request.body == {"Status": "SUCCESS"}
    assert request.headers["content-type"] == ""
    assert request.outcome == "answered" and request.status == 200
    assert response_recorder.answered == [request]


def test_the_certificate_is_trusted_only_through_ca_file(response_recorder: HttpsRecorder) -> None:
    connection = http.client.HTTPSConnection("127.0.0.1", response_recorder.port, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("PUT", "/", body=b"{}")
    connection.close()
    assert response_recorder.requests == []


def test_drop_next_closes_without_answering(response_recorder: HttpsRecorder) -> None:
    response_recorder.drop_next(2)
    for _ in range(2):
        with pytest.raises(http.client.RemoteDisconnected):
            put(response_recorder, "/r", {"n": 1})
    assert put(response_recorder, "/r", {"n": 3}) == 200
    assert [r.outcome for r in response_recorder.requests] == ["dropped", "dropped", "answered"]
    assert len(response_recorder.answered) == 1


def test_hang_next_runs_into_the_client_timeout(response_recorder: HttpsRecorder) -> None:
    response_recorder.hang_next(seconds=5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        put(response_recorder, "/r", {}, timeout=0.3)
    assert time.monotonic() - started < 2
    assert put(response_recorder, "/r", {}) == 200  # the server still serves others meanwhile


def test_answer_next_with_another_status(response_recorder: HttpsRecorder) -> None:
    response_recorder.answer_next(403)
    assert put(response_recorder, "/r", {}) == 403
    assert put(response_recorder, "/r", {}) == 200
    assert [r.status for r in response_recorder.requests] == [403, 200]
    assert len(response_recorder.answered) == 1


def test_stop_releases_a_hanging_request_quickly() -> None:
    recorder = HttpsRecorder()
    recorder.start()
    recorder.hang_next(seconds=30)
    with pytest.raises(TimeoutError):
        put(recorder, "/r", {}, timeout=0.2)
    started = time.monotonic()
    recorder.stop()
    assert time.monotonic() - started < 5
    recorder.stop()  # idempotent


def test_not_started_has_no_url() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        HttpsRecorder().url("/")
