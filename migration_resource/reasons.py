"""Failure reasons for the CloudFormation console: short, state first, next step last.

crhelper keeps only the last 240 characters of a long reason, which would cut off the
state; we shorten the middle ourselves so both ends survive.
"""

from __future__ import annotations

REASON_LIMIT = 240
NOTHING_CHANGED = "; nothing was changed"
ELLIPSIS = "…"


def short_reason(message: str, limit: int = REASON_LIMIT) -> str:
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    head, marker, rest = text.partition(NOTHING_CHANGED)
    tail = ""
    if marker:
        # What follows "nothing was changed" ends with the next step: keep its last sentence.
        sentences = [s.strip() for s in rest.lstrip(".").split(". ") if s.strip()]
        next_step = sentences[-1] if sentences else ""
        tail = f"{marker}. {next_step}".rstrip()
        if next_step and not tail.endswith("."):
            tail += "."
    else:
        # No marker: keep the end (usually the next step) and the start (the state).
        tail = text[-(limit // 3):]
        head = text[: -(limit // 3)]
    if len(tail) > limit // 2:
        tail = tail[: limit // 2 - 1] + ELLIPSIS
    room = limit - len(tail) - len(ELLIPSIS)
    return head[:room].rstrip() + ELLIPSIS + tail
