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

from conveyor.errors import FATAL_ERRORS, ConveyorError
from conveyor.jobs import TERMINAL, Job, JobState, job_id_of
from conveyor.ledger import JobRecord, Ledger, LedgerEvent
from conveyor.queues.base import Queue
from conveyor.queues.messages import DeadLetter, QueueStats
from conveyor.storage import Storage
from conveyor.tempfiles import remove_temps

log = logging.getLogger("conveyor.reconcile")

#: Why a job that reached the dead-letter queue without a recorded outcome failed.
CRASH_HINT = "the worker died or its lease expired on every attempt"
#: Seconds between dead-letter checks of a worker on a remote queue (SQS: a check is two
#: GetQueueAttributes requests). A remote worker looks only after it saw work since its last
#: look, so a worker that stays idle makes nothing but its 3 long polls a minute.
REMOTE_CHECK_EVERY_S = 60.0
#: The same on a local queue (SQLite, memory), where a check costs no request.
LOCAL_CHECK_EVERY_S = 2.0
#: Dead letters read, reconciled and marked per batch (one ledger read and write each).
BATCH = 500
#: Dead letters one pass lists on a queue that keeps no "reconciled" mark (SQS), whose
#: listing receives them all while it lasts: the whole queue up to this many.
REMOTE_LIST_MAX = 10_000
#: Dead letters listed when the queue's count is not known.
LIST_LIMIT = 1000


def _job_of(body: str) -> tuple[str, Job | None] | None:
    """The dead letter's job id and, if the body is a valid envelope, its job; None when
    no job id can be read. Never raises, whatever the body holds."""
    try:
        job = Job.from_json(body)
    except ConveyorError:
        job_id = job_id_of(body)
        return None if job_id is None else (job_id, None)
    return job.job_id, job


def last_error(ledger: Ledger, job_id: str) -> str | None:
    """The newest error recorded for the job's current run (a retry's or a failure's),
    even when a later ``running`` hides it from the job's record. A redrive starts a new
    run: errors before it are not this run's."""
    for change in reversed(ledger.history(job_id)):
        if change.state is JobState.QUEUED:
            return None
        if change.state in (JobState.RETRYING, JobState.FAILED) and change.error:
            return change.error
    return None


def dead_letter_reason(letter: DeadLetter, record: JobRecord | None, error: str | None) -> str:
    """``dead-lettered after N receives; last error: ... (the worker died or ...)``."""
    receives = max(letter.receive_count, record.attempts if record is not None else 0)
    last = error or letter.reason or "none recorded"
    return f"dead-lettered after {receives} receives; last error: {last} ({CRASH_HINT})"


def reconcile_dead_letters(
    letters: Iterable[DeadLetter],
    ledger: Ledger,
    storage: Storage | None = None,
    *,
    worker: str | None = None,
) -> list[str]:
    """Record as ``failed`` every dead-lettered job that the ledger does not have as
    terminal, with the reason it got there, and remove the temporary files its dead
    workers left beside its output (under ``storage``, when given). Idempotent; a job that
    succeeded (a duplicate delivery published it) stays succeeded. Letters with no readable
    job id are skipped: whoever dead-lettered them logged why.

    One ledger read for the batch, one history read per job to record, one ledger write.

    Returns:
        The ids of the jobs recorded as failed.

    Raises:
        StorageError: the ledger could not be written (nothing was: retry the batch).
    """
    found: dict[str, tuple[DeadLetter, Job | None]] = {}
    for letter in letters:
        read = _job_of(letter.body)
        if read is not None and (read[0] not in found or found[read[0]][1] is None):
            found[read[0]] = (letter, read[1])
    if not found:
        return []
    records = ledger.get_many(found)
    events: list[LedgerEvent] = []
    for job_id, (letter, job) in found.items():
        record = records.get(job_id)
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
        events.append(event)
    if events:
        ledger.record_many(events)
    for event in events:
        job = found[event.job_id][1]
        if storage is not None and job is not None and job.output is not None:
            _remove_temps_of(storage, job.output)
    return [event.job_id for event in events]


def _remove_temps_of(storage: Storage, output: str) -> None:
    """Remove what the job's dead workers left beside its output (it will not run again)."""
    with contextlib.suppress(ConveyorError, OSError):  # an unsafe path: nothing was written
        remove_temps(storage.resolve_output(output))


