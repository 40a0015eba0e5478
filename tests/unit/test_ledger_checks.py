"""What the ledger's public methods check: events, cursors, id prefixes and writer ids."""

from __future__ import annotations

import math

import pytest

from conveyor.errors import BadInput
from conveyor.jobs import JobState
from conveyor.ledger import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    JobRecord,
    LedgerEvent,
    check_writer_id,
    job_sql,
    new_writer_id,
    state_rank,
)
from conveyor.ledger.checks import check_event, check_prefix, parse_cursor

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


# --- checking events -------------------------------------------------------------------------


def test_check_event_resolves_the_time_and_the_rank() -> None:
    row = check_event(LedgerEvent("J1", R, 2, worker="w"), now=123.5)

    assert (row.at, row.rank, row.attempt, row.worker) == (123.5, state_rank(R, 2), 2, "w")
    assert check_event(LedgerEvent("J1", S, 1, at=7), now=9).at == 7.0


@pytest.mark.parametrize(
    "event",
    [
        LedgerEvent("bad id", Q),
        LedgerEvent("", Q),
        LedgerEvent("x" * 65, Q),
        LedgerEvent("J", R, -1),
        LedgerEvent("J", R, True),
        LedgerEvent("J", R, 1.0),  # type: ignore[arg-type]
        LedgerEvent("J", Q, at=-1),
        LedgerEvent("J", Q, at=math.inf),
        LedgerEvent("J", Q, seed=-1),
        LedgerEvent("J", Q, seed=2**63),
        LedgerEvent("J", Q, seed=True),
        LedgerEvent("J", R, 1, redrive=True),
        LedgerEvent("J", "nope"),  # type: ignore[arg-type]
    ],
)
def test_check_event_refuses_bad_events(event: LedgerEvent) -> None:
    with pytest.raises((BadInput, ValueError)):
        check_event(event, now=1.0)


def test_check_event_cuts_long_errors_and_results_and_cleans_text() -> None:
    long = check_event(LedgerEvent("J", F, 1, error="e" * (MAX_ERROR_CHARS * 2)), now=1)
    big = check_event(LedgerEvent("J", S, 1, result={"b": "x" * MAX_RESULT_BYTES}), now=1)
    odd = check_event(LedgerEvent("J", F, 1, error="a\x00b\udcff", source="s\x00"), now=1)
    compact = check_event(LedgerEvent("J", S, 1, result={"a": [1, None], "p": {1, 2}}), now=1)

    assert long.error == "e" * MAX_ERROR_CHARS + "..."
    cut = len('{"b":""}') + MAX_RESULT_BYTES
    assert big.result_json == '{"truncated_bytes":' + str(cut) + "}"
    assert (odd.error, odd.source) == ("a\ufffdb?", "s\ufffd")
    assert compact.result_json == '{"a":[1,null],"p":"{1, 2}"}'


# --- ids, cursors, URLs ----------------------------------------------------------------------


def test_cursor_round_trips_and_bad_cursors_are_refused() -> None:
    record = JobRecord("J-1_a", S, 1, updated_at=1_700_000_000.123456789)
    assert parse_cursor(record.cursor) == (1_700_000_000.123456789, "J-1_a")
    for bad in ("", "/", "1.0", "1.0/", "x/J", "inf/J", "nan/J", "1.0/J 1", "1.0/" + "J" * 65):
        with pytest.raises(BadInput):
            parse_cursor(bad)


def test_prefixes_are_upper_cased_and_checked() -> None:
    assert check_prefix("01hx-a_b") == "01HX-A_B"
    with pytest.raises(BadInput):
        check_prefix("no/slash")
    assert job_sql.prefix_bounds("01HX") == ("01HX", "01HY")
    assert job_sql.prefix_bounds("A_") == ("A_", "A`")
    low, high = job_sql.prefix_bounds("AB-")
    assert low <= "AB-Z9" < high and not low <= "AB." < high


def test_writer_ids() -> None:
    assert check_writer_id("host-1.worker_2") == "host-1.worker_2"
    for bad in ("", ".hidden", "has space", "x" * 101, "a/b"):
        with pytest.raises(BadInput):
            check_writer_id(bad)
    mine = new_writer_id()
    assert check_writer_id(mine) == mine
    assert mine != new_writer_id()
