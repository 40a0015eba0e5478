"""SIGTERM mid-job (graceful drain), SIGSTOP past the lease (zombie), duplicate delivery."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from conveyor.jobs import Job, JobState
from tests.e2e.conftest import QueueEnv
from tests.faults.checker import Expect, account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import fault_copy_output, input_bytes, sha256
from tests.faults.harness import (
    EX_INTERRUPTED,
    prepare,
    send_raw,
    submit,
    wait_for,
    worker_env,
    worker_pool,
)


def started_runs(markers: Path, job_id: str) -> list[Path]:
    return sorted(markers.glob(f"{job_id}.*.started"))


# --- graceful drain ------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_finishes_a_short_job_and_hands_a_long_one_over_at_once(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    markers = queue_env.work / "markers"
    markers.mkdir()
    (short,) = submit(
        queue_env,
        "fault-copy",
        [input_bytes(1)],
        fault_copy_output,
        params={"marker_dir": str(markers), "sleep_s": 2},
    )
    (long,) = submit(
        queue_env,
        "fault-copy",
        [input_bytes(2)],
        fault_copy_output,
        params={"marker_dir": str(markers), "first_run_s": 120},
    )
    # A visibility timeout far longer than the test: the long job must be released, not
    # left to expire.
    env = worker_env(queue_env, CONVEYOR_VISIBILITY_TIMEOUT_S="120", CONVEYOR_GRACE_S="5")
    with worker_pool(env, queue_env.work) as start:
        first = start("--batch-size=1")
        wait_for(lambda: started_runs(markers, short.job_id), what="the short job to start")
        second = start("--batch-size=1")
        wait_for(lambda: started_runs(markers, long.job_id), what="the long job to start")

        # When both workers get SIGTERM mid-job
        first.kill(signal.SIGTERM)
        second.kill(signal.SIGTERM)
        signalled_at = time.monotonic()

        # Then both exit 75: the short job finished and acked, the long one released
        assert first.wait() == EX_INTERRUPTED, first.log()
        assert second.wait() == EX_INTERRUPTED, second.log()
        stopped_s = time.monotonic() - signalled_at
        third = start("--until-empty")
        assert third.wait() == 0, third.log()
        handed_over_s = time.monotonic() - signalled_at

    summary = account(
        "graceful drain (SIGTERM mid-job)",
        [short, long],
        queue_env,
        extra={"seconds": round(handed_over_s, 1)},
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert "succeeded" in first.actions()
    assert "released" in second.actions()
    assert stopped_s < 15  # the 5 s grace, then out
    assert handed_over_s < 40  # far below the 120 s visibility timeout
    assert queue_env.record(short.job_id)["attempts"] == 1
    long_record = queue_env.record(long.job_id)
    assert long_record["attempts"] == 2
    assert str(third.pid) in str(long_record["worker"])


# --- zombie lease --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_paused_past_its_lease_neither_publishes_nor_acks(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    markers = queue_env.work / "markers"
    markers.mkdir()
    source = queue_env.storage / "inputs" / "z.txt"
    source.parent.mkdir(parents=True)
    source.write_text("z\n")
    job = Job(
        task="fault-stamp",
        input="inputs/z.txt",
        output="outputs/z.txt",
        params={"marker_dir": str(markers), "first_run_s": 6, "later_run_s": 0.5},
    )
    send_raw(queue_env, [job.to_json()])
    env = worker_env(queue_env, CONVEYOR_VISIBILITY_TIMEOUT_S="2")
    output = queue_env.storage / "outputs/z.txt"
    with worker_pool(env, queue_env.work) as start:
        zombie = start("--batch-size=1", "--max-jobs=1")
        wait_for(lambda: started_runs(markers, job.job_id), what="the first run to start")

        # Given the first worker frozen (SIGSTOP) until its lease has expired
        zombie.kill(signal.SIGSTOP)
        wait_for(lambda: queue_env.stats().visible == 1, what="the lease to expire")
        taker = start("--batch-size=1", "--until-empty")
        wait_for(lambda: len(started_runs(markers, job.job_id)) == 2, what="the second run")

        # When it resumes while the second worker holds the job, which then publishes
        zombie.kill(signal.SIGCONT)
        assert taker.wait() == 0, taker.log()
        after_taker = output.stat()
        assert zombie.process.poll() is None  # its stubborn task has not returned yet
        assert zombie.wait() == 0, zombie.log()

    # Then the output is the second worker's publication, untouched by the resumed one
    assert output.read_text() == f"published by {taker.pid}\n"
    now = output.stat()
    assert (now.st_ino, now.st_mtime_ns, now.st_size) == (
        after_taker.st_ino,
        after_taker.st_mtime_ns,
        after_taker.st_size,
    )
    assert "lease_lost" in zombie.actions(), zombie.log()
    assert "succeeded" not in zombie.actions()
    record = queue_env.record(job.job_id)
    assert record["state"] == "succeeded"
    assert str(taker.pid) in str(record["worker"])
    with queue_env.open_ledger() as ledger:
        history = ledger.history(job.job_id)
    assert [t.state for t in history].count(JobState.SUCCEEDED) == 1
    assert queue_env.stats().pending == 0
    summary = account(
        "zombie lease (SIGSTOP past the lease, SIGCONT)",
        [Expect(job.job_id, "outputs/z.txt", f"published by {taker.pid}\n".encode())],
        queue_env,
    )
    fault_report.add(summary)
    assert_clean(summary)


# --- duplicate delivery --------------------------------------------------------------------


def test_the_same_message_twice_to_one_worker_runs_once(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    expects, bodies = prepare(queue_env, "fault-copy", [input_bytes(7)], fault_copy_output)
    send_raw(queue_env, bodies * 2)  # the identical message twice: SQS delivered it twice

    with worker_pool(worker_env(queue_env), queue_env.work) as start:
        worker = start("--until-empty", "--batch-size=1")
        assert worker.wait() == 0, worker.log()

    summary = account(
        "duplicate delivery, one worker",
        expects,
        queue_env,
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert (summary["published_once"], summary["published_more"]) == (1, 0)
    assert sorted(a for a in worker.actions() if a in ("succeeded", "skipped")) == [
        "skipped",
        "succeeded",
    ]


@pytest.mark.slow
def test_the_same_messages_to_two_workers_at_once_publish_identical_bytes(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    expects, bodies = prepare(
        queue_env,
        "fault-copy",
        [input_bytes(i, 50_000) for i in range(4)],
        fault_copy_output,
        params={"sleep_s": 0.5},
    )
    # Every message twice in a row, so the two workers take the copies of a job together.
    send_raw(queue_env, [body for body in bodies for _ in range(2)])

    with worker_pool(worker_env(queue_env), queue_env.work) as start:
        workers = [start("--until-empty", "--batch-size=1") for _ in range(2)]
        assert [w.wait() for w in workers] == [0, 0], [w.log() for w in workers]

    summary = account(
        "duplicate delivery, two workers at once",
        expects,
        queue_env,
    )
    fault_report.add(summary)
    assert_clean(summary)  # identical bytes, forward-only states, nothing left over
    assert summary["published_once"] + summary["published_more"] == len(expects)
    ran = sum(w.actions().count("succeeded") for w in workers)
    skipped = sum(w.actions().count("skipped") for w in workers)
    assert (ran + skipped, ran) == (8, summary["publications"])
    for expect in expects:
        assert expect.content is not None
        assert queue_env.record(expect.job_id)["result"]["sha256"] == sha256(expect.content)
