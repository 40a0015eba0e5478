"""``conveyor.waiting``: the pauses between ledger polls, and waiting for a group.

``Client.wait`` on jobs and groups is tested through the client in test_client.py.
"""

from __future__ import annotations

import math

import pytest

from conveyor import waiting
from conveyor.errors import BadInput
from conveyor.jobs import JobState
from conveyor.ledger import GroupRecord, GroupState, JobNotFound
from conveyor.waiting import Polling, WaitTimeout, wait_for_group


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` on a clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(waiting.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(waiting.time, "sleep", clock.sleep)
    return clock


@pytest.mark.parametrize("timeout_s", [-1.0, math.nan, math.inf])
def test_a_timeout_is_seconds_of_zero_or_more(timeout_s: float) -> None:
    with pytest.raises(BadInput, match="bad timeout"):
        Polling(timeout_s, 0.05, 2.0)


def test_pauses_grow_by_half_up_to_the_cap_and_stop_at_the_deadline(clock: FakeClock) -> None:
    polling = Polling(1.0, poll_s=0.1, max_poll_s=0.3)

    pauses = 0
    while polling.pause():
        pauses += 1

    assert pauses == 5
    assert clock.sleeps == pytest.approx([0.1, 0.15, 0.225, 0.3, 0.225])
    assert clock.now == pytest.approx(101.0)
    assert not polling.pause() and len(clock.sleeps) == 5  # past it: no more sleeping


def test_without_a_timeout_the_pauses_go_on_at_the_cap(clock: FakeClock) -> None:
    polling = Polling(None, poll_s=1.0, max_poll_s=2.0)

    assert all(polling.pause() for _ in range(50))
    assert clock.sleeps[:3] == [1.0, 1.5, 2.0]
    assert set(clock.sleeps[2:]) == {2.0}


def group_record(state: GroupState, done: int = 0) -> GroupRecord:
    counts = dict.fromkeys(JobState, 0)
    counts[JobState.SUCCEEDED] = done
    return GroupRecord("G1", state, total=3, counts=counts)


class GroupReads:
    """A ledger whose ``group`` returns these records, one per read (None: pruned)."""

    def __init__(self, *records: GroupRecord | None) -> None:
        self.records = list(records)

    def group(self, group_id: str) -> GroupRecord | None:
        return self.records.pop(0)


def test_a_group_is_read_once_per_poll_until_it_finished(clock: FakeClock) -> None:
    ledger = GroupReads(group_record(GroupState.COMPLETING, 3), group_record(GroupState.FAILED))

    record = wait_for_group(ledger, group_record(GroupState.RUNNING), Polling(None, 1.0, 2.0))

    assert record.state is GroupState.FAILED
    assert ledger.records == [] and len(clock.sleeps) == 2


def test_a_group_still_running_at_the_deadline_is_named(clock: FakeClock) -> None:
    ledger = GroupReads(*[group_record(GroupState.RUNNING, 1)] * 10)

    with pytest.raises(WaitTimeout) as caught:
        wait_for_group(ledger, group_record(GroupState.RUNNING, 1), Polling(3.0, 1.0, 1.0))

    assert caught.value.open_jobs == ["G1"]
    assert str(caught.value) == "group G1 still running after 3 s: 1 of 3 job(s) done"


def test_a_group_pruned_while_waited_is_not_found(clock: FakeClock) -> None:
    with pytest.raises(JobNotFound, match="left the ledger"):
        wait_for_group(GroupReads(None), group_record(GroupState.RUNNING), Polling(None, 1.0, 1.0))
