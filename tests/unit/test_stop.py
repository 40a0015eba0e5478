"""Stop policies and ``--until-empty``'s exit evidence (stop.py), with fake loop states and a
real worker loop; the shutdown signal."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import QueueNotFound, StorageError, TransientQueueError
from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger, default_ledger_url, open_ledger
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.queues.messages import Outgoing, Received
from conveyor.settings import EXIT_OK, Settings
from conveyor.stop import (
    OPEN_STATES,
    AnyOf,
    LoopState,
    MaxIdle,
    MaxJobs,
    RunForever,
    Shutdown,
    UntilEmpty,
    open_job_count,
    policy_from_settings,
)
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker

SQS_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"


class Calls:
    """A count source that says how often it was asked (requests cost money on SQS)."""

    def __init__(self, *values: int | Exception) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> int:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        if isinstance(value, Exception):
            raise value
        return value


def state(**changes: Any) -> LoopState:
    """A state after an empty round; SQS-like (approximate counts) unless changed."""
    values: dict[str, Any] = {
        "rounds": 1,
        "jobs": 1,
        "last_received": 0,
        "idle_s": 0.0,
        "pending": lambda: 0,
        "exact_counts": False,
        "open_jobs": None,
    }
    values.update(changes)
    return LoopState(**values)


def rounds_until_stop(policy: UntilEmpty, make: Callable[[], LoopState], limit: int = 10) -> int:
    """How many empty rounds in a row the policy waits before it stops (limit+1: never)."""
    assert not policy.should_stop(dataclasses.replace(make(), rounds=0))
    for round_ in range(1, limit + 1):
        if policy.should_stop(make()):
            return round_
    return limit + 1


# --- exact counts (SQLite, memory) ---------------------------------------------------------


def test_exact_counts_stop_after_one_empty_receive_with_nothing_pending() -> None:
    never_asked = Calls(5)

    stops = rounds_until_stop(
        UntilEmpty(empty_polls=3), lambda: state(exact_counts=True, open_jobs=never_asked)
    )

    assert stops == 1
    assert never_asked.calls == 0  # exact counts need no ledger (stale records cannot hold it)


def test_exact_counts_wait_while_anything_is_pending_or_was_just_received() -> None:
    policy = UntilEmpty()

    assert not policy.should_stop(state(rounds=0, exact_counts=True))
    assert not policy.should_stop(state(exact_counts=True, pending=lambda: 1))
    assert not policy.should_stop(state(exact_counts=True, last_received=2))
    assert policy.should_stop(state(exact_counts=True))
    assert policy.evidence == "an empty receive, then exact queue counts of 0"


def test_the_counts_are_not_read_while_messages_keep_coming() -> None:
    pending = Calls(0)
    policy = UntilEmpty()

    for _ in range(5):
        assert not policy.should_stop(state(last_received=10, pending=pending))

    assert pending.calls == 0


# --- approximate counts (SQS) --------------------------------------------------------------


def test_approximate_counts_with_a_ledger_of_no_open_job_stop_after_one_empty_receive() -> None:
    policy = UntilEmpty(empty_polls=3)

    assert rounds_until_stop(policy, lambda: state(open_jobs=lambda: 0)) == 1
    assert policy.evidence == "an empty receive, queue counts of 0 and no open job in the ledger"


def test_approximate_counts_with_open_jobs_in_the_ledger_wait_the_empty_polls() -> None:
    # Stale records, or another queue's jobs in a shared ledger: the counts must settle.
    assert rounds_until_stop(UntilEmpty(empty_polls=3), lambda: state(open_jobs=lambda: 2)) == 3


def test_approximate_counts_without_a_ledger_wait_the_empty_polls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor.stop"):
        stops = rounds_until_stop(UntilEmpty(empty_polls=2), lambda: state(open_jobs=None))

    assert stops == 2
    assert "no ledger vouches for its approximate counts: exiting after 2" in caplog.text


def test_a_ledger_that_cannot_be_read_counts_as_no_evidence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = Calls(StorageError("the ledger at postgresql://db/conveyor is unreachable"))

    with caplog.at_level(logging.INFO, logger="conveyor.stop"):
        stops = rounds_until_stop(UntilEmpty(empty_polls=3), lambda: state(open_jobs=broken))

    assert stops == 3
    assert "cannot count the ledger's open jobs: the ledger at" in caplog.text
    assert "the ledger cannot be read: exiting after 3 empty receives" in caplog.text


def test_the_ledger_closing_its_last_job_ends_the_wait_early() -> None:
    policy = UntilEmpty(empty_polls=5)
    ledger = Calls(1, 1, 0)  # another worker's job finishes during our second empty poll

    stops = rounds_until_stop(policy, lambda: state(open_jobs=ledger))

    assert stops == 3


def test_a_ledger_with_no_open_job_does_not_outvote_the_queue_counts() -> None:
    # A message the ledger does not know (a submit that died before recording it), or
    # counts still settling after our own deletes: keep polling.
    policy = UntilEmpty(empty_polls=2)
    ledger = Calls(0)

    assert not policy.should_stop(state(pending=lambda: 1, open_jobs=ledger))
    assert not policy.should_stop(state(pending=lambda: 1, open_jobs=ledger))
    assert ledger.calls == 0
    assert policy.should_stop(state(open_jobs=ledger))


def test_a_message_or_a_pending_count_restarts_the_run_of_empty_polls() -> None:
    policy = UntilEmpty(empty_polls=2)
    stale = Calls(4)

    assert not policy.should_stop(state(rounds=0, open_jobs=stale))
    assert not policy.should_stop(state(open_jobs=stale))
    assert not policy.should_stop(state(open_jobs=stale, pending=lambda: 1))  # back in flight
    assert not policy.should_stop(state(open_jobs=stale))
    assert not policy.should_stop(state(open_jobs=stale, last_received=1))
    assert not policy.should_stop(state(open_jobs=stale))
    assert policy.should_stop(state(open_jobs=stale))
    assert policy.evidence == "2 empty receives in a row with queue counts of 0"


def test_the_fallback_is_explained_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor.stop"):
        rounds_until_stop(UntilEmpty(empty_polls=3), lambda: state(open_jobs=lambda: 7))

    explained = [r for r in caplog.records if "open job(s) the queue does not show" in r.message]
    assert len(explained) == 1
    assert "the ledger has 7 open job(s)" in explained[0].message
    assert caplog.records[-1].message.startswith("the queue is drained: 3 empty receives")


def test_a_failed_count_is_no_evidence_and_a_missing_queue_ends_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = UntilEmpty(empty_polls=1)
    flaky = Calls(TransientQueueError("GetQueueAttributes throttled"), 0)

    with caplog.at_level(logging.WARNING, logger="conveyor.stop"):
        assert not policy.should_stop(state(exact_counts=True, pending=flaky))
    assert "cannot count the queue's messages: GetQueueAttributes throttled" in caplog.text
    assert policy.should_stop(state(exact_counts=True, pending=flaky))

    gone = Calls(QueueNotFound("the queue jobs does not exist"))
    with pytest.raises(QueueNotFound):
        UntilEmpty().should_stop(state(pending=gone))


# --- helpers and composition --------------------------------------------------------------


def test_open_job_count_sums_queued_running_and_retrying(tmp_path: Path) -> None:
    jobs = [Job(task="t", input=f"inputs/{n}.txt") for n in range(6)]
    with open_ledger(default_ledger_url(tmp_path)) as ledger:
        ledger.record_queued(jobs)
        ledger.record(jobs[1].job_id, JobState.RUNNING, attempt=1)
        ledger.record(jobs[2].job_id, JobState.RETRYING, attempt=1)
        ends = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
        for job, end in zip(jobs[3:], ends, strict=True):
            ledger.record(job.job_id, end, attempt=1)

        assert open_job_count(ledger) == 3
        assert set(OPEN_STATES) == {s for s in JobState if not s.terminal}


def test_policy_from_settings_keeps_until_empty_beside_the_other_policies() -> None:
    assert isinstance(policy_from_settings(Settings()), RunForever)
    alone = policy_from_settings(Settings(until_empty=True, empty_polls=4))
    assert isinstance(alone, UntilEmpty) and alone.empty_polls == 4
    both = policy_from_settings(Settings(until_empty=True, max_jobs=2))
    assert isinstance(both, AnyOf)
    assert [type(p) for p in both.policies] == [UntilEmpty, MaxJobs]


# --- the real worker loop ------------------------------------------------------------------


class CountingQueue(MemoryQueue):
    """A memory queue that counts empty receives, and can pose as SQS (approximate counts)."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if url is not None:
            self.url = url
        self._remote = url is not None and url.startswith(("http://", "https://"))
        self.empty_receives = 0

    @property
    def remote(self) -> bool:
        return self._remote

    def receive(
        self, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Received]:
        received = super().receive(max_messages, wait_s, visibility_timeout_s)
        self.empty_receives += not received
        return received


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(default_ledger_url(tmp_path / "storage")) as opened:
        yield opened


