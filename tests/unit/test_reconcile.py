"""Reconciling the dead-letter queue with the ledger (reconcile.py): what is recorded, and
what an idle worker's watch costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.jobs import Job, JobState
from conveyor.ledger import LedgerEvent, default_ledger_url, open_ledger
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.queues.messages import DeadLetter, Outgoing
from conveyor.reconcile import DeadLetterWatch, reconcile_dead_letters

VISIBILITY_S = 30


def test_reconciling_leaves_a_job_that_succeeded_alone(tmp_path: Path) -> None:
    ledger = open_ledger(default_ledger_url(tmp_path))
    # Given a job that succeeded (a duplicate delivery published it) whose message was
    # also dead-lettered
    job = Job(task="upper", input="inputs/a.txt", output="outputs/a.txt")
    ledger.record_many([LedgerEvent.for_job(job, JobState.SUCCEEDED, attempt=3)])
    letter = DeadLetter("m1", job.to_json(), 3, "received 3 times (max_receive_count)")

    assert reconcile_dead_letters([letter], ledger) == []
    record = ledger.get(job.job_id)
    assert record is not None and record.state is JobState.SUCCEEDED
    unknown = Job(task="upper", input="inputs/x", output="outputs/x")
    letter = DeadLetter("m2", unknown.to_json(), 2, None)
    assert reconcile_dead_letters([letter, letter], ledger) == [unknown.job_id]
    record = ledger.get(unknown.job_id)
    assert record is not None
    assert (record.state, record.attempts, record.task) == (JobState.FAILED, 2, "upper")
    assert record.error is not None
    assert "dead-lettered after 2 receives; last error: none recorded" in record.error
    ledger.close()


class _CountingQueue(MemoryQueue):
    """A memory queue posing as a remote one, counting the calls a dead-letter check makes."""

    tracks_reconciliation = False  # like SQS: no "reconciled" mark on dead letters
    remote = True  # type: ignore[assignment]  # like SQS: every call is a billed request

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(visibility_timeout_s=VISIBILITY_S, max_receive_count=1, clock=clock)
        self.url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
        self.calls: dict[str, int] = {"stats": 0, "dead_letters": 0}

    def stats(self) -> Any:
        self.calls["stats"] += 1
        return super().stats()

    def dead_letters(self, limit: int = 100) -> Any:
        self.calls["dead_letters"] += 1
        return super().dead_letters(limit)


def test_an_idle_worker_on_sqs_looks_at_the_dead_letter_queue_once_after_work_only(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    queue = _CountingQueue(clock)
    ledger = open_ledger(default_ledger_url(tmp_path))
    watch = DeadLetterWatch(queue, ledger, worker="w", clock=clock)
    # Ten idle minutes of 20 s long polls: no request beyond the polls (3 a minute).
    for _ in range(30):
        watch.poll()
        clock.advance(20)
    assert queue.calls == {"stats": 0, "dead_letters": 0}

    job = Job(task="upper", input="inputs/a", output="outputs/a")
    queue.send(Outgoing(job.to_json()))
    queue.receive(1, 0)  # its worker dies; the next receive dead-letters it
    watch.note_activity()
    clock.advance(VISIBILITY_S + 1)
    assert queue.receive(1, 0) == []
    clock.advance(60)

    assert watch.poll() == [job.job_id]
    # Idle again: ten more minutes cost nothing, and the way out lists nothing new.
    for _ in range(30):
        assert watch.poll() == []
        clock.advance(20)
    assert watch.poll(final=True) == []
    assert queue.calls == {"stats": 2, "dead_letters": 1}
    ledger.close()
