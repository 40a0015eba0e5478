"""``conveyor.waiting``: the pauses between ledger polls, and waiting for a group.

``Client.wait`` on jobs and groups is tested here too, through a client (the ``client``
fixture is in conftest.py).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor import waiting
from conveyor.client import Client
from conveyor.errors import BadInput, ConveyorError
from conveyor.jobs import JobState
from conveyor.ledger import GroupRecord, GroupState, JobNotFound, JobRecord
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


def test_wait_returns_the_records_in_the_order_given(client: Client) -> None:
    jobs = [client.submit(task="noop") for _ in range(3)]
    for job in jobs:
        client.ledger.record(job.job_id, JobState.SUCCEEDED, attempt=1, result={"n": 1})

    records = client.wait([jobs[2].job_id, jobs[0].job_id.lower(), jobs[1].job_id[:22]])

    assert [r.job_id for r in records] == [jobs[2].job_id, jobs[0].job_id, jobs[1].job_id]
    assert all(isinstance(r, JobRecord) and r.result == {"n": 1} for r in records)


def test_wait_polls_only_the_open_jobs_with_one_query_each_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [client.submit(task="noop") for _ in range(3)]
    ledger = client.ledger
    ledger.record(jobs[0].job_id, JobState.FAILED, attempt=1, error="bad")
    polls: list[list[str]] = []
    real = ledger.open_jobs

    def open_jobs(job_ids: Any) -> list[str]:
        ids = list(job_ids)
        polls.append(ids)
        if len(polls) == 2:
            ledger.record(jobs[1].job_id, JobState.SUCCEEDED, attempt=1)
        if len(polls) == 3:
            ledger.cancel(jobs[2].job_id)
        return real(ids)

    monkeypatch.setattr(ledger, "open_jobs", open_jobs)

    records = client.wait([job.job_id for job in jobs], poll_s=0.001)

    assert [r.state for r in records] == [JobState.FAILED, JobState.SUCCEEDED, JobState.CANCELLED]
    open_ids = {jobs[1].job_id, jobs[2].job_id}
    assert [set(poll) for poll in polls] == [open_ids, open_ids, {jobs[2].job_id}]


def test_wait_gives_up_with_a_timeout_error_naming_the_open_jobs(client: Client) -> None:
    done = client.submit(task="noop")
    client.ledger.record(done.job_id, JobState.SUCCEEDED, attempt=1)
    waiting = client.submit(task="noop")

    with pytest.raises(TimeoutError) as caught:
        client.wait([done.job_id, waiting.job_id], timeout_s=0.2, poll_s=0.01)

    error = caught.value
    assert isinstance(error, WaitTimeout) and isinstance(error, ConveyorError)
    assert error.open_jobs == [waiting.job_id]
    assert error.exit_code == 124
    assert f"1 of 2 job(s) still open after 0.2 s: {waiting.job_id}" in str(error)


def test_wait_takes_a_group_id_and_returns_its_jobs_then_its_completion(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a group of two jobs with a completion, and a plain job already done
    group = client.submit_group([None, None], task="noop", completion={"task": "noop"})
    plain = client.submit(task="noop")
    ledger = client.ledger
    ledger.record(plain.job_id, JobState.SUCCEEDED, attempt=1)
    first, second = (job.job_id for job in group.jobs)
    assert group.completion_job_id is not None
    polls: list[str] = []
    real = ledger.group

    def read_group(group_id: str) -> Any:
        # Each poll reads the group once; the jobs and then the completion finish meanwhile
        polls.append(group_id)
        if len(polls) == 2:
            ledger.record(first, JobState.SUCCEEDED, attempt=1)
            ledger.record(second, JobState.SUCCEEDED, attempt=1)
        if len(polls) == 3:
            ledger.record(group.completion_job_id, JobState.SUCCEEDED, attempt=1)
        return real(group_id)

    monkeypatch.setattr(ledger, "group", read_group)
    opened: list[list[str]] = []
    real_open = ledger.open_jobs
    monkeypatch.setattr(ledger, "open_jobs", lambda ids: opened.append(list(ids)) or real_open(ids))

    # When the group is waited for by its id (a prefix, any case), after the plain job
    records = client.wait([plain.job_id, group.group_id[:20].lower()], poll_s=0.001)

    # Then it stands for its jobs, oldest first, then its completion; all succeeded
    assert [r.job_id for r in records] == [plain.job_id, first, second, group.completion_job_id]
    assert all(r.state is JobState.SUCCEEDED for r in records)
    assert records[-1].group_completion
    # And each poll was one group read, with no job query (the plain job was done)
    assert polls[1:] == [group.group_id] * (len(polls) - 1)
    assert opened == []


def test_wait_on_a_group_times_out_naming_it_and_an_unknown_id_names_neither(
    client: Client,
) -> None:
    group = client.submit_group([None], task="noop")

    with pytest.raises(WaitTimeout) as caught:
        client.wait([group.group_id], timeout_s=0.05, poll_s=0.01)
    assert caught.value.open_jobs == [group.group_id]

    client.ledger.record(group.jobs[0].job_id, JobState.FAILED, attempt=1, error="bad")
    records = client.wait([group.group_id])
    assert [(r.job_id, r.state) for r in records] == [(group.jobs[0].job_id, JobState.FAILED)]
    assert client.group(group.group_id).state.value == "failed"

    with pytest.raises(JobNotFound, match="nor a group"):
        client.wait(["NOSUCHJOB"])
