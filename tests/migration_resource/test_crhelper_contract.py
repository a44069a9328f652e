"""Each crhelper behaviour `migration_resource.crhelper_lifecycle` relies on, pinned against
the installed crhelper: an upgrade that changes one fails here, by name (`RELIED_ON`).

Real parts: crhelper itself, the moto server for the poll rule (EventBridge) and the Lambda
permission, an HTTPS recorder as the ResponseURL. The Lambda context is a small object: the
Lambda runtime cannot run here.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import crhelper
import pytest

from localdev.aws_records import ensure_function_record
from migration_resource.crhelper_lifecycle import RELIED_ON, CrHelperLifecycle

FUNCTION = "contract-function"
# crhelper's partial annotations do not cover its private members.
PlainCfnResource: Any = crhelper.CfnResource


@dataclass
class Context:
    remaining_ms: int = 900_000
    function_name: str = FUNCTION
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def event(recorder: Any, request_type: str = "Create", **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type, "ResponseURL": recorder.url(f"/r/{uuid.uuid4().hex}"),
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1",
        "RequestId": uuid.uuid4().hex, "LogicalResourceId": "Thing",
        "ResourceType": "Custom::Thing", "ResourceProperties": {}, **extra,
    }


class Lifecycle(CrHelperLifecycle):
    """The product's lifecycle with functions a test sets."""

    response_keys = ("Kept",)

    def __init__(self, recorder: Any) -> None:
        super().__init__(polling_interval_minutes=1, ssl_verify=str(recorder.ca_file))
        self.seen: list[dict[str, Any]] = []
        self.first: Callable[[Mapping[str, Any], Any], str | None] = lambda e, c: "done"
        self.poll: Callable[[Mapping[str, Any], Any], str | None] = lambda e, c: "done"
        self.create(self.run_first)
        self.update(self.run_first)
        self.poll_create(self.run_poll)
        self.poll_update(self.run_poll)

    def run_first(self, event: Mapping[str, Any], context: Any) -> str | None:
        return self.first(event, context)

    def run_poll(self, event: Mapping[str, Any], context: Any) -> str | None:
        return self.poll(event, context)

    def finish(self, physical_id: str = "done") -> Callable[[Mapping[str, Any], Any], str]:
        def finished(event: Mapping[str, Any], context: Any) -> str:
            self.answer_now()
            return physical_id

        return finished


@pytest.fixture
def lifecycle(aws: Any, response_recorder: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        Lifecycle]:
    monkeypatch.setenv("AWS_REGION", aws.region)
    ensure_function_record(aws.client, FUNCTION)
    yield Lifecycle(response_recorder)


def answers(recorder: Any) -> list[dict[str, Any]]:
    return [dict(request.body) for request in recorder.requests]


def rules(aws: Any) -> list[dict[str, Any]]:
    events = aws.client("events")
    found = []
    for rule in events.list_rules()["Rules"]:
        for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
            found.append(json.loads(target["Input"]))
    return found


def test_every_relied_on_behaviour_has_its_test() -> None:
    names = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(RELIED_ON) <= names


def test_clients_skipped_when_local(monkeypatch: pytest.MonkeyPatch) -> None:
    # crhelper itself: with AWS_SAM_LOCAL it builds none of its three clients
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    plain = PlainCfnResource(sleep_on_delete=0)
    assert not {"_lambda_client", "_events_client", "_logs_client"} & set(vars(plain))
    # and the product's lifecycle, without the switch, builds none either, nor leaves it set
    monkeypatch.delenv("AWS_SAM_LOCAL")
    ours = CrHelperLifecycle(polling_interval_minutes=1, ssl_verify=None)
    assert not {"_lambda_client", "_events_client", "_logs_client"} & set(vars(ours))
    assert ours._sam_local is None
    assert "AWS_SAM_LOCAL" not in os.environ


