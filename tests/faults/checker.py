"""Jepsen-style accounting of every job after a fault scenario.

Each submitted job is classified from what is on the storage and in the ledger, never from
what a worker said: *lost* (expected to succeed, but no published output or no success in
the ledger), *published once* or *published more than once* (counted from the workers'
``succeeded`` log lines when their logs are in the scenario's work directory, else from the
ledger's history), or *failed as expected* (a poison job: failed in the ledger with a
reason, nothing published). On top of that it checks that every output is byte-identical to
a clean run's (a shorter prefix of it is *partial*), that the result the ledger recorded has
the output's hash, that no temporary file is left anywhere under the storage, that no job is
stuck queued/running/retrying, and that no job's history ever went backwards by the
ledger's rank rule (only a redrive reopens a failed job).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.jobs import JobState
from conveyor.ledger import JobRecord, Ledger, Transition, open_ledger, state_rank
from conveyor.tempfiles import TEMP_PREFIX

if TYPE_CHECKING:
    from tests.e2e.conftest import QueueEnv

_UNFINISHED = {JobState.QUEUED, JobState.RUNNING, JobState.RETRYING}
#: Job ids per ``get_many`` call.
_CHUNK = 500


@dataclass(frozen=True)
class Expect:
    """What one job should end as.

    Attributes:
        job_id: the job.
        output: its output path, relative to the storage root.
        content: the bytes a clean single run publishes; None for a job that must fail
            (a poison job) and publish nothing.
        reason: for a job that must fail, a substring its ledger error must contain.
    """

    job_id: str
    output: str
    content: bytes | None
    reason: str | None = None


def regressed(history: Sequence[Transition]) -> bool:
    """Whether a job's history ever moved it back by the rank rule (:func:`state_rank`),
    other than by a redrive, the one documented way back (``failed -> queued``)."""
    for before, after in itertools.pairwise(history):
        if before.state is JobState.FAILED and after.state is JobState.QUEUED:
            continue  # a redrive
        if state_rank(after.state, after.attempt) <= state_rank(before.state, before.attempt):
            return True
    return False


def publications_in_logs(work: Path) -> Counter[str] | None:
    """``succeeded`` log lines per job id in the worker logs (``worker-*.log``) under
    ``work``; None when there are no worker logs there."""
    logs = sorted(work.rglob("worker-*.log")) if work.is_dir() else []
    if not logs:
        return None
    counts: Counter[str] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("action") == "succeeded":
                counts[str(data.get("job_id"))] += 1
    return counts


def read_ledger(ledger: Ledger, job_ids: Sequence[str]) -> dict[str, JobRecord]:
    """The records of these jobs, a chunk of ids per query."""
    records: dict[str, JobRecord] = {}
    for start in range(0, len(job_ids), _CHUNK):
        records.update(ledger.get_many(job_ids[start : start + _CHUNK]))
    return records


def _exists(path: Path) -> bool:
    """Whether a file is there; a path the system cannot even look up (a NUL byte, a name
    too long: what a hostile message may name) is not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def temp_files(storage: Path) -> list[str]:
    """Temporary files anywhere under the storage, relative to it."""
    return sorted(str(p.relative_to(storage)) for p in storage.rglob(f"{TEMP_PREFIX}*"))


def account(
    scenario: str,
    expected: Iterable[Expect],
    env: QueueEnv,
    *,
    dead_letters: Collection[str] = (),
    extra: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Classify every job; return a summary that tests assert on and the report renders.

    Args:
        scenario: the scenario's name, for the report.
        expected: every submitted job and what it should end as.
        env: the scenario's environment (storage root, ledger, queue backend, and the
            work directory holding the worker logs).
        dead_letters: job ids found in the dead-letter queue.
        extra: more numbers for the report (kills, seconds).

    Returns:
        ``ok`` (bool) and, per class, counts and the job ids concerned.
    """
    expects = list(expected)
    storage = env.storage
    summary: dict[str, Any] = {
        "scenario": scenario,
        "backend": env.label,
        "jobs": 0,
        "published_once": 0,
        "published_more": 0,
        "publications": 0,
        "failed_as_expected": 0,
        "crashed_attempts": 0,
        "duplicates_identical": True,
        "lost": [],
        "partial": [],
        "mismatched": [],
        "unexpected": [],
        "stuck": [],
        "regressions": [],
        "temp_files": temp_files(storage),
        **(extra or {}),
    }
    logged = publications_in_logs(env.work)
    with open_ledger(env.ledger_url, create=False) as ledger:
        records = read_ledger(ledger, [e.job_id for e in expects])
        for expect in expects:
            summary["jobs"] += 1
            history = ledger.history(expect.job_id)
            successes = sum(1 for t in history if t.state is JobState.SUCCEEDED)
            published = successes if logged is None else max(successes, logged[expect.job_id])
            job = _Job(expect, records.get(expect.job_id), history, published)
            _classify(job, storage, dead_letters, summary)
    summary["ok"] = not any(
        summary[name]
        for name in (
            "lost",
            "partial",
            "mismatched",
            "unexpected",
            "stuck",
            "regressions",
            "temp_files",
        )
    ) and bool(summary["duplicates_identical"])
    return summary


@dataclass(frozen=True)
class _Job:
    """What the ledger and the logs say about one expected job."""

    expect: Expect
    record: JobRecord | None
    history: list[Transition]
    publications: int


def _classify(
    job: _Job,
    storage: Path,
    dead_letters: Collection[str],
    summary: dict[str, Any],
) -> None:
    expect, record = job.expect, job.record
    job_id = expect.job_id
    state = record.state if record is not None else None
    if state in _UNFINISHED:
        summary["stuck"].append(job_id)
    if regressed(job.history):
        summary["regressions"].append(job_id)
    # The worker that received a job after its previous holder died says so in the ledger.
    summary["crashed_attempts"] += sum(
        1
        for t in job.history
        if t.state is JobState.RETRYING and "did not finish" in (t.error or "")
    )
    published = storage / expect.output
    if expect.content is None:  # a job that must fail, publishing nothing
        error = record.error if record is not None else None
        if (
            state is JobState.FAILED
            and error
            and (expect.reason is None or expect.reason in error)
            and not _exists(published)
            and not job.publications
        ):
            summary["failed_as_expected"] += 1
        else:
            summary["unexpected"].append(job_id)
        return
    if state is not JobState.SUCCEEDED or not _exists(published):
        if job_id in dead_letters or state is JobState.FAILED:
            summary["unexpected"].append(job_id)  # failed when it should have succeeded
        else:
            summary["lost"].append(job_id)
        return
    actual = published.read_bytes()
    if actual != expect.content:
        key = "partial" if expect.content.startswith(actual) else "mismatched"
        summary[key].append(job_id)
    summary["publications"] += job.publications
    summary["published_once" if job.publications <= 1 else "published_more"] += 1
    result = (record.result if record is not None else None) or {}
    if "sha256" in result and result["sha256"] != hashlib.sha256(expect.content).hexdigest():
        summary["duplicates_identical"] = False
    if "output_bytes" in result and result["output_bytes"] != len(expect.content):
        summary["duplicates_identical"] = False


def describe(summary: Mapping[str, Any]) -> str:
    """The summary as a short text, for assertion messages."""
    shown = {
        key: (value if not isinstance(value, list) else f"{len(value)}: {value[:5]}")
        for key, value in summary.items()
    }
    return json.dumps(shown, indent=1, default=str)


def assert_clean(summary: Mapping[str, Any]) -> None:
    """Fail with the whole summary unless every job is accounted for as expected."""
    assert summary["ok"], describe(summary)
