"""Durations as people write them: ``30d``, ``12h``, ``90m``, ``45s`` or plain seconds
(``ledger prune --older-than``, ``dlq purge --older-than``, the ledger's retention)."""

from __future__ import annotations

import math
import re

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", re.IGNORECASE)


def parse_duration_s(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s`` or a plain number of seconds.

    Raises:
        ValueError: it is none of those.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}: use a number with s, m, h or d (e.g. 30d)")
    seconds = float(match.group(1)) * _UNITS_S[match.group(2).lower() or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"bad duration {text!r}: too large")
    return seconds


def format_duration(seconds: float) -> str:
    """``30d`` for 2,592,000 s: the largest unit that divides it."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS_S[unit] == 0:
            return f"{seconds / _UNITS_S[unit]:g}{unit}"
    return f"{seconds:g}s"