def test_log_setup_per_event(lifecycle: Lifecycle, response_recorder: Any,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(PlainCfnResource, "_log_setup", lambda self, e, c: calls.append(e))
    plain = PlainCfnResource(sleep_on_delete=0, ssl_verify=str(response_recorder.ca_file))
    plain.create(lambda e, c: "id")
    one = event(response_recorder)
    plain(one, Context())
    assert calls == [one]
    monkeypatch.undo()
    # the override keeps the root logger as the handler configured it
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    lifecycle.first = lifecycle.finish()
    lifecycle(event(response_recorder), Context())
    assert (root.level, root.handlers) == (level, handlers)


def test_data_from_poll(lifecycle: Lifecycle, response_recorder: Any) -> None:
    def records(e: Mapping[str, Any], c: Any) -> None:
        lifecycle.seen.append(dict(lifecycle.Data))

    lifecycle.poll = records
    lifecycle(event(response_recorder, CrHelperPoll=True, CrHelperData={"Plan": "p1"},
                    CrHelperRule="arn:aws:events:us-east-1:123456789012:rule/Thing1",
                    CrHelperPermission="Thing1"), Context())
    assert lifecycle.seen == [{"Plan": "p1"}]


def test_polling_init_after_run(lifecycle: Lifecycle, response_recorder: Any,
                                aws: Any) -> None:
    # a first run that says it finished is answered at once, without a poll rule
    def finished(e: Mapping[str, Any], c: Any) -> str:
        lifecycle.answer_now()
        lifecycle.Data["Kept"] = "yes"
        return "resource-1"

    lifecycle.first = finished
    lifecycle(event(response_recorder), Context())
    assert [(a["Status"], a["PhysicalResourceId"], a["Data"]) for a in
            answers(response_recorder)] == [("SUCCESS", "resource-1", {"Kept": "yes"})]
    assert rules(aws) == []


def test_poll_input_fixed(lifecycle: Lifecycle, response_recorder: Any, aws: Any) -> None:
    # a first run that did not finish: crhelper stores the event, with the Data it left
    def unfinished(e: Mapping[str, Any], c: Any) -> None:
        lifecycle.keep_polling()
        lifecycle.Data["Plan"] = "plan-json"

    lifecycle.first = unfinished
    first = event(response_recorder)
    lifecycle(first, Context())
    assert answers(response_recorder) == []
    (stored,) = rules(aws)
    assert stored["CrHelperPoll"] is True and stored["RequestId"] == first["RequestId"]
    assert stored["CrHelperData"]["Plan"] == "plan-json"


def test_poll_input_replaced(lifecycle: Lifecycle, response_recorder: Any, aws: Any) -> None:
    # a poll that polls on and changed the Data: the next poll gets it
    def unfinished(e: Mapping[str, Any], c: Any) -> None:
        lifecycle.keep_polling()
        lifecycle.Data["Runs"] = str(int(lifecycle.Data.get("Runs") or 0) + 1)

    lifecycle.first = unfinished
    lifecycle.poll = unfinished
    lifecycle(event(response_recorder), Context())
    (stored,) = rules(aws)
    lifecycle(stored, Context())
    (again,) = rules(aws)
    assert again["CrHelperData"]["Runs"] == "2"
    assert answers(response_recorder) == []


def test_remove_polling_when_done(lifecycle: Lifecycle, response_recorder: Any,
                                  aws: Any) -> None:
    lifecycle.first = lambda e, c: None
    lifecycle(event(response_recorder), Context())
    (stored,) = rules(aws)
    # the poll that finishes answers once and removes the rule
    lifecycle.poll = lambda e, c: "resource-2"
    lifecycle(stored, Context())
    assert [a["PhysicalResourceId"] for a in answers(response_recorder)] == ["resource-2"]
    assert rules(aws) == []
    # a poll told its request is over removes its rule and answers nothing
    lifecycle.first = lambda e, c: None
    lifecycle(event(response_recorder), Context())
    (stored,) = rules(aws)
    lifecycle.poll = lambda e, c: lifecycle.stop_polling_silently()
    lifecycle(stored, Context())
    assert len(answers(response_recorder)) == 1 and rules(aws) == []


def test_failure_from_exception(lifecycle: Lifecycle, response_recorder: Any,
                                caplog: pytest.LogCaptureFixture) -> None:
    def fails(e: Mapping[str, Any], c: Any) -> str:
        raise RuntimeError("pending_migrations: the reason, named")

    lifecycle.first = fails
    one = event(response_recorder, "Update", PhysicalResourceId="kept-id")
    with caplog.at_level(logging.INFO):
        lifecycle(one, Context())
    (answer,) = answers(response_recorder)
    assert answer["Status"] == "FAILED"
    assert answer["Reason"] == "pending_migrations: the reason, named"
    assert answer["PhysicalResourceId"] == "kept-id"
    # the log has the reason, and no error about a poll that was never set up; an
    # unexpected failure keeps its traceback
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["pending_migrations: the reason, named"]
    assert errors[0].exc_info is not None
    # an expected failure (a refusal) is its reason alone: no traceback for it
    caplog.clear()
    lifecycle.expected_failures = (RuntimeError,)
    with caplog.at_level(logging.INFO):
        lifecycle(event(response_recorder, "Update", PhysicalResourceId="kept-id"), Context())
    assert answers(response_recorder)[-1]["Status"] == "FAILED"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.getMessage(), bool(r.exc_info)) for r in errors] == [
        ("pending_migrations: the reason, named", False)]


def test_timer_calls_timeout(lifecycle: Lifecycle, response_recorder: Any) -> None:
    # a run that outlives its context: crhelper's timer fires 0.5 s before the end
    released = threading.Event()

    def slow(e: Mapping[str, Any], c: Any) -> str:
        released.wait(5)
        lifecycle.answer_now()
        return "late"

    lifecycle.first = slow
    runner = threading.Thread(target=lifecycle, args=(event(response_recorder),
                                                       Context(remaining_ms=600)))
    runner.start()
    for _ in range(100):
        if answers(response_recorder):
            break
        threading.Event().wait(0.05)
    released.set()
    runner.join(10)
    # the timer's answer is the product's reason, and the late main thread adds none
    statuses = [(a["Status"], a["Reason"]) for a in answers(response_recorder)]
    assert statuses == [("FAILED", f"timeout: {lifecycle.timeout_reason}")]


def test_send_signature(lifecycle: Lifecycle, response_recorder: Any) -> None:
    parameters = list(inspect.signature(PlainCfnResource._send).parameters)
    assert parameters[:3] == ["self", "status", "reason"]
    # the product's _send answers a request once, whoever asks first
    lifecycle.first = lifecycle.finish()
    lifecycle(event(response_recorder), Context())
    lifecycle._send("FAILED", "second")
    assert [a["Status"] for a in answers(response_recorder)] == ["SUCCESS"]


def test_client_attributes(lifecycle: Lifecycle, aws: Any) -> None:
    source = inspect.getsource(crhelper.CfnResource)
    for used in ("self._lambda_client.add_permission", "self._events_client.put_rule",
                 "self._events_client.put_targets", "self._events_client.delete_rule"):
        assert used in source
    # built on first use, for the region crhelper read
    assert lifecycle._events_client.meta.region_name == aws.region
