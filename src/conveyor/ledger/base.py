"""The job ledger contract: every job's state, attempts, timings and history, in a database.

Backends (SQLite embedded, PostgreSQL for clusters) implement the underscored methods;
the public ones check their arguments and define the behaviour every backend shares. The
readers are in :mod:`.reading`, the group methods in :mod:`.group_ledger`.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.errors import BadInput
from conveyor.jobs import TERMINAL, Job, JobState
from conveyor.ledger.checks import EventRow, check_event, check_writer_id
from conveyor.ledger.errors import JobFinished, JobNotFound
from conveyor.ledger.group_ledger import GroupLedger
from conveyor.ledger.groups import Completion
from conveyor.ledger.reading import LedgerReader
from conveyor.ledger.records import JobRecord, LedgerEvent
from conveyor.storage import check_job_id

#: Default retention of finished jobs (``conveyor ledger prune`` and workers' pruning).
DEFAULT_RETENTION_S = 30 * 86400.0
#: Rows a prune deletes per transaction, so that writers are never blocked for long.
PRUNE_BATCH = 1000


class Ledger(LedgerReader, GroupLedger):
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

    # --- the backend's part ------------------------------------------------------------

    @abc.abstractmethod
    def _record_rows(self, rows: Sequence[EventRow], now: float) -> list[Completion]:
        """Apply checked events in one transaction, in order, by the rank rule, settling
        the groups of their jobs; the completions it made due."""

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
    def schema_version(self) -> int:
        """The schema version of the database (0 if it has none yet)."""

    @abc.abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema to :data:`.schema.SCHEMA_VERSION`; (before, after).

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
