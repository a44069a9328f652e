"""What a server error may say outside the engine: names, never a row's values.

PostgreSQL's DETAIL lines quote the row that broke a constraint: `Key (email)=(ceo@corp.example)
already exists`, `Failing row contains (7, ceo@corp.example, null)`. The constraint, table and
column names tell an operator what to fix; the values are customer data, and must not reach a
CloudFormation reason (stack events are readable by anyone with console access) or an admin
answer. `hide_row_values` keeps the names and replaces each quoted value with `…`. The full
error, values included, stays in the function's own log.
"""

from __future__ import annotations

import re

HIDDEN = "…"
# `Key (columns)=(values)` up to the words PostgreSQL puts after it; a value may hold
# parentheses, so the end is the last `)` before those words.
_KEY = re.compile(
    r"(\bKey \((?:[^()]|\([^()]*\))*\)=\().*?(\)(?= (?:already exists|is not present|is still "
    r"referenced|conflicts with|is duplicated|violates)))", re.S)
_CONFLICTING_KEY = re.compile(r"(conflicts with existing key \((?:[^()]|\([^()]*\))*\)=\().*"
                              r"?(\)\.?(?= \[SQL:|\s*$))", re.S)
# `Failing row contains (...)`, `Partition key of the failing row contains (...)`: to the end
# of the sentence (before SQLAlchemy's `[SQL: ...]`, or the end of the text).
_ROW = re.compile(r"(\bfailing row contains \().*?(\)\.?(?= \[SQL:|\s*$|\n))", re.I | re.S)


# Errors that quote the value they could not take, outside any DETAIL: a type conversion
# (`invalid input syntax for type integer: "ceo@corp.example"`), an enum, a range, a date.
_QUOTED_INPUT = re.compile(
    r'((?:invalid input syntax for type [^:"]+|invalid input value for enum [^:"]+|'
    r'date/time field value out of range|invalid input syntax|malformed [^:"]+ literal|'
    r'invalid byte sequence for encoding "[^"]*"): )"(?:[^"\\]|\\.)*(")', re.I)
_OUT_OF_RANGE = re.compile(r'(\bvalue )"(?:[^"\\]|\\.)*(" is out of range)', re.I)


def hide_row_values(text: str) -> str:
    """The text with the row values of any PostgreSQL error it holds replaced by `…`: a
    DETAIL's keys and rows, and the value a conversion could not take."""
    for pattern in (_KEY, _CONFLICTING_KEY, _ROW):
        text = pattern.sub(rf"\1{HIDDEN}\2", text)
    text = _QUOTED_INPUT.sub(rf'\1"{HIDDEN}\2', text)
    return _OUT_OF_RANGE.sub(rf'\1"{HIDDEN}\2', text)
