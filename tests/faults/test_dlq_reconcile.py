"""``conveyor dlq list`` records jobs the queue dead-lettered by itself as failed."""

from __future__ import annotations

import time

from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger, LedgerEvent
from conveyor.queues import Queue, open_queue
from conveyor.queues.base import Outgoing, Received
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import run, run_json


def test_dlq_list_records_a_job_whose_workers_all_died_as_failed(queue_env: QueueEnv) -> None:
    # Given a job whose three workers each recorded it running, then died
    job = Job(task="csv-process", input="inputs/a.csv", output="outputs/a.csv")
    dead = Ledger(queue_env.storage, writer="dead-worker")
    settings = queue_env.settings.with_(visibility_timeout_s=1)
    with open_queue(queue_env.queue_url, settings) as queue:
        queue.send(Outgoing(job.to_json()))
        for _ in range(3):  # max_receive_count
            (received,) = _receive_one(queue)
            event = LedgerEvent.for_job(
                job, JobState.RUNNING, attempt=received.receive_count, worker="dead-worker"
            )
            dead.record_many([event])
        # The next receive finds it past its receive count: the queue dead-letters it.
        deadline = time.monotonic() + 10
        while queue.stats().dead_lettered == 0:
            assert time.monotonic() < deadline, queue.stats()
            assert queue.receive(1, 1, visibility_timeout_s=1) == []
    assert queue_env.record(job.job_id)["state"] == "running"

    # When someone lists the dead-letter queue
    listed = run("dlq", "list", env=queue_env.env).stdout

    # Then the job is failed in the ledger, with why
    assert job.job_id in listed
    assert "recorded 1 job(s) as failed in the ledger" in listed
    record = queue_env.record(job.job_id)
    assert record["state"] == "failed"
    assert record["error"].startswith("dead-lettered after 3 receives; last error: ")
    assert record["error"].endswith("(the worker died or its lease expired on every attempt)")
    (again,) = run_json("dlq", "list", env=queue_env.env)
    assert (again["job_id"], again["reconciled"]) == (job.job_id, False)  # once only


def _receive_one(queue: Queue) -> list[Received]:
    """Receive the message once its previous lease (1 s) has run out."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = queue.receive(1, 1, visibility_timeout_s=1)
        if got:
            return got
    raise AssertionError("the message did not come back")