def drain(tmp_path: Path, queue: CountingQueue, ledger: Ledger, jobs: int) -> int:
    """Submit ``jobs`` jobs (sent, then recorded queued), run an until-empty worker; the
    number of empty receives it made after the last message."""
    root = tmp_path / "storage"
    (root / "inputs").mkdir(parents=True, exist_ok=True)
    registry = TaskRegistry()

    @registry.task("noop")
    def noop(ctx: TaskContext) -> None:
        return None

    sent = [Job(task="noop", input=None) for _ in range(jobs)]
    for job in sent:
        queue.send(Outgoing(job.to_json()))
    ledger.record_queued(sent)
    settings = Settings(storage=root, wait_s=0, until_empty=True, empty_polls=3)
    worker = Worker(queue, settings, ledger=ledger, registry=registry, observers=[])
    assert worker.run() == EXIT_OK
    records = ledger.get_many(job.job_id for job in sent)
    assert len(records) == jobs
    assert {record.state for record in records.values()} == {JobState.SUCCEEDED}
    return queue.empty_receives


def test_a_worker_on_an_exact_queue_exits_after_one_empty_receive(
    tmp_path: Path, ledger: Ledger
) -> None:
    queue = CountingQueue(clock=ManualClock())

    assert drain(tmp_path, queue, ledger, jobs=3) == 1


