"""``conveyor.submission``: inputs copied, messages sent, jobs recorded, a batch at a
time; stopped cleanly by a signal or a failed send."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from conveyor.client import Client
from conveyor.errors import TransientQueueError
from conveyor.jobs import Job, JobState
from conveyor.queues.base import Queue
from conveyor.queues.messages import Outgoing
from conveyor.settings import settings_from_env
from conveyor.submission import SubmitInterrupted
from conveyor.task_registry import TaskRegistry
from tests.unit.client_helpers import files, input_dirs, queued


def test_submit_copies_the_input_queues_and_records_the_job(client: Client, tmp_path: Path) -> None:
    (source,) = files(tmp_path / "work", 1)

    job = client.submit(source, task="noop", params={"n": 5}, seed=42)

    assert (job.task, job.params, job.seed) == ("noop", {"n": 5}, 42)
    assert job.input == f"inputs/{job.job_id}/in-0.txt"
    assert job.output == f"outputs/{job.job_id}/in-0.txt"
    assert (client.storage.root / job.input).read_text() == "file 0\n"
    assert [sent.job_id for sent in queued(client.queue)] == [job.job_id]
    record = client.get(job.job_id)
    assert (record.state, record.source, record.seed) == (JobState.QUEUED, str(source), 42)


def test_a_job_without_input_carries_only_parameters(client: Client) -> None:
    plain = client.submit(task="noop", params={"url": "https://example.com"})
    named = client.submit(task="noop", output="reports/one.txt")

    assert (plain.input, plain.output, plain.params) == (None, None, {"url": "https://example.com"})
    assert (named.input, named.output) == (None, "reports/one.txt")
    assert client.get(plain.job_id).source is None


def test_params_over_the_queues_limit_are_claim_checked(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queue that carries less than the claim-check threshold
    monkeypatch.setattr(client.queue, "max_message_bytes", 2000)
    # When a job's params would make its message larger, and another's would not
    big = client.submit(task="noop", params={"blob": "x" * 3000})
    small = client.submit(task="noop", params={"blob": "x" * 100})
    # Then only the first message carries a claim check instead of its params
    sent = {job.job_id: job for job in queued(client.queue)}
    assert sent[big.job_id].params_ref is not None
    assert sent[big.job_id].params == {}
    assert sent[small.job_id].params_ref is None


def test_sigint_stops_the_submit_before_its_next_batch(client: Client, tmp_path: Path) -> None:
    # Given 95 files, and a SIGINT that arrives while the third batch is being sent
    sources = files(tmp_path / "work", 95)
    batches: list[int] = []

    def on_sent(jobs: Sequence[Job]) -> None:
        batches.append(len(jobs))
        if len(batches) == 3:
            signal.raise_signal(signal.SIGINT)

    # When they are submitted
    with pytest.raises(SubmitInterrupted, match="SIGINT: submit stopped after 30 of 95") as caught:
        client.submit_many(sources, task="noop", on_sent=on_sent)
    # Then the three batches sent are queued and in the ledger, and nothing else is left
    sent = caught.value.sent
    assert len(sent) == 30
    assert caught.value.exit_code == 75
    ids = {job.job_id for job in sent}
    assert {job.job_id for job in queued(client.queue)} == ids
    assert set(client.ledger.get_many([*ids, "NOT-SENT"])) == ids
    assert client.ledger.counts()[JobState.QUEUED] == 30
    assert input_dirs(client) == ids
    assert list((client.storage.root / "inputs" / ".conveyor-staging").iterdir()) == []
    # And SIGINT is Python's own again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_after_the_last_batch_goes_to_its_handler_once_all_is_recorded(
    client: Client, tmp_path: Path
) -> None:
    got: list[tuple[int, int]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append((signum, client.ledger.counts()[JobState.QUEUED]))

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        jobs = client.submit_many(
            files(tmp_path / "work", 5),
            task="noop",
            on_sent=lambda jobs: signal.raise_signal(signal.SIGTERM),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert len(jobs) == 5
    assert got == [(signal.SIGTERM, 5)]


class FailingQueue:
    """Wraps a queue so that its ``fail_at``-th ``send_batch`` sends one message, then fails."""

    def __init__(self, queue: Queue, fail_at: int) -> None:
        self._queue = queue
        self._fail_at = fail_at
        self.calls = 0

    def send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        self.calls += 1
        if self.calls == self._fail_at:
            self._queue.send_batch(messages[:1])
            raise TransientQueueError("throttled")
        return self._queue.send_batch(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def test_a_send_that_fails_part_way_leaves_the_ledger_covering_the_queue(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    # Given a queue whose third send gets one message through, then fails
    settings = settings_from_env({}, storage=tmp_path / "storage")
    (tmp_path / "storage").mkdir()
    with Client(settings) as opener:
        real = opener.queue
        failing = FailingQueue(real, fail_at=3)
        client = Client(settings, registry=registry, queue=failing)  # type: ignore[arg-type]
        # When 50 files are submitted
        with pytest.raises(TransientQueueError, match="throttled") as caught:
            client.submit_many(files(tmp_path / "work", 50), task="noop")
        # Then the error says how far it got
        assert "20 of 50 job(s) were sent first" in caught.value.__notes__
        # And every job in the queue is in the ledger: the two batches sent as queued, the
        # third one's as cancelled (one of its messages got through: it will not run)
        in_queue = queued(real)
        ledger = client.ledger
        records = ledger.get_many(job.job_id for job in in_queue)
        assert len(in_queue) == 21 and len(records) == 21
        assert ledger.counts()[JobState.QUEUED] == 20
        assert ledger.counts()[JobState.CANCELLED] == 10
        # And the inputs of the failed batch are gone, those of later ones never copied
        assert input_dirs(client) == {job.job_id for job in in_queue[:20]}
        client.close()
        ledger.close()
