"""Rows to records: what the SQL backends read, as :class:`JobRecord`, :class:`Transition`,
counts, :class:`GroupRecord` and :class:`Completion`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from conveyor.jobs import JobState
from conveyor.ledger.groups import Completion, GroupRecord, GroupState
from conveyor.ledger.records import JobRecord, Transition
from conveyor.ledger.schema import STATES


def decode_record(row: Sequence[Any]) -> JobRecord:
    """A :class:`JobRecord` from a row of the record columns."""
    result = row[14]
    return JobRecord(
        job_id=row[0],
        state=JobState(row[1]),
        attempts=row[2],
        updated_at=row[3],
        task=row[4],
        input=row[5],
        output=row[6],
        seed=row[7],
        worker=row[8],
        source=row[9],
        submitted_at=row[10],
        started_at=row[11],
        finished_at=row[12],
        error=row[13],
        result=None if result is None else _decode_result(result),
        redrives=row[15],
        group=row[16],
        group_completion=bool(row[17]),
    )


def _decode_result(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decode_transition(row: Sequence[Any]) -> Transition:
    """A :class:`Transition` from a row of the transition columns."""
    job_id, state, attempt, at, worker, error = row
    return Transition(job_id, JobState(state), attempt, at, worker, error)


def decode_counts(rows: Sequence[Sequence[Any]]) -> dict[str, dict[JobState, int]]:
    """Counts by task and state (every state present; tasks with no jobs left out) from
    ``(task, state, n)`` rows."""
    out: dict[str, dict[JobState, int]] = {}
    for task, state, n in rows:
        out.setdefault(task, dict.fromkeys(JobState, 0))[JobState(state)] += int(n)
    return {task: counts for task, counts in out.items() if any(counts.values())}


def counts_of(row: Sequence[Any]) -> dict[JobState, int]:
    """Counts by state from a row of summed count columns."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in zip(STATES, row, strict=False):
        counts[state] = int(n or 0)
    return counts


def decode_group(row: Sequence[Any], sums: Sequence[Any] | None) -> GroupRecord:
    """A :class:`GroupRecord` from a row of the group columns and its summed counts (a
    ``(counts..., first_started_at, last_finished_at)`` row, None if it has none)."""
    counts = counts_of(sums or ())
    first = last = None
    if sums is not None:
        first, last = sums[len(STATES)], sums[len(STATES) + 1]
    return GroupRecord(
        group_id=row[0],
        state=GroupState(row[1]),
        total=int(row[2]),
        counts=counts,
        tolerate_failures=int(row[3]),
        completion_job_id=row[4],
        reason=row[5],
        source=row[6],
        created_at=float(row[7]),
        finished_at=as_float(row[8]),
        first_started_at=as_float(first),
        last_finished_at=as_float(last),
        completion_due_at=as_float(row[9]),
        completion_sent_at=as_float(row[10]),
    )


def decode_completion(row: Sequence[Any]) -> Completion:
    """A :class:`Completion` from a ``(group_id, completion, completion_due_at)`` row."""
    group_id, envelope, due_at = row
    return Completion.from_stored(group_id, envelope, float(due_at))


def as_float(value: Any) -> float | None:
    """A nullable number column as a float (None stays None)."""
    return None if value is None else float(value)
