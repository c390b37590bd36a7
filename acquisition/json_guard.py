"""Checks on a JSON payload from outside (an MQTT command, a DUT report) before and after
it is parsed: size and nesting first (json recurses once per level and fails with
RecursionError near 1000), then no NaN, infinity or lone surrogate anywhere in it.

Each refusal is a PayloadError whose `code` goes into the reply: `too_large`, `bad_json`,
`too_deep`, `not_finite`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class PayloadError(Exception):
    """A payload refused; `code` is machine-readable, `message` names what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_json(payload: bytes | str, max_bytes: int, max_depth: int, noun: str) -> Any:
    """The JSON value of a payload, checked for size and depth before it is parsed; `noun`
    ("a command") names what the payload should have been in the messages."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if len(data) > max_bytes:
        raise PayloadError("too_large", f"payload of {len(data)} bytes; {noun} has at "
                                        f"most {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PayloadError("bad_json", f"payload is not UTF-8 text: {error}") from None
    if _nested_too_deep(text, max_depth):
        raise PayloadError("too_deep", f"payload nested more than {max_depth} levels deep "
                                       "(arrays and objects)")
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise PayloadError("bad_json", f"payload is not JSON: {error}") from None
    return raw


# An escape pair (so that \" stays inside its string), a quote, or a bracket: one pass, no
# backtracking, whatever the payload.
_JSON_STRUCTURE = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _nested_too_deep(text: str, max_depth: int) -> bool:
    """Whether [ and { nest deeper than `max_depth` in `text`, outside strings."""
    depth = 0
    in_string = False
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def check_values(value: Any, path: str, noun: str) -> None:
    """Refuse NaN and infinities (json reads NaN, Infinity and 1e999 as floats) and
    strings that are not text (lone surrogates, which the store cannot hold)."""
    where = path or "payload"
    if isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        raise PayloadError("not_finite", f"{where}: {name} is not a number {noun} may "
                                         "carry (NaN, Infinity and numbers as large as 1e999 "
                                         "are refused)")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, f"{path}.{index}" if path else str(index), noun)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"a key in {where}")
            check_values(item, f"{path}.{key}" if path else key, noun)


def _check_text(text: str, where: str) -> None:
    if not is_text(text):
        raise PayloadError("bad_json", f"{where}: a lone surrogate escape (\\ud800-\\udfff) "
                                       "is not text")


def is_text(text: str) -> bool:
    """Whether `text` can be stored as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
