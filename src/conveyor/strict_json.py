"""JSON with limits: parse_json() rejects deep nesting (before parsing), duplicate keys and
NaN; canonical_json() writes equal values as equal text."""

from __future__ import annotations

import json
import re
from typing import Any

from conveyor.errors import BadMessage

#: Deepest nesting of arrays and objects accepted, the envelope itself counting as 1.
MAX_DEPTH = 32

# One regex match per character that matters to nesting, so the depth scan is linear.
_NESTING_CHARS = re.compile(r'["\\\[\]{}]')


def canonical_json(value: object) -> str:
    """Compact JSON with sorted keys and ASCII only: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def parse_json(text: str, *, what: str, max_depth: int = MAX_DEPTH) -> object:
    """``json.loads`` that rejects deep nesting (before parsing), duplicate keys and NaN.

    Raises:
        BadMessage: the text is not strict JSON or nests deeper than ``max_depth``.
    """
    if _too_deep(text, max_depth):
        raise BadMessage(f"bad {what}: nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"bad {what}: not valid JSON ({exc})") from None


def _too_deep(text: str, max_depth: int) -> bool:
    """Whether arrays/objects nest deeper than ``max_depth``, brackets in strings aside."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # cannot nest deeper than it has brackets: the common, fast case
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _NESTING_CHARS.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
