"""The answer to CloudFormation: a PUT of a JSON body to the event's pre-signed ResponseURL.

This replaces crhelper's sender, whose retry loop never ends when the URL is unreachable (the
Lambda then runs until its timeout and CloudFormation waits an hour for an answer). Here every
attempt has a socket timeout, attempts are bounded, and the caller gets True/False instead of
an exception: there is nobody left to tell when CloudFormation cannot be reached.

CloudFormation rejects responses over 4 KB, so ``fit_response`` shrinks a body first.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

RESPONSE_LIMIT_BYTES = 4096
ELLIPSIS = "…"


def send_response(
    url: str,
    body: dict[str, Any],
    *,
    ssl_verify: bool | str | None = None,
    attempts: int = 5,
    timeout_seconds: float = 10,
    backoff_seconds: Sequence[float] = (1, 2, 4, 8),
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """PUT ``body`` as JSON to ``url``; True once answered 2xx, False after giving up.

    ``ssl_verify`` as in crhelper: a CA file path, False to skip verification, None/True for
    the system trust store. ``timeout_seconds`` bounds connecting and each read of one attempt.
    Between attempts it sleeps ``backoff_seconds[i]`` (the last value repeats). Network
    errors, timeouts and 5xx are retried; a 4xx is final (an expired or tampered pre-signed
    URL stays so). Never raises. The URL's query (the signature) is never logged.
    """
    try:
        payload = _serialize(body).encode()
        split = urlsplit(url)
        context = _ssl_context(ssl_verify)
    except Exception as error:  # a body, URL or CA file we cannot use: nothing to retry
        logger.error("Cannot prepare the response to CloudFormation: %s", _describe(error))
        logger.error("Giving up sending the response to CloudFormation after 0 attempts")
        return False
    shown = f"{split.scheme}://{split.netloc}{split.path}"  # without the signature
    attempts = max(1, attempts)
    made = 0
    for made in range(1, attempts + 1):
        try:
            status = _put_once(url, payload, context=context, timeout_seconds=timeout_seconds)
        except Exception as error:  # any failure is one failed attempt, never a crash
            logger.warning("Sending the response to CloudFormation (%s) failed, attempt %d of "
                           "%d: %s", shown, made, attempts, _describe(error))
        else:
            if 200 <= status < 300:
                logger.info("CloudFormation accepted the response (HTTP %d)", status)
                return True
            logger.warning("CloudFormation answered HTTP %d to the response (%s), attempt %d "
                           "of %d", status, shown, made, attempts)
            if status < 500:
                break
        if made < attempts and backoff_seconds:
            sleep(backoff_seconds[min(made - 1, len(backoff_seconds) - 1)])
    logger.error("Giving up sending the response to CloudFormation after %d attempts", made)
    return False


def _put_once(
    url: str, payload: bytes, *, context: ssl.SSLContext, timeout_seconds: float
) -> int:
    """One PUT; its HTTP status. Raises on any failure to get an answer."""
    split = urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    connection = http.client.HTTPSConnection(
        split.hostname or "", split.port, timeout=timeout_seconds, context=context
    )
    try:
        # crhelper sends an empty content-type: the URL is signed for it.
        connection.request("PUT", target, body=payload,
                           headers={"content-type": "", "content-length": str(len(payload))})
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def fit_response(body: dict[str, Any], limit: int = RESPONSE_LIMIT_BYTES) -> dict[str, Any]:
    """A copy of ``body`` whose JSON is at most ``limit`` bytes (CloudFormation's 4 KB).

    Within the limit, the body is returned unchanged (as a copy). Otherwise, in order:
    1. ``Data`` entries are dropped, largest first: outputs are a convenience, the status
       and reason are what CloudFormation needs.
    2. ``Reason`` is cut in the middle with "…": the contract puts the state first and the
       next step last, so both ends are kept and the detail in between goes.
    The other fields (Status, ids) are CloudFormation's own and are left alone; an absurdly
    long PhysicalResourceId could still exceed the limit, which nobody here can fix.
    """
    fitted = dict(body)  # only the top level and Data change: copy just those
    data = fitted.get("Data")
    if isinstance(data, dict):
        data = fitted["Data"] = dict(data)
        while data and _size(fitted) > limit:
            largest = max(data, key=lambda key: len(_serialize({key: data[key]})))
            logger.warning("Dropping output %r from the CloudFormation response (4 KB limit)",
                           largest)
            del data[largest]
    reason = fitted.get("Reason")
    if isinstance(reason, str) and reason and _size(fitted) > limit:
        # The most characters kept that still fit; found by bisection because escapes
        # (\uXXXX for non-ASCII) make serialized bytes and characters differ.
        low, high = 0, len(reason) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if _size({**fitted, "Reason": _cut_middle(reason, middle)}) <= limit:
                low = middle
            else:
                high = middle - 1
        fitted["Reason"] = _cut_middle(reason, low)
    return fitted


def _cut_middle(text: str, keep: int) -> str:
    """``keep`` characters of ``text``: its start and its end, joined by "…"."""
    head = keep - keep // 2
    tail = keep // 2
    return text[:head] + ELLIPSIS + (text[len(text) - tail:] if tail else "")


def _serialize(body: Any) -> str:
    # default=str: a stray non-JSON value in Data must not cost the answer itself
    return json.dumps(body, default=str)


def _size(body: Any) -> int:
    return len(_serialize(body).encode())


@functools.lru_cache(maxsize=4)
def _ssl_context(ssl_verify: bool | str | None) -> ssl.SSLContext:
    # Cached per container: loading the system CA store costs ~20 ms per response.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if isinstance(ssl_verify, str):
        if Path(ssl_verify).exists():
            context.load_verify_locations(cafile=ssl_verify)
        else:  # as crhelper does: warn and keep the system trust store
            logger.warning("CA file %s does not exist; using the system CA store", ssl_verify)
    elif ssl_verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
