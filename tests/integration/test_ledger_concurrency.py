"""Several real processes (and threads in each) writing the ledger at once, for the same and
for different jobs: every final state must be right and nothing may be lost or torn."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path

from conveyor.jobs import JobState
from conveyor.ledger import Ledger

PROCESSES = 4
SHARED_JOBS = 30
OWN_JOBS = 150
JOIN_TIMEOUT_S = 90.0


def shared_id(n: int) -> str:
    return f"S{n}"


def own_id(process: int, n: int) -> str:
    return f"P{process}-{n}"


def writer_process(root: str, process: int, barrier: Barrier) -> None:
    """One writer: races the others on the shared jobs, runs its own jobs in two threads."""
    ledger = Ledger(Path(root), writer=f"proc{process}")
    barrier.wait(timeout=JOIN_TIMEOUT_S)
    # Every process starts every shared job (duplicate deliveries), as attempt process+1
    for n in range(SHARED_JOBS):
        ledger.record(shared_id(n), JobState.RUNNING, attempt=process + 1, worker=f"p{process}")
    # One process finishes the even jobs, another fails the odd ones
    for n in range(SHARED_JOBS):
        if process == 0 and n % 2 == 0:
            ledger.record(shared_id(n), JobState.SUCCEEDED, attempt=1, result={"n": n})
        if process == 1 and n % 2 == 1:
            ledger.record(shared_id(n), JobState.FAILED, attempt=2, error=f"bad input {n}")

    def own_jobs(first: int) -> None:
        for n in range(first, OWN_JOBS, 2):
            job_id = own_id(process, n)
            ledger.record(job_id, JobState.QUEUED, task="noop")
            ledger.record(job_id, JobState.RUNNING, attempt=1, worker=f"p{process}")
            if n % 10 == 0:
                ledger.record(job_id, JobState.FAILED, attempt=1, error=f"boom {n}")
            else:
                ledger.record(job_id, JobState.SUCCEEDED, attempt=1, result={"n": n})

    threads = [threading.Thread(target=own_jobs, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Everyone has written its terminal events; now late duplicates arrive
    barrier.wait(timeout=JOIN_TIMEOUT_S)
    for n in range(SHARED_JOBS):
        ledger.record(shared_id(n), JobState.RUNNING, attempt=process + 10)
    ledger.close()


def test_concurrent_writers_fold_to_the_right_states(tmp_path: Path) -> None:
    # Given several processes writing at once
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    processes = [
        context.Process(target=writer_process, args=(str(tmp_path), p, barrier))
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * PROCESSES

    # Then every job folds to its right final state, seen from a fresh reader
    ledger = Ledger(tmp_path)
    for n in range(SHARED_JOBS):
        record = ledger.get(shared_id(n))
        assert record is not None
        if n % 2 == 0:
            assert (record.state, record.result) == (JobState.SUCCEEDED, {"n": n})
        else:
            assert (record.state, record.error) == (JobState.FAILED, f"bad input {n}")
        assert record.attempts == PROCESSES + 9
    for process in range(PROCESSES):
        for n in range(OWN_JOBS):
            record = ledger.get(own_id(process, n))
            assert record is not None
            expected = JobState.FAILED if n % 10 == 0 else JobState.SUCCEEDED
            assert record.state is expected
            assert record.task == "noop"

    # And the summary agrees, with every line intact
    summary = ledger.summary()
    own_failed = PROCESSES * (OWN_JOBS // 10)
    assert summary.total == SHARED_JOBS + PROCESSES * OWN_JOBS
    assert summary.counts[JobState.FAILED] == SHARED_JOBS // 2 + own_failed
    assert summary.counts[JobState.SUCCEEDED] == (
        SHARED_JOBS // 2 + PROCESSES * OWN_JOBS - own_failed
    )
    shared_events = PROCESSES * SHARED_JOBS * 2 + SHARED_JOBS
    assert summary.events == shared_events + PROCESSES * OWN_JOBS * 3
    assert summary.corrupt_lines == 0
    assert summary.writers == PROCESSES
    log_root = ledger.directory / "log"
    names = {name for shard in os.listdir(log_root) for name in os.listdir(log_root / shard)}
    assert names == {f"proc{p}.log" for p in range(PROCESSES)}
    # Each writer appended to its own log in the shared job's shard, every line whole
    files = ledger.job_files(shared_id(0))
    assert len(files) == PROCESSES
    lines = [line for path in files for line in path.read_text().split("\n")[:-1]]
    assert all(line.count("\t") == 6 for line in lines)
    assert len([line for line in lines if line.split("\t")[1] == shared_id(0)]) == (
        PROCESSES * 2 + 1
    )
