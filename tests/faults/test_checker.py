"""The checker itself: each way of losing or corrupting a job is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger, LedgerEvent, Transition
from tests.e2e.conftest import QueueEnv
from tests.faults.checker import Expect, account, regressed
from tests.faults.expect import sha256

CONTENT = b"ID,Value,ProcessedValue\n1,2.5,2.75\n"


@pytest.fixture
def env(tmp_path: Path) -> QueueEnv:
    """A scenario's environment: the storage root (with the embedded ledger) and a work
    directory for worker logs."""
    (tmp_path / "work").mkdir()
    return QueueEnv("memory", tmp_path / "storage", "memory://checker", {}, tmp_path / "work")


def job(name: str) -> Job:
    return Job(job_id=name, task="t", input=None, output=f"outputs/{name}/out.csv")


def ledger_of(env: QueueEnv) -> Ledger:
    return env.open_ledger()


def publish(env: QueueEnv, job_: Job, content: bytes = CONTENT, *, times: int = 1) -> None:
    """What a worker leaves: the output, a ``succeeded`` event per publication, and a
    ``succeeded`` log line per publication in a worker log."""
    path = env.storage / str(job_.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with ledger_of(env) as ledger:
        ledger.record_many([LedgerEvent.for_job(job_, JobState.RUNNING, attempt=1)])
        for attempt in range(1, times + 1):
            event = LedgerEvent.for_job(
                job_, JobState.SUCCEEDED, attempt=attempt, result={"sha256": sha256(content)}
            )
            ledger.record_many([event])
    with (env.work / "worker-0.log").open("a") as log:
        for _ in range(times):
            log.write(json.dumps({"action": "succeeded", "job_id": job_.job_id}) + "\n")


def expect(job_: Job, content: bytes | None = CONTENT, reason: str | None = None) -> Expect:
    return Expect(job_.job_id, str(job_.output), content, reason)


def test_a_clean_run_is_all_published_once(env: QueueEnv) -> None:
    jobs = [job(f"j{i}") for i in range(3)]
    for j in jobs:
        publish(env, j)

    summary = account("clean", [expect(j) for j in jobs], env)

    assert summary["ok"]
    assert (summary["jobs"], summary["published_once"], summary["published_more"]) == (3, 3, 0)


def test_a_job_with_no_success_is_lost_and_one_left_running_is_stuck(env: QueueEnv) -> None:
    queued, running = job("q"), job("r")
    with ledger_of(env) as ledger:
        ledger.record_queued([queued, running])
        ledger.record_many([LedgerEvent.for_job(running, JobState.RUNNING, attempt=1)])

    summary = account("lost", [expect(queued), expect(running)], env)

    assert not summary["ok"]
    assert summary["lost"] == ["q", "r"]
    assert summary["stuck"] == ["q", "r"]


def test_a_torn_output_is_partial_and_other_bytes_mismatched(env: QueueEnv) -> None:
    torn, other = job("torn"), job("other")
    publish(env, torn, CONTENT[:10])
    publish(env, other, CONTENT.replace(b"2.75", b"2.74"))

    summary = account("bytes", [expect(torn), expect(other)], env)

    assert (summary["partial"], summary["mismatched"]) == (["torn"], ["other"])
    assert not summary["duplicates_identical"]  # their recorded hashes differ too


def test_a_leftover_temporary_file_anywhere_is_reported(env: QueueEnv) -> None:
    j = job("j")
    publish(env, j)
    (env.storage / "outputs/j/.conveyor-tmp-0123456789ab-out.csv").write_bytes(CONTENT[:5])

    summary = account("temp", [expect(j)], env)

    assert summary["temp_files"] == ["outputs/j/.conveyor-tmp-0123456789ab-out.csv"]
    assert not summary["ok"]


def test_duplicate_publications_are_counted_and_compared(env: QueueEnv) -> None:
    same, differs = job("same"), job("differs")
    publish(env, same, times=2)
    # A job whose recorded result is not the hash of what it published
    path = env.storage / str(differs.output)
    path.parent.mkdir(parents=True)
    path.write_bytes(CONTENT)
    with ledger_of(env) as ledger:
        event = LedgerEvent.for_job(
            differs, JobState.SUCCEEDED, attempt=1, result={"sha256": sha256(b"other")}
        )
        ledger.record_many([event])

    clean = account("dup", [expect(same)], env)
    dirty = account("dup", [expect(same), expect(differs)], env)

    assert clean["ok"]
    assert (clean["published_more"], clean["publications"]) == (1, 2)
    assert not dirty["duplicates_identical"]
    assert not dirty["ok"]


def test_without_worker_logs_publications_come_from_the_ledger_history(
    env: QueueEnv,
) -> None:
    j = job("j")
    publish(env, j, times=2)
    (env.work / "worker-0.log").unlink()

    summary = account("no logs", [expect(j)], env)

    # The ledger keeps one success (a duplicate changes nothing): one publication.
    assert (summary["published_once"], summary["publications"]) == (1, 1)
    assert summary["ok"]


def test_poison_jobs_must_fail_with_their_reason_and_publish_nothing(env: QueueEnv) -> None:
    good, published, silent = job("good"), job("published"), job("silent")
    with ledger_of(env) as ledger:
        for j in (good, published):
            event = LedgerEvent.for_job(j, JobState.FAILED, attempt=3, error="gave up: boom")
            ledger.record_many([event])
        ledger.record_many([LedgerEvent.for_job(silent, JobState.FAILED, attempt=3)])
    (env.storage / "outputs/published").mkdir(parents=True)
    (env.storage / "outputs/published/out.csv").write_bytes(b"half")

    summary = account(
        "poison",
        [expect(j, None, reason="boom") for j in (good, published, silent)],
        env,
    )

    assert summary["failed_as_expected"] == 1
    assert summary["unexpected"] == ["published", "silent"]


def test_a_state_that_goes_backwards_is_a_regression_but_a_redrive_is_not(
    env: QueueEnv,
) -> None:
    j = job("j")
    with ledger_of(env) as ledger:
        ledger.record_many([LedgerEvent.for_job(j, JobState.FAILED, attempt=1, error="x")])
        assert ledger.redrive("j")  # failed -> queued: the one allowed way back
    publish(env, j)
    assert account("redrive", [expect(j)], env)["regressions"] == []
    # A late `running` is refused by the ledger: no regression in its history.
    with ledger_of(env) as ledger:
        ledger.record_many([LedgerEvent.for_job(j, JobState.RUNNING, attempt=2)])
    assert account("late running", [expect(j)], env)["regressions"] == []

    # A ledger that let a late `running` win over `succeeded` would be caught.
    def step(state: JobState, attempt: int) -> Transition:
        return Transition("other", state, attempt, at=1.0)

    broken = [
        step(JobState.QUEUED, 0),
        step(JobState.RUNNING, 1),
        step(JobState.SUCCEEDED, 1),
        step(JobState.RUNNING, 2),
    ]
    assert regressed(broken)
    assert not regressed(broken[:3])
    assert regressed([step(JobState.FAILED, 3), step(JobState.RUNNING, 1)])  # not a redrive