def reconcile_queue(
    queue: Queue,
    ledger: Ledger,
    storage: Storage | None = None,
    *,
    worker: str | None = None,
    remote_limit: int = LIST_LIMIT,
) -> list[str]:
    """One complete reconciliation of the queue's dead letters with the ledger.

    On a queue that marks dead letters reconciled (SQLite, memory), every letter not yet
    marked is read, reconciled and marked, a batch at a time, however many there are; the
    cost follows the letters that are new, not the queue's history. On one that does not
    (SQS), up to ``remote_limit`` letters are listed (at most ``REMOTE_LIST_MAX``) and
    reconciled; letters already terminal in the ledger cost one batched read.

    Returns:
        The ids of the jobs recorded as failed.

    Raises:
        StorageError: the ledger could not be written (the batch stays unmarked).
        QueueError: the queue could not be read.
    """
    if not queue.tracks_reconciliation:
        letters = queue.dead_letters(min(max(1, remote_limit), REMOTE_LIST_MAX))
        return reconcile_dead_letters(letters, ledger, storage, worker=worker)
    reconciled: list[str] = []
    previous: str | None = None
    while True:
        letters = queue.unreconciled_dead_letters(BATCH)
        if not letters or letters[0].cursor == previous:
            break  # nothing new, or a backend that failed to mark: never loop for ever
        previous = letters[0].cursor
        reconciled += reconcile_dead_letters(letters, ledger, storage, worker=worker)
        queue.mark_reconciled(letters)
        if len(letters) < BATCH:
            break
    return reconciled


def check_every_s(queue: Queue) -> float:
    """How often an idle worker may look at the dead-letter queue of ``queue``."""
    return REMOTE_CHECK_EVERY_S if queue.remote else LOCAL_CHECK_EVERY_S


class DeadLetterWatch:
    """Notices messages the queue dead-lettered by itself and reconciles them, cheaply.

    It looks at most every ``every_s`` seconds. On a queue that marks letters reconciled, a
    look is one index probe when nothing is new, and reconciles everything that is, however
    large the dead-letter queue. On one that does not (SQS), it lists the dead-letter queue
    only when its count grew since the last look, reusing the counts a stop policy fetched
    this round (:meth:`pending`), and only once after each spell of work
    (:meth:`note_activity`): a worker that stays idle spends no request on it.

    Args:
        queue: the worker's queue.
        ledger: the worker's ledger.
        worker: the worker's name, recorded with each reconciled job.
        clock: monotonic seconds (the worker's clock).
        every_s: least seconds between two looks (default: by the queue's kind).
        storage: the worker's storage, where the temporary files of reconciled jobs are
            removed (None: they are left).
    """

    def __init__(
        self,
        queue: Queue,
        ledger: Ledger,
        *,
        worker: str,
        clock: Callable[[], float],
        every_s: float | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.worker = worker
        self.storage = storage
        self.every_s = check_every_s(queue) if every_s is None else every_s
        self._remote = queue.remote
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

        Never raises but for a queue that cannot be used at all (ConfigError,
        QueueNotFound, AccessDenied): a queue or ledger failure, or any dead letter, is
        logged and the next look retries.

        Returns:
            The ids of the jobs recorded as failed.
        """
        fresh, self._fresh = self._fresh, None
        now = self._clock()
        if not final and now - self._checked_at < self.every_s:
            return []
        tracked = self.queue.tracks_reconciliation
        if not tracked and final and fresh is None and self._seen is None:
            return []  # never looked and nothing fetched: not worth a request on the way out
        if not tracked and not final and fresh is None and self._remote and not self._active:
            return []  # idle since the last look: keep an idle worker's requests at its polls
        self._checked_at = now
        self._active = False
        try:
            reconciled = self._look(fresh)
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            self._seen = None  # look again next time
            log.warning("cannot reconcile the dead-letter queue: %s", exc.message)
            return []
        except Exception:  # this boundary keeps the worker alive, whatever a letter holds
            self._seen = None
            log.exception("reconciling the dead-letter queue failed")
            return []
        for job_id in reconciled:
            log.warning(
                "job %s was dead-lettered by the queue: recorded as failed",
                job_id,
                extra={"job_id": job_id, "action": "reconciled"},
            )
        return reconciled

    def _look(self, fresh: QueueStats | None) -> list[str]:
        if self.queue.tracks_reconciliation:
            return reconcile_queue(self.queue, self.ledger, self.storage, worker=self.worker)
        stats = fresh or self.queue.stats()
        seen, self._seen = self._seen, stats.dead_lettered
        if stats.dead_lettered <= (seen or 0):
            return []
        return reconcile_queue(
            self.queue,
            self.ledger,
            self.storage,
            worker=self.worker,
            remote_limit=max(LIST_LIMIT, stats.dead_lettered),
        )
