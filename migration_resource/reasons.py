"""Failure reasons for the CloudFormation console: short, state first, next step last.

crhelper keeps only the last 240 characters of a long reason, which would cut off the
state; we shorten the middle ourselves so both ends survive.
"""

from __future__ import annotations

import re

from migration_resource.row_values import hide_row_values

REASON_LIMIT = 240
NOTHING_CHANGED = "; nothing was changed"
ELLIPSIS = "…"


# "revision a41c7e9d2b58 (20261206_0900_a41c7e9d2b58_unique_display_names.py)": the file's
# name repeats the revision id; the console needs the room more than the name.
_REVISION_FILE = re.compile(r"(\brevision [0-9A-Za-z_]+) \([^()\s]+\.py\)")


def short_reason(message: str, limit: int = REASON_LIMIT) -> str:
    text = hide_row_values(" ".join(message.split()))
    if len(text) <= limit:
        return text
    text = _REVISION_FILE.sub(r"\1", text)
    if len(text) <= limit:
        return text
    head, marker, rest = text.partition(NOTHING_CHANGED)
    if marker and rest.startswith(" but "):
        # "nothing was changed but its row in migration_audit": one statement, kept whole
        clause, dot, rest = rest.partition(". ")
        marker, rest = marker + clause, dot + rest
    if marker:
        tail = _after_nothing_changed(marker, rest, limit)
    else:
        # No marker: keep the end (usually the next step) and the start (the state).
        tail = text[-(limit // 3):]
        head = text[: -(limit // 3)]
    room = limit - len(tail) - len(ELLIPSIS)
    return head[:room].rstrip() + ELLIPSIS + tail


def _after_nothing_changed(marker: str, rest: str, limit: int) -> str:
    """The marker and the sentences after it that matter most: the last, then earlier ones.

    What follows "nothing was changed" is the next step, sometimes followed by where to read
    more (`See docs/RUNBOOK.md#...`): both are kept while they fit in three quarters of the limit,
    so the detail in the middle is what gets shortened.
    """
    sentences = [s.strip() for s in rest.lstrip(".").split(". ") if s.strip()]
    kept = sentences[-1:]
    for sentence in reversed(sentences[:-1]):
        if len(f"{marker}. {'. '.join([sentence, *kept])}") > limit * 3 // 4:
            break
        kept.insert(0, sentence)
    if not kept:
        return marker
    tail = f"{marker}. {'. '.join(kept)}"
    if len(kept) == 1 and len(tail) > limit // 2:
        # One long sentence gets half the limit, as the state before it needs room too.
        tail = tail[: limit // 2 - 1] + ELLIPSIS
    return tail
