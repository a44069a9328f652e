"""crhelper's lifecycle, configured for this product: every override of crhelper's internals.

crhelper (2.0.x) runs a custom resource's Create/Update/Delete, its polling (an EventBridge
rule that re-invokes the function every minute with the stored event) and the answer to
CloudFormation. It has no public hooks for what this product needs, so the few private
methods and attributes it overrides live here, and nowhere else. The behaviours of crhelper
they rely on are listed in `RELIED_ON`, and tests/migration_resource/test_crhelper_contract.py
pins each one against the installed crhelper, so an upgrade that changes one fails there
first, by name.

What changes against plain crhelper:
- construction: the root logger keeps its level and handlers (crhelper re-levels it), and
  no AWS client is built until polling needs one (crhelper builds three, about 100 ms of a
  cold start);
- `_log_setup`: nothing per event (the handler configures logging once);
- `_polling_init`: a first run that finished answers at once instead of polling; a poll that
  found its request over removes its rule and answers nothing; a poll that polls on leaves
  the Data it changed to the next poll;
- `_remove_polling`: only a poll that set one up removes it, and a failure to clean up
  after a success is a warning, not the answer;
- `_timeout`: the product's own reason;
- `_send`: one answer per request (the timer thread and the main thread may both try in the
  last half second), fitted to CloudFormation's 4 KB, sent with bounded retries (crhelper's
  sender retries forever), with the event's PhysicalResourceId when none was set.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import crhelper

from migration_resource import delivery
from migration_resource.deploy_event import stack_name
from migration_resource.dsn import mask_text
from migration_resource.reasons import short_reason

logger = logging.getLogger(__name__)

# What this module relies on in crhelper, each pinned by a test of the same name
# (tests/migration_resource/test_crhelper_contract.py).
RELIED_ON = {
    "clients_skipped_when_local": "the constructor builds no client when AWS_SAM_LOCAL is set",
    "log_setup_per_event": "__call__ calls self._log_setup(event, context) before anything",
    "data_from_poll": "_crhelper_init sets self.Data to the event's CrHelperData",
    "polling_init_after_run": "after Create/Update (poll functions registered) __call__ calls "
                              "self._polling_init(event) and answers only if it sets "
                              "self._send_response",
    "poll_input_fixed": "_setup_polling stores json of the event, with CrHelperData = the "
                        "Data the first run left, as the rule target's Input",
    "remove_polling_when_done": "_polling_init calls self._remove_polling() when a poll set "
                                "a PhysicalResourceId or failed",
    "failure_from_exception": "__call__ runs each registered function through "
                              "self._wrap_function(func), overridden here, and answers its "
                              "Status and Reason",
    "timer_calls_timeout": "_set_timeout starts a threading.Timer calling self._timeout "
                           "0.5 s before the run ends",
    "send_signature": "__call__ answers through self._send() or self._send(FAILED, reason)",
    "client_attributes": "polling uses self._lambda_client and self._events_client",
    "poll_input_replaced": "_put_targets(function_name) replaces the rule target's Input "
                           "with json of self._event",
}

# crhelper's partial annotations do not cover the attributes and hooks overridden here.
_CfnResource: Any = crhelper.CfnResource
# crhelper's own switch (for `sam local`) that skips building its clients at construction.
_CRHELPER_LOCAL = "AWS_SAM_LOCAL"
# Keys of Data that go into the answer: the rest is what runs carry to their polls.
DEFAULT_RESPONSE_KEYS: tuple[str, ...] = ()


@contextmanager
def _clients_deferred() -> Iterator[str | None]:
    """Build crhelper without its lambda, events and logs clients (polling builds the ones it
    uses on first use). Yields the switch's own value, so a real `sam local` run keeps
    crhelper's local behaviour."""
    original = os.environ.get(_CRHELPER_LOCAL)
    os.environ[_CRHELPER_LOCAL] = "true"
    try:
        yield original
    finally:
        if original is None:
            os.environ.pop(_CRHELPER_LOCAL, None)
        else:
            os.environ[_CRHELPER_LOCAL] = original


