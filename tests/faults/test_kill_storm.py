"""Kill storm: three workers, one of them SIGKILLed about every second and restarted."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from conveyor.csvjob import transform_csv
from tests.e2e.conftest import QueueEnv
from tests.faults.checker import account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import csv_reference, csv_rows, csv_text
from tests.faults.harness import (
    EX_INTERRUPTED,
    drained,
    submit,
    with_max_receive_count,
    worker_env,
    worker_pool,
)

#: Jobs per queue/ledger backends: the SQS test server slows down with the backlog, so it
#: gets fewer; the PostgreSQL variant gets fewer than the embedded one to keep the suite
#: within its time, still enough for dozens of kills mid-job.
JOBS = {"sqlite/sqlite": 2000, "sqlite/postgresql": 600, "sqs/postgresql": 150}
WORKERS = 3
#: The storm must be over well within this (the whole suite aims at a few minutes).
BUDGET_S = 90.0


def reference(data: bytes, seed: int) -> bytes:
    """What a clean single run publishes for a storm input (computed independently)."""
    index = int(data.split(b"\n")[1].split(b",")[0])
    return csv_reference(csv_rows(index), seed)


def test_the_reference_matches_a_clean_run_of_the_task(tmp_path: Path) -> None:
    for index in (0, 7, 1999):
        source, target = tmp_path / "in.csv", tmp_path / "out.csv"
        source.write_bytes(csv_text(csv_rows(index)))
        transform_csv(source, target, 1000 + index)
        assert target.read_bytes() == reference(source.read_bytes(), 1000 + index)


@pytest.mark.slow
def test_kill_storm_loses_nothing_and_publishes_clean_bytes(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    count = JOBS[queue_env.label]
    # A kill can cost a job a receive; with this many allowed, none should reach the DLQ.
    storm_env = with_max_receive_count(queue_env, 50)
    inputs = [csv_text(csv_rows(i)) for i in range(count)]
    expects = submit(storm_env, "csv-process", inputs, reference)
    env = worker_env(
        storm_env,
        CONVEYOR_VISIBILITY_TIMEOUT_S="2",
        CONVEYOR_BATCH_SIZE="5",
        CONVEYOR_GRACE_S="5",
    )
    rng = random.Random(20261122)
    kills = 0
    started = time.monotonic()
    with worker_pool(env, storm_env.work) as start:
        workers = [start() for _ in range(WORKERS)]
        # When a random worker is SIGKILLed about every second, and restarted
        while not drained(storm_env):
            assert time.monotonic() - started < BUDGET_S, (
                f"storm not over after {kills} kills: {storm_env.stats()}"
            )
            time.sleep(rng.uniform(0.6, 1.4))
            victim = rng.randrange(WORKERS)
            workers[victim].kill(signal.SIGKILL)
            assert workers[victim].wait() == -signal.SIGKILL
            workers[victim] = start()
            kills += 1
        took_s = time.monotonic() - started
        for worker in workers:
            worker.kill(signal.SIGTERM)
        # A worker restarted a moment ago may not have its signal handler yet: it dies of
        # the SIGTERM, which is one more kill, not a problem.
        codes = [worker.wait() for worker in workers]
        assert set(codes) <= {EX_INTERRUPTED, -signal.SIGTERM}, codes

    # Then every job is published once or identically, nothing lost, nothing left over
    summary = account(
        "kill storm (SIGKILL ~1/s, 3 workers)",
        expects,
        storm_env,
        extra={"kills": kills, "seconds": round(took_s, 1)},
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert kills >= 3, "the storm ended before it began: too few kills to mean anything"
    assert storm_env.stats().dead_lettered == 0
