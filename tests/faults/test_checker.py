"""The checker itself: each way of losing or corrupting a job is caught."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger, LedgerEvent
from tests.faults import checker
from tests.faults.checker import Expect, account
from tests.faults.expect import sha256

CONTENT = b"ID,Value,ProcessedValue\n1,2.5,2.75\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def job(name: str) -> Job:
    return Job(job_id=name, task="t", input=None, output=f"outputs/{name}/out.csv")


def publish(root: Path, job_: Job, content: bytes = CONTENT, *, times: int = 1) -> None:
    """What a worker leaves: the output, and one ``succeeded`` event per publication."""
    path = root / str(job_.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with Ledger(root) as ledger:
        ledger.record_many([LedgerEvent.for_job(job_, JobState.RUNNING, attempt=1)])
        for attempt in range(1, times + 1):
            event = LedgerEvent.for_job(
                job_, JobState.SUCCEEDED, attempt=attempt, result={"sha256": sha256(content)}
            )
            ledger.record_many([event])


def expect(job_: Job, content: bytes | None = CONTENT, reason: str | None = None) -> Expect:
    return Expect(job_.job_id, str(job_.output), content, reason)


def test_a_clean_run_is_all_published_once(root: Path) -> None:
    jobs = [job(f"j{i}") for i in range(3)]
    for j in jobs:
        publish(root, j)

    summary = account("clean", [expect(j) for j in jobs], root)

    assert summary["ok"]
    assert (summary["jobs"], summary["published_once"], summary["published_more"]) == (3, 3, 0)


def test_a_job_with_no_success_is_lost_and_one_left_running_is_stuck(root: Path) -> None:
    queued, running = job("q"), job("r")
    with Ledger(root) as ledger:
        ledger.record_queued([queued, running])
        ledger.record_many([LedgerEvent.for_job(running, JobState.RUNNING, attempt=1)])

    summary = account("lost", [expect(queued), expect(running)], root)

    assert not summary["ok"]
    assert summary["lost"] == ["q", "r"]
    assert summary["stuck"] == ["q", "r"]


def test_a_torn_output_is_partial_and_other_bytes_mismatched(root: Path) -> None:
    torn, other = job("torn"), job("other")
    publish(root, torn, CONTENT[:10])
    publish(root, other, CONTENT.replace(b"2.75", b"2.74"))

    summary = account("bytes", [expect(torn), expect(other)], root)

    assert (summary["partial"], summary["mismatched"]) == (["torn"], ["other"])
    assert not summary["duplicates_identical"]  # their recorded hashes differ too


def test_a_leftover_temporary_file_anywhere_is_reported(root: Path) -> None:
    j = job("j")
    publish(root, j)
    (root / "outputs/j/.conveyor-tmp-0123456789ab-out.csv").write_bytes(CONTENT[:5])

    summary = account("temp", [expect(j)], root)

    assert summary["temp_files"] == ["outputs/j/.conveyor-tmp-0123456789ab-out.csv"]
    assert not summary["ok"]


def test_duplicate_publications_are_counted_and_compared(root: Path) -> None:
    same, differs = job("same"), job("differs")
    publish(root, same, times=2)
    publish(root, differs, times=2)
    with Ledger(root) as ledger:
        event = LedgerEvent.for_job(
            differs, JobState.SUCCEEDED, attempt=3, result={"sha256": sha256(b"other")}
        )
        ledger.record_many([event])

    clean = account("dup", [expect(same)], root)
    dirty = account("dup", [expect(same), expect(differs)], root)

    assert clean["ok"]
    assert (clean["published_more"], clean["publications"]) == (1, 2)
    assert not dirty["duplicates_identical"]
    assert not dirty["ok"]


def test_poison_jobs_must_fail_with_their_reason_and_publish_nothing(root: Path) -> None:
    good, published, silent = job("good"), job("published"), job("silent")
    with Ledger(root) as ledger:
        for j in (good, published):
            event = LedgerEvent.for_job(j, JobState.FAILED, attempt=3, error="gave up: boom")
            ledger.record_many([event])
        ledger.record_many([LedgerEvent.for_job(silent, JobState.FAILED, attempt=3)])
    (root / "outputs/published").mkdir(parents=True)
    (root / "outputs/published/out.csv").write_bytes(b"half")

    summary = account(
        "poison",
        [expect(j, None, reason="boom") for j in (good, published, silent)],
        root,
    )

    assert summary["failed_as_expected"] == 1
    assert summary["unexpected"] == ["published", "silent"]


def test_a_state_that_goes_backwards_is_a_regression_but_a_redrive_is_not(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job("j")
    with Ledger(root) as ledger:
        ledger.record_many([LedgerEvent.for_job(j, JobState.FAILED, attempt=1, error="x")])
        assert ledger.redrive("j")  # failed -> queued: the one allowed way back
    publish(root, j)
    assert account("redrive", [expect(j)], root)["regressions"] == []

    # A fold that let a late `running` win over `succeeded` would be caught.
    states = iter([JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.RUNNING])

    def broken_fold(job_id: str, lines: list[str]) -> Any:
        return SimpleNamespace(state=next(states, JobState.SUCCEEDED), error=None)

    monkeypatch.setattr(checker, "fold_events", broken_fold)
    other = job("other")
    publish(root, other)
    with Ledger(root) as ledger:
        ledger.record_many([LedgerEvent.for_job(other, JobState.RUNNING, attempt=2)])

    assert account("broken", [expect(other)], root)["regressions"] == ["other"]
