"""Job groups as the ledger keeps them: the group's record, its completion job, and the
checks on what :meth:`~conveyor.ledger.base.Ledger.create_group` is given."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from conveyor.errors import BadInput, BadMessage
from conveyor.job_ids import new_seed
from conveyor.jobs import VERSION, Job, JobState
from conveyor.storage import check_job_id

#: The largest completion envelope a group keeps (the queue's message limit).
MAX_COMPLETION_BYTES = 1024 * 1024
#: The envelope fields a completion may give; ``job_id`` and ``task`` are required.
_COMPLETION_FIELDS = frozenset({"job_id", "task", "input", "output", "params", "seed"})


class GroupState(enum.StrEnum):
    """Where a group is: ``running → (completing →) succeeded | failed``.

    ``running`` until all its jobs are terminal or too many failed; ``completing`` while
    its completion job is due or running; ``failed`` when more jobs failed than it
    tolerates, or its completion failed for good (a redriven completion makes the group
    ``completing`` again).
    """

    RUNNING = "running"
    COMPLETING = "completing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class GroupConflict(BadInput):
    """A group with this id exists with other settings (total, tolerance or completion)."""


def check_group_id(group_id: object) -> str:
    """Return ``group_id`` if it is 1 to 64 of ``[0-9A-Za-z_-]`` (the job id alphabet).

    Raises:
        BadInput: it is not.
    """
    try:
        return check_job_id(group_id)
    except BadInput:
        shown = repr(group_id)[:80]
        raise BadInput(f"bad group id {shown}: use 1 to 64 of [0-9A-Za-z_-]") from None


def check_count(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0.

    Raises:
        BadInput: it is not.
    """
    if type(value) is not int or value < 0:
        raise BadInput(f"bad {name} {value!r}: an int >= 0")
    return value


def completion_job(group_id: str, fields: Mapping[str, Any], created_at: float) -> Job:
    """The completion job a group will enqueue, from the envelope fields its creator gave.

    The seed is drawn here if not given, and stored with the group, so that every sender
    of the completion sends the same envelope.

    Raises:
        BadInput: a field is unknown, missing (``job_id``, ``task``) or invalid, or the
            envelope is over ``MAX_COMPLETION_BYTES``.
    """
    if not isinstance(fields, Mapping):
        raise BadInput(f"bad completion for group {group_id}: a mapping of envelope fields")
    unknown = sorted(set(fields) - _COMPLETION_FIELDS)
    if unknown:
        raise BadInput(f"bad completion for group {group_id}: unknown field(s) {unknown}")
    missing = [name for name in ("job_id", "task") if name not in fields]
    if missing:
        raise BadInput(f"bad completion for group {group_id}: missing field(s) {missing}")
    data = {
        "v": VERSION,
        "job_id": fields["job_id"],
        "task": fields["task"],
        "input": fields.get("input"),
        "output": fields.get("output"),
        "params": {} if fields.get("params") is None else fields["params"],
        "seed": fields["seed"] if "seed" in fields else new_seed(),
        "submitted_at": created_at,
    }
    try:
        job = Job.from_dict(data)
        size = len(job.to_json())
    except BadMessage as exc:
        reason = exc.message.removeprefix("bad message: ")
        raise BadInput(f"bad completion for group {group_id}: {reason}") from None
    if size > MAX_COMPLETION_BYTES:
        raise BadInput(
            f"bad completion for group {group_id}: its envelope is {size} bytes, over "
            f"{MAX_COMPLETION_BYTES}; put large data in an input file"
        )
    return job


@dataclass(frozen=True)
class Completion:
    """A group's completion job, due to be sent to the queue.

    ``job`` is the envelope to send: the same for every sender (its id, seed and submit
    time are stored with the group), so duplicates are harmless.
    """

    group_id: str
    job: Job
    due_at: float

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @classmethod
    def from_stored(cls, group_id: str, envelope: str, due_at: float) -> Completion:
        """The completion from a group row's stored envelope and due time."""
        job = Job.from_json(envelope)
        return cls(group_id, replace(job, submitted_at=float(due_at)), float(due_at))


@dataclass(frozen=True)
class GroupRecord:
    """A job group as the ledger has it now.

    ``counts`` are its jobs per state (every state present), not counting its completion
    job. ``first_started_at`` is the earliest start of any of its jobs and
    ``last_finished_at`` the latest finish; ``finished_at`` is set once the group
    succeeded or failed, and ``reason`` says why it failed. ``cursor`` is what
    :meth:`~conveyor.ledger.base.Ledger.groups` takes as ``before``.
    """

    group_id: str
    state: GroupState
    total: int
    counts: dict[JobState, int]
    tolerate_failures: int = 0
    completion_job_id: str | None = None
    reason: str | None = None
    source: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    first_started_at: float | None = None
    last_finished_at: float | None = None
    completion_due_at: float | None = None
    completion_sent_at: float | None = None

    @property
    def done(self) -> int:
        """Jobs that are terminal (succeeded, failed or cancelled)."""
        return sum(self.counts[state] for state in _TERMINAL_STATES)

    @property
    def failures(self) -> int:
        """Jobs that failed or were cancelled: what ``tolerate_failures`` is compared to."""
        return self.counts[JobState.FAILED] + self.counts[JobState.CANCELLED]

    @property
    def remaining(self) -> int:
        """Jobs of ``total`` not terminal yet (submitted or not)."""
        return max(0, self.total - self.done)

    @property
    def finished(self) -> bool:
        return self.state in (GroupState.SUCCEEDED, GroupState.FAILED)

    @property
    def cursor(self) -> str:
        """An opaque position after this record in a newest-first listing."""
        return f"{self.created_at!r}/{self.group_id}"

    def throughput_per_s(self, now: float | None = None) -> float | None:
        """Jobs finished per second since the first one started: up to ``now`` while the
        group's jobs run, up to the last finish once they are all done; None before any
        finished."""
        if self.first_started_at is None or self.done == 0:
            return None
        if self.remaining == 0 and self.last_finished_at is not None:
            end = self.last_finished_at
        else:
            end = time.time() if now is None else now
        span = end - self.first_started_at
        return self.done / span if span > 0 else None

    def time_left_s(self, now: float | None = None) -> float | None:
        """Seconds until the remaining jobs are done at the current throughput (0 once
        they are; None while unknown). The completion's own run is not included."""
        if self.remaining == 0:
            return 0.0
        rate = self.throughput_per_s(now)
        return None if rate is None else self.remaining / rate

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready dict (for ``status --json`` and the dashboard)."""
        return {
            "group_id": self.group_id,
            "state": self.state.value,
            "total": self.total,
            "counts": {state.value: n for state, n in self.counts.items()},
            "done": self.done,
            "failures": self.failures,
            "remaining": self.remaining,
            "tolerate_failures": self.tolerate_failures,
            "completion_job_id": self.completion_job_id,
            "reason": self.reason,
            "source": self.source,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "first_started_at": self.first_started_at,
            "last_finished_at": self.last_finished_at,
            "completion_due_at": self.completion_due_at,
            "completion_sent_at": self.completion_sent_at,
            "throughput_per_s": self.throughput_per_s(now),
            "time_left_s": self.time_left_s(now),
        }


_TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class GroupSpec:
    """A checked :meth:`~conveyor.ledger.base.Ledger.create_group` call, as backends
    write it."""

    group_id: str
    total: int
    tolerate_failures: int
    completion_job_id: str | None
    completion_json: str | None
    source: str | None
    created_at: float
