"""The job ledger contract: every job's state, attempts, timings and history, in a database.

Backends (SQLite embedded, PostgreSQL for clusters) implement the underscored methods;
the public ones check their arguments and define the behaviour every backend shares.
"""

from __future__ import annotations

import abc
import json
import math
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import BadInput, ConveyorError
from conveyor.jobs import TERMINAL, Job, JobState
from conveyor.ledger.groups import (
    Completion,
    GroupRecord,
    GroupSpec,
    check_count,
    check_group_id,
    completion_job,
)
from conveyor.storage import check_job_id

#: The schema version this code writes. A database with a newer one is refused; an older
#: one is upgraded by ``conveyor ledger migrate``.
SCHEMA_VERSION = 1
#: Errors longer than this are cut (the ledger holds reasons, not logs).
MAX_ERROR_CHARS = 4000
#: Results whose JSON is larger than this are replaced by ``{"truncated_bytes": n}``.
MAX_RESULT_BYTES = 64 * 1024
#: How many recent failures a summary lists by default.
RECENT_FAILURES = 10
#: Default retention of finished jobs (``conveyor ledger prune`` and workers' pruning).
DEFAULT_RETENTION_S = 30 * 86400.0
#: Rows a prune deletes per transaction, so that writers are never blocked for long.
PRUNE_BATCH = 1000

_WRITER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)

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


def new_writer_id() -> str:
    """A writer id unique to this process: ``<host>-<pid>-<random>``."""
    host = "".join(c if c in _WRITER_CHARS else "_" for c in socket.gethostname()[:63])
    return f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


def check_writer_id(writer: str) -> str:
    """Return ``writer`` if it is 1 to 100 of ``[A-Za-z0-9_.-]`` (not starting with a dot).

    Raises:
        BadInput: it is not.
    """
    if not (
        isinstance(writer, str)
        and 0 < len(writer) <= 100
        and set(writer) <= _WRITER_CHARS
        and not writer.startswith(".")
    ):
        raise BadInput(f"bad ledger writer id {writer!r}: use 1 to 100 of [A-Za-z0-9_.-]")
    return writer


class JobNotFound(BadInput):
    """No job with that id (or id prefix) is in the ledger."""


class AmbiguousJobId(BadInput):
    """The id prefix matches more than one job: give more characters."""


class JobFinished(BadInput):
    """The job has already finished: a finished job cannot be cancelled."""


class SchemaMismatch(ConveyorError):
    """The ledger's schema is not the one this conveyor knows."""

    permanent = True
    exit_code = 78


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


@dataclass(frozen=True)
class EventRow:
    """A checked event as backends write it: times resolved, texts trimmed, JSON encoded."""

    job_id: str
    state: JobState
    rank: int
    attempt: int
    at: float
    worker: str | None
    task: str | None
    input: str | None
    output: str | None
    seed: int | None
    error: str | None
    result_json: str | None
    source: str | None
    redrive: bool
    group: str | None = None
    #: Set only on the queued event the ledger itself writes for a group's completion job.
    completes: bool = False


def check_event(event: LedgerEvent, now: float) -> EventRow:
    """Check one event and turn it into the row a backend writes.

    Raises:
        BadInput: the job id, attempt, time or seed is invalid.
    """
    check_job_id(event.job_id)
    state = JobState(event.state)
    attempt = event.attempt
    if type(attempt) is not int or attempt < 0:
        raise BadInput(f"bad attempt {attempt!r}: an int >= 0")
    at = now if event.at is None else float(event.at)
    if not math.isfinite(at) or at < 0:
        raise BadInput(f"bad event time {event.at!r}")
    if event.seed is not None and (type(event.seed) is not int or not 0 <= event.seed < 2**63):
        raise BadInput(f"bad seed {event.seed!r}: an int from 0 to 2**63-1")
    if event.redrive and state is not JobState.QUEUED:
        raise BadInput("a redrive event reopens a job as queued")
    group = None if event.group is None else check_group_id(event.group)
    error = event.error
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "..."
    result_json = None
    if event.result is not None:
        result_json = _ENCODER.encode(dict(event.result))
        if len(result_json) > MAX_RESULT_BYTES:
            result_json = _ENCODER.encode({"truncated_bytes": len(result_json)})
    return EventRow(
        job_id=event.job_id,
        state=state,
        rank=state_rank(state, attempt),
        attempt=attempt,
        at=at,
        worker=_text(event.worker),
        task=_text(event.task),
        input=_text(event.input),
        output=_text(event.output),
        seed=event.seed,
        error=_text(error),
        result_json=result_json,
        source=_text(event.source),
        redrive=event.redrive,
        group=group,
    )


