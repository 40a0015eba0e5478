"""Jobs the queue dead-lettered by itself (their workers all died) end ``failed`` in the
ledger with their reason, with nothing left behind, however large the dead-letter queue."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from conveyor.jobs import Job, JobState
from conveyor.ledger import LedgerEvent
from conveyor.queues import Queue, open_queue
from conveyor.queues.messages import Outgoing, Received
from conveyor.queues.sqlite_path import path_from_url
from conveyor.reconcile import CRASH_HINT

# The embedded queue (the dead letters are written into its database) with each ledger.
from tests.e2e.conftest import QueueEnv, ledger_env
from tests.e2e.helpers import run, run_json
from tests.faults.checker import Expect, account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import input_bytes
from tests.faults.harness import CRASHED, prepare, send_raw, worker_env, worker_pool

__all__ = ["ledger_env"]

#: Dead letters already in the queue before the job of interest dies, far above the
#: 1,000 the reconciler once read.
OLD_DEAD_LETTERS = 5000


def test_dlq_list_records_a_job_whose_workers_all_died_as_failed(queue_env: QueueEnv) -> None:
    # Given a job whose three workers each recorded it running, then died
    job = Job(task="csv-process", input="inputs/a.csv", output="outputs/a.csv")
    settings = queue_env.settings.with_(visibility_timeout_s=1)
    with open_queue(queue_env.queue_url, settings) as queue, queue_env.open_ledger() as dead:
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
    assert record["error"].endswith(f"({CRASH_HINT})")
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


def _bury_old_jobs(env: QueueEnv, count: int) -> None:
    """``count`` dead letters of jobs that failed long ago, straight into the queue's
    database (and their failures into the ledger), as a busy queue's history holds them:
    never reconciled by this conveyor (a queue upgraded from schema 1 has them so)."""
    jobs = [Job(task="fault-copy", output=f"outputs/old/{i}.dat") for i in range(count)]
    with env.open_ledger() as ledger:
        ledger.record_many(
            [LedgerEvent.for_job(j, JobState.FAILED, attempt=3, error="old") for j in jobs]
        )
    send_raw(env, [])  # creates the queue database
    rows = [(j.job_id, j.to_json(), time.time() - 3600 + i) for i, j in enumerate(jobs)]
    with closing(sqlite3.connect(path_from_url(env.queue_url), timeout=30)) as conn:
        conn.executemany(
            "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason,"
            " dead_at) VALUES (?, ?, 1.0, 3, 'old failure', ?)",
            rows,
        )
        conn.commit()


@pytest.mark.parametrize("crash_at", ["after_receive", "mid_write"])
def test_a_job_dead_lettered_after_thousands_of_others_ends_failed(
    ledger_env: QueueEnv, fault_report: FaultReport, crash_at: str
) -> None:
    env = ledger_env
    # Given 5,000 dead letters already in the queue
    _bury_old_jobs(env, OLD_DEAD_LETTERS)
    # And a job whose worker dies on every attempt (max_receive_count is 3)
    (expect,), bodies = prepare(env, "fault-copy", [input_bytes(0)], lambda data, seed: None)
    send_raw(env, bodies)
    crashing = worker_env(env, CONVEYOR_VISIBILITY_TIMEOUT_S="1", CONVEYOR_TEST_CRASH_AT=crash_at)

    # When workers run it until it is dead-lettered, then one more drains the queue
    codes = []
    with worker_pool(crashing, env.work) as start:
        for _ in range(3):
            codes.append(start("--until-empty", "--batch-size=1").wait(60))
        last = start("--until-empty", CONVEYOR_TEST_CRASH_AT="")
        codes.append(last.wait(120))
        log = last.log()

    # Then the three attempts crashed and the last worker exited 0 after reconciling it
    assert codes == [CRASHED, CRASHED, CRASHED, 0], log[-3000:]
    record = env.record(expect.job_id)
    assert record["state"] == "failed", record
    assert record["error"].startswith("dead-lettered after 3 receives; last error: ")
    assert record["error"].endswith(f"({CRASH_HINT})")
    # And nothing is stuck, lost or left behind (no temporary file of the dead writers)
    failing = Expect(expect.job_id, expect.output, None, reason=CRASH_HINT)
    summary = account(
        f"crash at {crash_at} after {OLD_DEAD_LETTERS} dead letters",
        [failing],
        env,
        extra={"old_dead_letters": OLD_DEAD_LETTERS},
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert summary["failed_as_expected"] == 1
    # And the dead-letter queue lists it first
    newest = run_json("dlq", "list", "--limit", "1", env=env.env)
    assert [letter["job_id"] for letter in newest] == [expect.job_id]
    assert env.stats().dead_lettered == OLD_DEAD_LETTERS + 1
