"""``worker --until-empty`` on real processes: how soon it exits after the last job, and
what keeps it from exiting too soon (docs/architecture.md, "When --until-empty exits")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.jobs import Job, JobState
from conveyor.queues.messages import Outgoing
from tests.e2e.conftest import QueueEnv, make_queue_env
from tests.e2e.helpers import WorkerProcess, run_json, workers, write_csv

#: Empty receives the old rule waited for; the tail must be well under this many waits.
EMPTY_POLLS = 8


def drained_evidence(worker: WorkerProcess) -> str:
    """The evidence the worker named when it decided the queue was drained."""
    prefix = "the queue is drained: "
    said = [e["msg"] for e in worker.log_events() if str(e.get("msg", "")).startswith(prefix)]
    assert len(said) == 1, worker.log()
    return str(said[0]).removeprefix(prefix)


def last_success_at(queue_env: QueueEnv) -> float:
    with queue_env.open_ledger(create=False) as ledger:
        done = ledger.jobs(state=JobState.SUCCEEDED)
    return max(job.finished_at for job in done if job.finished_at is not None)


def test_the_worker_exits_one_empty_receive_after_its_last_job(queue_env: QueueEnv) -> None:
    inputs = [write_csv(queue_env.work / f"part-{i}.csv", 20, start=i * 20) for i in range(3)]
    run_json("submit", *inputs, env=queue_env.env)
    env = queue_env.with_env(CONVEYOR_WAIT_S="1", CONVEYOR_EMPTY_POLLS=str(EMPTY_POLLS))

    with workers(env, queue_env.work) as start:
        worker = start("--until-empty")
        assert worker.wait() == 0
        exited_at = time.time()

    tail_s = exited_at - last_success_at(queue_env)
    assert queue_env.counts()["succeeded"] == 3
    assert tail_s < EMPTY_POLLS / 2, f"tail {tail_s:.1f} s\n{worker.log()}"
    expected = (
        "exact queue counts" if queue_env.backend == "sqlite" else "no open job in the ledger"
    )
    assert expected in drained_evidence(worker)


def test_a_message_in_flight_elsewhere_keeps_the_worker_even_when_the_ledger_is_empty(
    queue_env: QueueEnv,
) -> None:
    # A message the ledger never heard of (a submit that died before recording it), held by
    # another consumer: only the queue's counts show it, and they must hold the worker.
    job = Job(task="csv-process", input="inputs/missing.csv")
    with queue_env.open_queue() as queue:
        queue.send(Outgoing(job.to_json()))
        (held,) = queue.receive(1, wait_s=5, visibility_timeout_s=120)
        env = queue_env.with_env(CONVEYOR_WAIT_S="0.5", CONVEYOR_EMPTY_POLLS="2")
        with workers(env, queue_env.work) as start:
            worker = start("--until-empty")
            time.sleep(4)  # several empty receives

            assert worker.process.poll() is None, worker.log()
            assert queue.ack(held.lease)
            assert worker.wait() == 0
    assert queue_env.stats().pending == 0


@pytest.fixture
def sqs_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """SQS (moto) with the embedded ledger: the queue whose counts are approximate."""
    return make_queue_env(request, tmp_path, "sqs", "sqlite")


def test_on_sqs_a_ledger_with_open_jobs_the_queue_lacks_falls_back_to_the_empty_polls(
    sqs_env: QueueEnv,
) -> None:
    # A stale record (its message purged or expired), or another queue's job in a shared
    # ledger: the ledger cannot vouch for the queue, so the counts must settle.
    with sqs_env.open_ledger() as ledger:
        ledger.record_queued([Job(task="csv-process", input="inputs/gone.csv")])
    env = sqs_env.with_env(CONVEYOR_WAIT_S="0.5", CONVEYOR_EMPTY_POLLS="4")

    with workers(env, sqs_env.work) as start:
        worker = start("--until-empty")
        started = time.monotonic()
        assert worker.wait() == 0
        took_s = time.monotonic() - started

    assert took_s >= 4 * 0.5
    assert drained_evidence(worker) == "4 empty receives in a row with queue counts of 0"
    assert "the ledger has 1 open job(s) the queue does not show" in worker.log()