class CrHelperLifecycle(_CfnResource):  # type: ignore[misc]
    """crhelper with this product's settings. Subclasses register their functions and say,
    from inside them, `answer_now()` or `stop_polling_silently()`."""

    response_keys: tuple[str, ...] = DEFAULT_RESPONSE_KEYS
    timeout_reason = "the Lambda ran out of time"
    # failures whose reason says it all: logged without a traceback
    expected_failures: tuple[type[Exception], ...] = ()

    def __init__(self, *, polling_interval_minutes: int, ssl_verify: bool | str | None) -> None:
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        with _clients_deferred() as local:
            super().__init__(json_logging=False, log_level="INFO", boto_level="WARNING",
                             polling_interval=polling_interval_minutes, sleep_on_delete=0,
                             ssl_verify=ssl_verify)
        self._sam_local = local  # polling works as crhelper would have it
        root.setLevel(level)
        root.handlers[:] = handlers
        self._answer_now = False
        self._stop_silently = False
        self._answer_lock = threading.Lock()
        self._answered_request: str | None = None

    # -- what the subclass says from inside its functions ----------------------------------
    def answer_now(self) -> None:
        """This run finished: answer CloudFormation now, whatever crhelper would poll for."""
        self._answer_now = True

    def keep_polling(self) -> None:
        """This run did not finish: crhelper polls (a first run) or polls again."""
        self._answer_now = False

    def stop_polling_silently(self) -> None:
        """This poll's request is over: remove the rule and answer nothing."""
        self._stop_silently = True

    def own_physical_id(self, event: Mapping[str, Any]) -> str:
        """The event's id, else one stable across updates (a new id would make
        CloudFormation delete the old resource)."""
        given = event.get("PhysicalResourceId")
        if given:
            return str(given)
        return f"{stack_name(event)}-{event.get('LogicalResourceId', 'DatabaseMigration')}"

    # -- crhelper's polling clients, built on first use -------------------------------------
    @functools.cached_property
    def _lambda_client(self) -> Any:
        return self._client("lambda")

    @functools.cached_property
    def _events_client(self) -> Any:
        return self._client("events")

    @functools.cached_property
    def _logs_client(self) -> Any:
        return self._client("logs")

    def _client(self, name: str) -> Any:
        import boto3  # noqa: PLC0415 - crhelper imported it already

        return boto3.client(name, region_name=self._region, verify=self._ssl_verify)

    # -- crhelper's private hooks -----------------------------------------------------------
    def _log_setup(self, event: Any, context: Any) -> None:
        """Logging is configured by the handler; crhelper must not touch it per event."""

    def _polling_init(self, event: Any) -> None:
        if "CrHelperPoll" not in event and self._answer_now:
            self._send_response = True
            return
        if self._stop_silently:
            self._stop_silently = False
            self._remove_polling()
            self._send_response = False
            return
        super()._polling_init(event)
        if "CrHelperPoll" in event and not self._send_response:
            # A poll that polls on: the next one gets the Data this one left (crhelper stores
            # the first run's only; one call to EventBridge, every few minutes).
            self._event["CrHelperData"] = self.Data
            self._put_targets(self._context.function_name)

    def _remove_polling(self) -> None:
        if "CrHelperRule" not in self._event:
            # A first run that fails has no poll to remove; crhelper would log three errors
            # saying so, beside the real one.
            return
        try:
            super()._remove_polling()
        except Exception as error:  # boto3's errors: the answer matters more
            logger.warning("Could not remove the poll rule (%s); its next firing will find the "
                           "request answered and stop", mask_text(str(error))[:200])

    def _wrap_function(self, func: Any) -> None:
        """crhelper's, but an expected failure (`expected_failures`: a refusal, a failed
        revision, whose reason says it all) is logged as its reason alone, without the
        traceback crhelper logs for any exception; anything else keeps it."""
        try:
            self.PhysicalResourceId = func(self._event, self._context) if func else ""
        except Exception as error:
            expected = isinstance(error, self.expected_failures)
            logger.error("%s", mask_text(str(error)), exc_info=not expected)
            self.Reason = str(error)
            self.Status = "FAILED"

    def _timeout(self) -> None:
        logger.error("The Lambda is about to time out; answering FAILED")
        self._send("FAILED", f"timeout: {self.timeout_reason}")

    def _send(self, status: str | None = None, reason: str = "", send_response: Any = None) -> None:
        with self._answer_lock:
            request = str(self.RequestId)
            if self._answered_request == request:
                logger.warning("Request %s was answered already; not answering %s again",
                               request, status or self.Status)
                return
            self._answered_request = request
        body = {
            "Status": status or self.Status,
            "PhysicalResourceId": str(self.PhysicalResourceId or self.own_physical_id(
                self._event)),
            "StackId": self.StackId,
            "RequestId": self.RequestId,
            "LogicalResourceId": self.LogicalResourceId,
            "Reason": short_reason(reason if status else str(self.Reason)),
            "Data": {k: str(v) for k, v in self.Data.items() if k in self.response_keys},
            "NoEcho": False,
        }
        logger.info("Answering CloudFormation: %s %s", body["Status"], body["Reason"])
        if not self._response_url:
            logger.error("The event has no ResponseURL; CloudFormation cannot be answered")
            return
        delivery.send_response(self._response_url, delivery.fit_response(body),
                               ssl_verify=self._ssl_verify)