def test_a_worker_on_sqs_exits_after_one_empty_receive_when_the_ledger_agrees(
    tmp_path: Path, ledger: Ledger
) -> None:
    queue = CountingQueue(SQS_URL, clock=ManualClock())

    assert drain(tmp_path, queue, ledger, jobs=3) == 1


def test_a_worker_on_sqs_waits_the_empty_polls_when_the_ledger_has_open_jobs(
    tmp_path: Path, ledger: Ledger
) -> None:
    ledger.record_queued([Job(task="noop", input=None)])  # its message was purged long ago
    queue = CountingQueue(SQS_URL, clock=ManualClock())

    assert drain(tmp_path, queue, ledger, jobs=3) == 3


# --- other policies, and the shutdown signal -------------------------------------------


def test_until_empty_needs_consecutive_empty_polls_with_nothing_pending() -> None:
    policy = UntilEmpty(empty_polls=2)

    assert not policy.should_stop(state(rounds=0))
    assert not policy.should_stop(state())
    assert not policy.should_stop(state(pending=lambda: 1))  # a job in flight elsewhere
    assert not policy.should_stop(state())
    assert not policy.should_stop(state(last_received=3))
    assert not policy.should_stop(state())
    assert policy.should_stop(state())


def test_max_idle_and_max_jobs_combined() -> None:
    policy = AnyOf([MaxJobs(5), MaxIdle(60)])

    assert not policy.should_stop(state(jobs=4, idle_s=59))
    assert policy.receive_limit(state(jobs=4)) == 1
    assert policy.should_stop(state(jobs=5))
    assert policy.should_stop(state(jobs=0, idle_s=60))


def test_a_signal_only_sets_the_stop_request() -> None:
    import os
    import signal

    shutdown = Shutdown()
    before = signal.getsignal(signal.SIGTERM)
    with shutdown.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.wait(10)  # the handler runs between two bytecodes

    assert shutdown.signals == 1
    assert shutdown.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
