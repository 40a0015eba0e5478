"""What the ledger holds and returns: events, job records, transitions, summaries, and the
rank order that decides which event a job keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.jobs import TERMINAL, Job, JobState

# The forward-only order of events. An event moves a job only if its rank is larger than
# the job's: within a run of the message (``attempt``), queued < running < retrying, and
# any terminal state beats every open one; succeeded beats failed and cancelled, because its
# output was published. Equal ranks change nothing (a duplicate is harmless). Wall clocks of
# different machines are never compared.
_TERMINAL_RANK = 1 << 40
_OPEN_STEP = {JobState.QUEUED: 0, JobState.RUNNING: 1, JobState.RETRYING: 2}


def state_rank(state: JobState, attempt: int) -> int:
    """The rank of an event: the ledger keeps, per job, the event with the largest rank.

    Backends store it with the job and compare it in the database (``WHERE rank < new``),
    so the rule holds whichever process writes and in whatever order events arrive.
    """
    if state is JobState.SUCCEEDED:
        return _TERMINAL_RANK + 1
    if state in TERMINAL:
        return _TERMINAL_RANK
    return attempt * 4 + _OPEN_STEP[state]


@dataclass(frozen=True)
class LedgerEvent:
    """One thing that happened to a job, as written to the ledger.

    ``attempt`` is the message's receive count (1 for the first run; 0 for ``queued``).
    Only the fields that are known need be given: a field left None keeps the job's
    current value. ``source`` is the file name the job was submitted from (shown by
    ``status`` and the dashboard). ``group`` makes the job one of that group's jobs (see
    :meth:`Ledger.create_group`): submitters set it on ``queued`` events; once a job has a
    group it keeps it. ``redrive`` reopens a failed job (see :meth:`Ledger.redrive`).
    """

    job_id: str
    state: JobState
    attempt: int = 0
    at: float | None = None
    worker: str | None = None
    task: str | None = None
    input: str | None = None
    output: str | None = None
    seed: int | None = None
    error: str | None = None
    result: Mapping[str, object] | None = None
    source: str | None = None
    group: str | None = None
    redrive: bool = False

    @classmethod
    def for_job(cls, job: Job, state: JobState, **fields: Any) -> LedgerEvent:
        """An event about ``job`` carrying its task, paths and seed."""
        return cls(
            job_id=job.job_id,
            state=state,
            task=job.task,
            input=job.input,
            output=job.output,
            seed=job.seed,
            **fields,
        )


@dataclass(frozen=True)
class JobRecord:
    """A job as the ledger has it now.

    ``finished_at`` is set once the job is terminal; ``error`` while it is failed,
    cancelled or retrying; ``result`` (the task's returned dict) once it succeeded.
    ``attempts`` is the highest receive count recorded for the current run of its message.
    ``group`` is the job's group, if any; ``group_completion`` is True for the group's
    completion job (which is not one of the group's counted jobs).
    ``cursor`` is what :meth:`Ledger.jobs` takes as ``before`` to read the next page.
    """

    job_id: str
    state: JobState
    attempts: int
    updated_at: float
    task: str | None = None
    input: str | None = None
    output: str | None = None
    seed: int | None = None
    worker: str | None = None
    source: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    redrives: int = 0
    group: str | None = None
    group_completion: bool = False

    @property
    def duration_s(self) -> float | None:
        """Seconds from the last start to the finish, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def cursor(self) -> str:
        """An opaque position after this record in a newest-first listing."""
        return f"{self.updated_at!r}/{self.job_id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``status --json`` and the dashboard)."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "task": self.task,
            "source": self.source,
            "input": self.input,
            "output": self.output,
            "seed": self.seed,
            "worker": self.worker,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "updated_at": self.updated_at,
            "error": self.error,
            "result": self.result,
            "redrives": self.redrives,
            "group": self.group,
            "group_completion": self.group_completion,
        }


@dataclass(frozen=True)
class Transition:
    """One change of a job's state, as kept in its history (oldest first)."""

    job_id: str
    state: JobState
    attempt: int
    at: float
    worker: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "attempt": self.attempt,
            "at": self.at,
            "worker": self.worker,
            "error": self.error,
        }


@dataclass(frozen=True)
class Failure:
    """A failed job in a summary."""

    job_id: str
    failed_at: float
    error: str | None
    task: str | None
    source: str | None = None


@dataclass(frozen=True)
class LedgerSummary:
    """Counts and rates over every job in the ledger, each from an indexed query.

    Attributes:
        counts: jobs per state (every state present, zeros included).
        total: jobs known to the ledger (the sum of ``counts``).
        finished_last_minute: jobs that reached a terminal state in the last 60 s.
        rate_last_minute_per_s: ``finished_last_minute / 60``.
        rate_overall_per_s: finished jobs over the span from first submit to last finish.
        recent_failures: the newest failed jobs, newest first.
        oldest_queued_age_s: how long the oldest still-queued job has waited.
        queue_requests: queue requests by kind, summed over every writer's last report.
        by_task: jobs per task and state (tasks with no jobs left out).
    """

    generated_at: float
    counts: dict[JobState, int]
    total: int
    finished_last_minute: int
    rate_last_minute_per_s: float
    rate_overall_per_s: float | None
    recent_failures: list[Failure]
    oldest_queued_age_s: float | None
    queue_requests: dict[str, int]
    by_task: dict[str, dict[JobState, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "generated_at": self.generated_at,
            "counts": {state.value: n for state, n in self.counts.items()},
            "total": self.total,
            "finished_last_minute": self.finished_last_minute,
            "rate_last_minute_per_s": self.rate_last_minute_per_s,
            "rate_overall_per_s": self.rate_overall_per_s,
            "recent_failures": [
                {
                    "job_id": f.job_id,
                    "failed_at": f.failed_at,
                    "error": f.error,
                    "task": f.task,
                    "source": f.source,
                }
                for f in self.recent_failures
            ],
            "oldest_queued_age_s": self.oldest_queued_age_s,
            "queue_requests": dict(self.queue_requests),
            "by_task": {
                task: {state.value: n for state, n in counts.items()}
                for task, counts in self.by_task.items()
            },
        }
