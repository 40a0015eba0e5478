"""Reconcile the dead-letter queue with the ledger: jobs the queue gave up on become failed.

A worker that dies on a job's last attempt records nothing; the queue then moves the message
to the dead-letter queue itself (SQS server-side, SQLite inside ``receive``), and without
this the ledger would say ``running`` forever.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from conveyor.errors import AccessDenied, BadInput, ConfigError, ConveyorError, QueueNotFound
from conveyor.jobs import TERMINAL, Job, JobState
from conveyor.ledger import JobRecord, Ledger, LedgerEvent, fold_events
from conveyor.queues.base import DeadLetter, Queue, QueueStats
from conveyor.storage import remove_temps

log = logging.getLogger("conveyor.reconcile")

#: Why a job that reached the dead-letter queue without a recorded outcome failed.
CRASH_HINT = "the worker died or its lease expired on every attempt"
#: Seconds between dead-letter checks of a worker on a remote queue (SQS: a check is two
#: GetQueueAttributes requests). A remote worker looks only after it saw work since its last
#: look, so a worker that stays idle makes nothing but its 3 long polls a minute.
REMOTE_CHECK_EVERY_S = 60.0
#: The same on a local queue (SQLite, memory), where a check costs no request.
LOCAL_CHECK_EVERY_S = 2.0
#: Dead letters read per check.
LIST_LIMIT = 1000

_FATAL = (ConfigError, QueueNotFound, AccessDenied)


def _job_of(body: str) -> tuple[str, Job | None] | None:
    """The dead letter's job id and, if the body is a valid envelope, its job."""
    try:
        job = Job.from_json(body)
    except BadInput:
        from conveyor.worker import job_id_of  # the worker imports this module

        job_id = job_id_of(body)
        return None if job_id is None else (job_id, None)
    return job.job_id, job


def last_error(ledger: Ledger, job_id: str) -> str | None:
    """The newest error recorded for the job (a retry's or a failure's), even when a later
    ``running`` event hides it from the job's record."""
    try:
        lines = []
        for path in ledger.job_files(job_id):
            for line in path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]:
                kind = line.split("\t", 3)[2:3]
                if kind and kind[0] in (JobState.RETRYING.value, JobState.FAILED.value):
                    lines.append(line)
        record = fold_events(job_id, lines)
    except (OSError, ConveyorError):
        return None
    return None if record is None else record.error


def dead_letter_reason(letter: DeadLetter, record: JobRecord | None, error: str | None) -> str:
    """``dead-lettered after N receives; last error: ... (the worker died or ...)``."""
    receives = max(letter.receive_count, record.attempts if record is not None else 0)
    last = error or letter.reason or "none recorded"
    return f"dead-lettered after {receives} receives; last error: {last} ({CRASH_HINT})"


def reconcile_dead_letters(
    letters: Iterable[DeadLetter], ledger: Ledger, *, worker: str | None = None
) -> list[str]:
    """Record as ``failed`` every dead-lettered job that the ledger does not have as
    terminal, with the reason it got there. Idempotent; a job that succeeded (a duplicate
    delivery published it) stays succeeded.

    Returns:
        The ids of the jobs recorded as failed.

    Raises:
        StorageError: the ledger could not be written.
    """
    reconciled: list[str] = []
    for letter in letters:
        found = _job_of(letter.body)
        if found is None:
            continue  # no job id: the worker that dead-lettered it logged why
        job_id, job = found
        record = ledger.get(job_id)
        if record is not None and record.state in TERMINAL:
            continue
        reason = dead_letter_reason(letter, record, last_error(ledger, job_id))
        attempt = max(letter.receive_count, record.attempts if record is not None else 0)
        if job is not None:
            event = LedgerEvent.for_job(
                job, JobState.FAILED, attempt=attempt, worker=worker, error=reason
            )
        else:
            event = LedgerEvent(job_id, JobState.FAILED, attempt, worker=worker, error=reason)
        ledger.record_many([event])
        reconciled.append(job_id)
        if job is not None and job.output is not None:
            _remove_temps_of(ledger, job.output)
    return reconciled