def _text(value: str | None) -> str | None:
    """Text a database can store: lone surrogates and NULs replaced."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The (updated_at, job_id) position in a cursor from :attr:`JobRecord.cursor`.

    Raises:
        BadInput: it is not such a cursor.
    """
    at_text, _, job_id = cursor.partition("/")
    try:
        at = float(at_text)
    except ValueError:
        at = math.nan
    if not math.isfinite(at) or not job_id:
        raise BadInput(f"bad cursor {cursor[:80]!r}: use the cursor of a listed job")
    return at, check_job_id(job_id)


def _check_limit(limit: int) -> None:
    if type(limit) is not int or not 1 <= limit <= 10_000:
        raise BadInput(f"bad limit {limit!r}: 1 to 10000")


def check_prefix(prefix: str) -> str:
    """The upper-cased job id prefix to look up (ids compare case-insensitively).

    Raises:
        BadInput: it could not be part of a job id.
    """
    check_job_id(prefix)
    return prefix.upper()


class Ledger(abc.ABC):
    """Where every job's state is recorded and read, by all workers and commands.

    Writing: :meth:`record_many` writes a batch of events in one transaction (all or
    none: a writer killed mid-call leaves no part of it). Transitions are forward-only,
    decided in the database by :func:`state_rank`: a late ``running`` never overwrites
    ``succeeded``; ``failed`` reopens only through :meth:`redrive`; ``cancelled`` only
    comes from :meth:`cancel`. Fields an event does not carry keep the job's values, and
    fields the job lacks are filled from any event, even one that does not move it (a
    worker may record ``succeeded`` before the submitter's ``queued`` arrives).

    Groups: :meth:`create_group` makes a group of ``total`` jobs (jobs join it through
    the ``group`` of their events); its counts are kept in the same transactions as its
    jobs' transitions. The transaction that makes its last job terminal, with no more
    failures than it tolerates, makes its completion job due, exactly once whatever
    duplicates, retries and reorderings happen: the completion is inserted in the ledger as
    ``queued`` and returned by that :meth:`record_many`, and stays listed by
    :meth:`due_completions` until :meth:`mark_completion_sent` (an outbox: the message is
    sent outside the database). Too many failures fail the group at once and cancel its
    queued and retrying jobs, in the same transaction.

    Reading: every read is an indexed query whose cost does not grow with the number of
    jobs ever recorded: counts are maintained in the same transactions as the
    transitions; listings walk an index newest first and page with a cursor.

    Instances are safe to share between threads. Blocking calls, all of them: a write
    waits for others holding the same rows, and a transaction that ends a job of a group
    (or adds jobs to it) waits, after its job rows, for others deciding the same group (on
    PostgreSQL; SQLite has one writer at a time anyway). Jobs without a group never wait
    on groups.

    Raises (any method):
        SchemaMismatch: the database was written by a newer conveyor, or needs
            ``conveyor ledger migrate``.
        StorageError: the database cannot be reached or written (``StorageFull`` when
            its disk is full); a transient fault, retried by the worker.
    """

    #: The URL it was opened with, with any password replaced by ``***`` (safe to print).
    url: str
    #: This process's writer id: names its worker-stats row.
    writer: str

    # --- writing -----------------------------------------------------------------------

    def record_many(
        self, events: Iterable[LedgerEvent], *, now: float | None = None
    ) -> list[Completion]:
        """Record events in one transaction; every event is checked before any is written.

        ``at`` defaults to ``now`` (default: the clock). Errors over ``MAX_ERROR_CHARS``
        and results over ``MAX_RESULT_BYTES`` are cut; values JSON cannot hold are stored
        as strings. A redrive event (``redrive=True``) acts as :meth:`redrive`.

        Events about jobs of a group also update the group in the same transaction (its
        counts; its state when the last job ends or too many failed; the cancels of its
        open jobs when it fails). Jobs without a group pay nothing for this.

        Returns:
            The completions this transaction made due (usually none): send each to the
            queue, then :meth:`mark_completion_sent`. No other call returns the same
            completion; :meth:`due_completions` lists it until it is marked sent.

        Raises:
            BadInput: a job or group id, attempt, time or seed is invalid (nothing is
                written).
        """
        stamp = time.time() if now is None else now
        rows = [check_event(event, stamp) for event in events]
        return self._record_rows(rows, stamp) if rows else []

    def record(self, job_id: str, state: JobState, **fields: Any) -> list[Completion]:
        """Record one event; see :meth:`record_many` and :class:`LedgerEvent`'s fields."""
        return self.record_many([LedgerEvent(job_id, JobState(state), **fields)])

    def record_queued(
        self,
        jobs: Iterable[Job],
        *,
        sources: Sequence[str] | None = None,
        group: str | None = None,
    ) -> list[Completion]:
        """Record freshly sent jobs as ``queued`` at their submit time (a submitter's call).

        ``sources`` gives each job's submitted file name, in the same order; ``group``
        makes them jobs of that group (create it first, see :meth:`create_group`).
        Returns the completions made due, as :meth:`record_many` (a worker may have
        recorded the end of a job before its submitter recorded it queued).
        """
        jobs = list(jobs)
        names: Sequence[str | None] = [None] * len(jobs) if sources is None else sources
        if len(names) != len(jobs):
            raise BadInput("record_queued: one source per job")
        return self.record_many(
            [
                LedgerEvent.for_job(
                    job, JobState.QUEUED, at=job.submitted_at, source=name, group=group
                )
                for job, name in zip(jobs, names, strict=True)
            ]
        )

    def create_group(
        self,
        group_id: str,
        *,
        total: int,
        tolerate_failures: int = 0,
        completion: Mapping[str, Any] | None = None,
        source: str | None = None,
        at: float | None = None,
    ) -> list[Completion]:
        """Create a group of ``total`` jobs, in one transaction; call it before recording
        the group's jobs (jobs recorded earlier are counted too, whatever the order).

        Args:
            group_id: its id (the job id alphabet; :meth:`group` finds it by prefix).
            total: how many jobs the group has (its jobs are those whose events carry
                ``group=group_id``); fixed once created.
            tolerate_failures: how many of its jobs may fail or be cancelled with the
                group still succeeding (an absolute count).
            completion: the envelope fields of the job to run once every job is terminal
                with no more failures than tolerated: ``job_id`` (deterministic: derive
                it from the group id) and ``task`` required; ``input``, ``output``,
                ``params`` (JSON) and ``seed`` optional (a seed is drawn and stored if
                not given). None for a group with no completion, which succeeds when its
                last job ends.
            source: the submitted file name, shown by ``status``.
            at: the creation time (default: the clock).

        Idempotent: creating the same id again with the same total, tolerance and
        completion job id changes nothing and returns []. A group of 0 jobs is done at
        once: its completion is due at once (and returned), or it succeeds at once.

        Returns:
            The completion this call made due: only for a group whose jobs are all
            already terminal (0 jobs, or all recorded before the group).

        Raises:
            GroupConflict: the group exists with another total, tolerance or completion.
            BadInput: an id, count or completion field is invalid.
        """
        check_group_id(group_id)
        check_count("group total", total)
        check_count("tolerated failures", tolerate_failures)
        created_at = time.time() if at is None else float(at)
        if not math.isfinite(created_at) or created_at < 0:
            raise BadInput(f"bad group creation time {at!r}")
        job = None if completion is None else completion_job(group_id, completion, created_at)
        spec = GroupSpec(
            group_id=group_id,
            total=total,
            tolerate_failures=tolerate_failures,
            completion_job_id=None if job is None else job.job_id,
            completion_json=None if job is None else job.to_json(),
            source=_text(source),
            created_at=created_at,
        )
        return self._create_group(spec)

    def mark_completion_sent(self, group_id: str, *, at: float | None = None) -> bool:
        """Mark the group's completion message sent: :meth:`due_completions` stops listing
        it. Idempotent.

        Returns:
            True if this call marked it; False if it was marked already, or the group is
            unknown or has no due completion.
        """
        check_group_id(group_id)
        return self._mark_completion_sent(group_id, time.time() if at is None else at)

    def redrive(self, job_id: str, *, at: float | None = None) -> bool:
        """Reopen a failed job as ``queued`` (``dlq redrive``); the only way back from failed.

        The job's attempts restart at 0 and its ``redrives`` count rises; its history keeps
        the failure. In a group, it counts as queued again (no longer a failure); a group
        that already failed does not reopen, so its redriven jobs are cancelled at once.
        Redriving a group's failed completion job makes the group ``completing`` again.

        Returns:
            True if the job was failed and is now queued; False otherwise (unknown, or
            not failed: a redrive of a running, succeeded or cancelled job is refused).
        """
        return self._redrive(check_job_id(job_id), time.time() if at is None else at)

    def cancel(
        self, job_id: str, *, reason: str | None = None, at: float | None = None
    ) -> JobRecord:
        """Mark a job ``cancelled`` unless it has finished; return its record after.

        Workers honour it: a cancelled job is acked without running when received, and a
        running one is not published. Idempotent for a job already cancelled.

        A cancelled job of a group counts as one of its failures (it may fail the group);
        a cancelled completion job fails its group. Should the cancel make a completion due
        (the group's last open job, within its tolerance), :meth:`due_completions` lists it.

        Raises:
            JobNotFound: no such job.
            JobFinished: it already succeeded or failed.
        """
        record = self.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        if record.state is JobState.CANCELLED:
            return record
        if record.state in TERMINAL:
            raise JobFinished(f"job {record.job_id} already {record.state.value}: not cancelled")
        self.record_many(
            [
                LedgerEvent(
                    record.job_id,
                    JobState.CANCELLED,
                    record.attempts,
                    at=at,
                    error=reason or "cancelled",
                )
            ]
        )
        after = self.get(record.job_id)
        assert after is not None
        if after.state not in (JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED):
            raise AssertionError(f"cancel of {record.job_id} left it {after.state}")
        if after.state is not JobState.CANCELLED:
            raise JobFinished(f"job {record.job_id} already {after.state.value}: not cancelled")
        return after

    def record_worker_stats(self, writer: str, counts: Mapping[str, int]) -> None:
        """Store a writer's cumulative counters (queue requests by kind), replacing its
        previous report; :meth:`queue_requests` sums the latest report of every writer.

        Raises:
            BadInput: the writer id or a count is invalid.
        """
        check_writer_id(writer)
        for kind, count in counts.items():
            if not isinstance(kind, str) or type(count) is not int or count < 0:
                raise BadInput(f"bad worker stat {kind!r}={count!r}: counts are ints >= 0")
        if counts:
            self._record_worker_stats(writer, dict(counts), time.time())

    def prune(
        self,
        older_than_s: float,
        *,
        now: float | None = None,
        batch_size: int = PRUNE_BATCH,
        max_batches: int | None = None,
    ) -> int:
        """Delete jobs that finished more than ``older_than_s`` ago, with their history
        and their share of the counts, ``batch_size`` per transaction so that writers are
        never held up for long; stats of writers silent that long go too.

        A group's jobs go with their group, once it finished (succeeded or failed) that
        long ago, never before: its counts must stay whole while it runs.

        Returns:
            How many jobs were deleted.

        Raises:
            BadInput: ``older_than_s`` is negative or not finite, or ``batch_size`` < 1.
        """
        if not math.isfinite(older_than_s) or older_than_s < 0:
            raise BadInput(f"bad retention {older_than_s!r}: seconds >= 0")
        if batch_size < 1:
            raise BadInput("prune batch size must be at least 1")
        cutoff = (time.time() if now is None else now) - older_than_s
        deleted = batches = 0
        while max_batches is None or batches < max_batches:
            n = self._prune_batch(cutoff, batch_size)
            deleted += n
            batches += 1
            if n < batch_size:
                break
        while max_batches is None or batches < max_batches:
            n, more = self._prune_group_batch(cutoff, batch_size)
            deleted += n
            batches += 1
            if not more:
                break
        self._prune_writers(cutoff)
        return deleted

    # --- reading -----------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or with this case-insensitive unique id prefix; None if
        there is none.

        Raises:
            AmbiguousJobId: the prefix matches several jobs.
            BadInput: it could not be part of a job id.
        """
        check_job_id(job_id)
        found = self._get_many([job_id]).get(job_id)
        if found is not None:
            return found
        matches = self._find_prefix(check_prefix(job_id), 2)
        if len(matches) > 1:
            raise AmbiguousJobId(
                f"job id prefix {job_id} matches several jobs ({', '.join(matches)}, ...): "
                "give more characters"
            )
        return self._get_many(matches).get(matches[0]) if matches else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The records of these exact job ids that the ledger has, by id (one query)."""
        ids = list(dict.fromkeys(check_job_id(job_id) for job_id in job_ids))
        return self._get_many(ids) if ids else {}

    def counts(self, *, task: str | None = None) -> dict[JobState, int]:
        """Jobs per state (every state present), of one task if given. Constant time."""
        by_task = self.counts_by_task()
        totals = dict.fromkeys(JobState, 0)
        for name, counts in by_task.items():
            if task is None or name == task:
                for state, n in counts.items():
                    totals[state] += n
        return totals

    def open_jobs(self, job_ids: Iterable[str]) -> list[str]:
        """Which of these job ids are known and not terminal (what ``wait`` polls)."""
        records = self.get_many(job_ids)
        return [job_id for job_id, rec in records.items() if rec.state not in TERMINAL]

    def summary(
        self, now: float | None = None, *, failures: int = RECENT_FAILURES
    ) -> LedgerSummary:
        """Counts by state and task, finish rates, recent failures, queue age and request
        counts: a handful of indexed queries, whatever the ledger's size."""
        now = time.time() if now is None else now
        by_task = self.counts_by_task()
        counts = dict.fromkeys(JobState, 0)
        for per_state in by_task.values():
            for state, n in per_state.items():
                counts[state] += n
        finished = sum(n for state, n in counts.items() if state in TERMINAL)
        recent = self._finished_between(now - 60.0, now)
        first_submit, last_finish = self._span()
        span = None
        if first_submit is not None and last_finish is not None:
            span = last_finish - first_submit
        oldest = self._oldest_queued_at()
        failed = self.jobs(JobState.FAILED, limit=failures) if failures > 0 else []
        return LedgerSummary(
            generated_at=now,
            counts=counts,
            total=sum(counts.values()),
            finished_last_minute=recent,
            rate_last_minute_per_s=recent / 60.0,
            rate_overall_per_s=finished / span if finished and span and span > 0 else None,
            recent_failures=[
                Failure(r.job_id, r.updated_at, r.error, r.task, r.source) for r in failed
            ],
            oldest_queued_age_s=None if oldest is None else max(0.0, now - oldest),
            queue_requests=self.queue_requests(),
            by_task={task: c for task, c in by_task.items() if any(c.values())},
        )

    def jobs(
        self,
        state: JobState | None = None,
        *,
        task: str | None = None,
        group: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[JobRecord]:
        """Jobs (in ``state``, of ``task``, of ``group``, if given), most recently updated
        first. A group's listing includes its completion job once it is due.

        ``before`` is the :attr:`JobRecord.cursor` of the last record of the previous
        page; the next page starts after it.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000, or the cursor or group id is malformed.
        """
        _check_limit(limit)
        position = None if before is None else parse_cursor(before)
        if group is not None:
            check_group_id(group)
        return self._jobs(
            None if state is None else JobState(state), task, limit, position, group=group
        )

    def group(self, group_id: str) -> GroupRecord | None:
        """The group with this id, or with this case-insensitive unique id prefix; None if
        there is none. Constant time (its counts are kept, not counted).

        Raises:
            AmbiguousJobId: the prefix matches several groups.
            BadInput: it could not be part of a group id.
        """
        check_group_id(group_id)
        found = self._get_group(group_id)
        if found is not None:
            return found
        matches = self._find_group_prefix(group_id.upper(), 2)
        if len(matches) > 1:
            raise AmbiguousJobId(
                f"group id prefix {group_id} matches several groups ({', '.join(matches)}, "
                "...): give more characters"
            )
        return self._get_group(matches[0]) if matches else None

    def groups(self, *, limit: int = 100, before: str | None = None) -> list[GroupRecord]:
        """Groups, newest created first; ``before`` is the :attr:`GroupRecord.cursor` of
        the last record of the previous page.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000, or the cursor is malformed.
        """
        _check_limit(limit)
        return self._groups(limit, None if before is None else parse_cursor(before))

    def due_completions(self, *, limit: int = 100) -> list[Completion]:
        """Completions made due and not yet marked sent, oldest first (an index walk over
        those only). Whoever sends one calls :meth:`mark_completion_sent` after; a
        completion sent twice is harmless (its job id is fixed), so a sender that died
        between the two leaves only a duplicate behind.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000.
        """
        _check_limit(limit)
        return self._due_completions(limit)

    # --- the backend's part ------------------------------------------------------------

    @abc.abstractmethod
    def _record_rows(self, rows: Sequence[EventRow], now: float) -> list[Completion]:
        """Apply checked events in one transaction, in order, by the rank rule, settling
        the groups of their jobs; the completions it made due."""

    @abc.abstractmethod
    def _create_group(self, spec: GroupSpec) -> list[Completion]:
        """Create the group (or check an existing one against ``spec``) and settle it, in
        one transaction."""

    @abc.abstractmethod
    def _mark_completion_sent(self, group_id: str, at: float) -> bool:
        """Set the group's completion-sent time if unset; True if this call set it."""

    @abc.abstractmethod
    def _prune_group_batch(self, cutoff: float, limit: int) -> tuple[int, bool]:
        """Delete up to ``limit`` jobs of groups finished before ``cutoff``, and such
        groups left with no job (one transaction); (jobs deleted, whether more remain)."""

    @abc.abstractmethod
    def _get_group(self, group_id: str) -> GroupRecord | None:
        """The created group with exactly this id."""

    @abc.abstractmethod
    def _find_group_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` created group ids whose upper-cased form starts with ``prefix``."""

    @abc.abstractmethod
    def _groups(self, limit: int, before: tuple[float, str] | None) -> list[GroupRecord]:
        """A page of created groups, newest first, strictly after ``before``."""

    @abc.abstractmethod
    def _due_completions(self, limit: int) -> list[Completion]:
        """Completions of groups in ``completing`` not marked sent, oldest due first."""

    @abc.abstractmethod
    def _redrive(self, job_id: str, at: float) -> bool:
        """Reopen a failed job as queued in one transaction; False if it is not failed."""

    @abc.abstractmethod
    def _record_worker_stats(self, writer: str, counts: dict[str, int], at: float) -> None:
        """Replace the writer's stats row(s)."""

    @abc.abstractmethod
    def _prune_batch(self, cutoff: float, limit: int) -> int:
        """Delete up to ``limit`` terminal jobs finished before ``cutoff`` (one transaction)."""

    @abc.abstractmethod
    def _prune_writers(self, cutoff: float) -> None:
        """Delete the stats of writers that last reported before ``cutoff``."""

    @abc.abstractmethod
    def _get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records of these exact ids."""

    @abc.abstractmethod
    def _find_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` job ids whose upper-cased form starts with ``prefix``."""

    @abc.abstractmethod
    def counts_by_task(self) -> dict[str, dict[JobState, int]]:
        """Jobs per task and state ("" for jobs with no task yet), from the maintained
        counters: constant time."""

    @abc.abstractmethod
    def _finished_between(self, start: float, end: float) -> int:
        """Jobs that finished in ``[start, end]`` (an index range)."""

    @abc.abstractmethod
    def _span(self) -> tuple[float | None, float | None]:
        """The first submit time and the last finish time (two index lookups)."""

    @abc.abstractmethod
    def _oldest_queued_at(self) -> float | None:
        """When the oldest job still queued was submitted (an index lookup)."""

    @abc.abstractmethod
    def _jobs(
        self,
        state: JobState | None,
        task: str | None,
        limit: int,
        before: tuple[float, str] | None,
        *,
        group: str | None = None,
    ) -> list[JobRecord]:
        """A page of jobs, newest update first, strictly after ``before``."""

    @abc.abstractmethod
    def history(self, job_id: str) -> list[Transition]:
        """The job's state changes, oldest first (empty for an unknown job)."""

    @abc.abstractmethod
    def transitions(
        self, since: float, until: float | None = None, *, limit: int = 10_000
    ) -> list[Transition]:
        """State changes recorded with ``since <= at < until``, oldest first, at most
        ``limit`` (the dashboard's chart reads a time window, not the whole ledger)."""

    @abc.abstractmethod
    def queue_requests(self) -> dict[str, int]:
        """Queue requests by kind, summed over every writer's latest report."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version of the database (0 if it has none yet)."""

    @abc.abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema to :data:`SCHEMA_VERSION`; (before, after).

        Raises:
            SchemaMismatch: the database's schema is newer than this code's.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections. Idempotent."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
