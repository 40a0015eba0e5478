"""Jepsen-style accounting of every job after a fault scenario.

Each submitted job is classified from what is on the storage, never from what a worker
said: *lost* (expected to succeed, but no published output or no success in the ledger),
*published once* or *published more than once* (counted from the ledger's ``succeeded``
events: a worker records one after each publication), or *failed as expected* (a poison
job: failed in the ledger with a reason, nothing published). On top of that it checks
that every output is byte-identical to a clean run's (a shorter prefix of it is *partial*),
that every publication recorded the same content hash, that no temporary file is left
anywhere under the storage, that no job is stuck queued/running/retrying, and that no
job's state ever went backwards when its events are replayed in time order.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.jobs import JobState
from conveyor.ledger import fold_events
from conveyor.storage import TEMP_PREFIX

#: Rank of a state in the forward-only order.
_RANK = {"queued": 0, "running": 1, "retrying": 1, "failed": 2, "succeeded": 3}
_UNFINISHED = {JobState.QUEUED, JobState.RUNNING, JobState.RETRYING}


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


@dataclass(frozen=True)
class _Event:
    t: float
    kind: str
    writer: str
    seq: int
    line: str
    extras: str


def ledger_events(storage: Path) -> dict[str, list[_Event]]:
    """Every ledger event under ``storage``, by job id, in time order.

    Reads every log file of the ledger once (their line format is documented in
    docs/architecture.md); torn last lines are skipped like the ledger's readers do.
    """
    events: dict[str, list[_Event]] = defaultdict(list)
    for path in sorted((storage / "_conveyor" / "ledger").rglob("*.log")):
        text = path.read_bytes().decode("utf-8", "replace")
        for line in text.split("\n")[:-1]:
            parts = line.split("\t", 6)
            if len(parts) != 7:
                continue
            try:
                event = _Event(float(parts[0]), parts[2], parts[4], int(parts[5]), line, parts[6])
            except ValueError:
                continue
            events[parts[1]].append(event)
    for job_events in events.values():
        job_events.sort(key=lambda e: (e.t, e.writer, e.seq))
    return events


def _regressed(job_id: str, events: list[_Event]) -> bool:
    """Whether folding the job's events one by one, in time order, ever moved it back
    (other than by a redrive, the one documented way back: ``failed -> queued``)."""
    rank = -1
    for end in range(1, len(events) + 1):
        if events[end - 1].kind == "redrive":
            rank = -1
            continue
        record = fold_events(job_id, [e.line for e in events[:end]])
        if record is None:
            continue
        now = _RANK[record.state.value]
        if now < rank:
            return True
        rank = now
    return False


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
    storage: Path,
    *,
    backend: str = "",
    dead_letters: Collection[str] = (),
    extra: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Classify every job; return a summary that tests assert on and the report renders.

    Args:
        scenario: the scenario's name, for the report.
        expected: every submitted job and what it should end as.
        storage: the storage root.
        backend: the queue backend, for the report.
        dead_letters: job ids found in the dead-letter queue.
        extra: more numbers for the report (kills, seconds).

    Returns:
        ``ok`` (bool) and, per class, counts and the job ids concerned.
    """
    events = ledger_events(storage)
    summary: dict[str, Any] = {
        "scenario": scenario,
        "backend": backend,
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
    for expect in expected:
        summary["jobs"] += 1
        _classify(expect, events.get(expect.job_id, []), storage, dead_letters, summary)
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


def _classify(
    expect: Expect,
    events: list[_Event],
    storage: Path,
    dead_letters: Collection[str],
    summary: dict[str, Any],
) -> None:
    job_id = expect.job_id
    record = fold_events(job_id, [e.line for e in events]) if events else None
    state = record.state if record is not None else None
    if state in _UNFINISHED:
        summary["stuck"].append(job_id)
    if _regressed(job_id, events):
        summary["regressions"].append(job_id)
    # The worker that received a job after its previous holder died says so in the ledger.
    summary["crashed_attempts"] += sum(
        1 for e in events if e.kind == "retrying" and "did not finish" in e.extras
    )
    published = storage / expect.output
    successes = [json.loads(e.extras or "{}") for e in events if e.kind == "succeeded"]
    if expect.content is None:  # a job that must fail, publishing nothing
        error = record.error if record is not None else None
        if (
            state is JobState.FAILED
            and error
            and (expect.reason is None or expect.reason in error)
            and not _exists(published)
            and not successes
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
    summary["publications"] += len(successes)
    summary["published_once" if len(successes) <= 1 else "published_more"] += 1
    digest = hashlib.sha256(expect.content).hexdigest()
    for success in successes:
        result = success.get("result") or {}
        if "sha256" in result and result["sha256"] != digest:
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
