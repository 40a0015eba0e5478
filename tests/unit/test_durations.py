"""Durations as people write them (durations.py): `ledger prune` and `dlq purge` read them."""

from __future__ import annotations

import pytest

from conveyor.durations import format_duration, parse_duration_s
from conveyor.ledger import DEFAULT_RETENTION_S

# --- durations for ``conveyor ledger prune`` ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400.0),
        ("12h", 43200.0),
        ("90m", 5400.0),
        ("45s", 45.0),
        ("7", 7.0),
        ("1.5h", 5400.0),
        (" 2D ", 172800.0),
        ("0", 0.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30 days", "-1d", "1y", "1e3s", "1h30m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_s(text)


def test_durations_format_in_the_largest_unit() -> None:
    assert format_duration(DEFAULT_RETENTION_S) == "30d"
    assert [format_duration(s) for s in (7200, 5400, 90, 0, 1.5)] == [
        "2h",
        "90m",
        "90s",
        "0s",
        "1.5s",
    ]