def _remove_temps_of(ledger: Ledger, output: str) -> None:
    """Remove what the job's dead workers left beside its output (it will not run again)."""
    with contextlib.suppress(ConveyorError):  # an unsafe path: nothing was ever written
        remove_temps(ledger.storage.resolve_output(output))


def check_every_s(queue_url: str) -> float:
    """How often an idle worker may look at the dead-letter queue of ``queue_url``."""
    remote = urlsplit(queue_url).scheme in ("http", "https")
    return REMOTE_CHECK_EVERY_S if remote else LOCAL_CHECK_EVERY_S


class DeadLetterWatch:
    """Notices messages the queue dead-lettered by itself and reconciles them, cheaply.

    It lists the dead-letter queue only when its count grew since the last look, looks at
    most every ``every_s`` seconds, and reuses the counts a stop policy fetched this round
    (:meth:`pending`), so an ``--until-empty`` worker pays no extra request for the counts.
    On a remote queue it looks only once after each spell of work (:meth:`note_activity`):
    a worker that stays idle spends no request on it.

    Args:
        queue: the worker's queue.
        ledger: the worker's ledger.
        worker: the worker's name, recorded with each reconciled job.
        clock: monotonic seconds (the worker's clock).
        every_s: least seconds between two looks (default: by the queue's kind).
    """

    def __init__(
        self,
        queue: Queue,
        ledger: Ledger,
        *,
        worker: str,
        clock: Callable[[], float],
        every_s: float | None = None,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.worker = worker
        self.every_s = check_every_s(queue.url) if every_s is None else every_s
        self._remote = urlsplit(queue.url).scheme in ("http", "https")
        self._active = False
        self._clock = clock
        self._checked_at = -math.inf
        self._seen: int | None = None
        self._fresh: QueueStats | None = None

    def pending(self) -> int:
        """The queue's pending count (for a stop policy); the counts are kept for :meth:`poll`."""
        self._fresh = self.queue.stats()
        return self._fresh.pending

    def note_activity(self) -> None:
        """The worker received messages: a look is worth its requests again."""
        self._active = True

    def poll(self, *, final: bool = False) -> list[str]:
        """Look at the dead-letter queue if due (always when ``final``); reconcile what is new.

        Never raises for a queue or storage failure (it logs, and the next look retries).

        Returns:
            The ids of the jobs recorded as failed.
        """
        fresh, self._fresh = self._fresh, None
        now = self._clock()
        if not final and now - self._checked_at < self.every_s:
            return []
        if final and fresh is None and self._seen is None:
            return []  # never looked and nothing fetched: not worth a request on the way out
        if not final and fresh is None and self._remote and not self._active:
            return []  # idle since the last look: keep an idle worker's requests at its polls
        self._checked_at = now
        self._active = False
        try:
            stats = fresh or self.queue.stats()
            seen, self._seen = self._seen, stats.dead_lettered
            if stats.dead_lettered <= (seen or 0):
                return []
            reconciled = reconcile_dead_letters(
                self.queue.dead_letters(LIST_LIMIT), self.ledger, worker=self.worker
            )
        except _FATAL:
            raise
        except ConveyorError as exc:
            self._seen = None  # look again next time
            log.warning("cannot reconcile the dead-letter queue: %s", exc.message)
            return []
        for job_id in reconciled:
            log.warning(
                "job %s was dead-lettered by the queue: recorded as failed",
                job_id,
                extra={"job_id": job_id, "action": "reconciled"},
            )
        return reconciled


def reconcile_listed(storage_root: Path, letters: list[DeadLetter]) -> list[str]:
    """Reconcile dead letters just listed (``conveyor dlq list``) into the ledger under
    ``storage_root``; nothing if the storage is not there.

    Raises:
        StorageError: the ledger could not be written.
    """
    if not storage_root.is_dir():
        return []
    with Ledger(storage_root) as ledger:
        return reconcile_dead_letters(letters, ledger, worker="conveyor-dlq")
