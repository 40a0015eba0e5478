"""What a worker tells about its jobs: ledger events (written now or with the round's next
write), the ledger reads its checks need, and job events for the observers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from conveyor.completions import send_completions
from conveyor.errors import FATAL_ERRORS, ConveyorError
from conveyor.events import Action, WorkerEvent, WorkerObserver
from conveyor.jobs import JobState
from conveyor.ledger import Completion, JobRecord, Ledger, LedgerEvent
from conveyor.queues.base import Queue
from conveyor.storage import Storage
from conveyor.task_context import TaskResult
from conveyor.tempfiles import remove_temps
from conveyor.worker.inflight import InFlight, Round

log = logging.getLogger("conveyor.worker")

#: Seconds for which the round's read of the ledger stands in for a read of one job.
FRESH_S = 1.0


class Journal:
    """The worker's one way to the ledger and to its observers.

    Args:
        name: the worker's name, recorded with every event.
        queue: where the group completions a ledger write made due are sent.
        ledger: where job states are recorded.
        storage: the storage root (completions' claim-checked params).
        observers: receive every job event; a list the worker may add to.
        clock: monotonic seconds (the worker's clock).
    """

    def __init__(
        self,
        name: str,
        *,
        queue: Queue,
        ledger: Ledger,
        storage: Storage,
        observers: list[WorkerObserver],
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.queue = queue
        self.ledger = ledger
        self.storage = storage
        self.observers = observers
        self._clock = clock

    # --- observers -----------------------------------------------------------------------

    def emit(
        self,
        action: Action,
        flight: InFlight,
        *,
        duration_s: float | None = None,
        reason: str | None = None,
        delay_s: int | None = None,
        result: TaskResult = None,
    ) -> WorkerEvent:
        """Tell every observer (logs, metrics) what happened to a job; the one place."""
        job = flight.job
        event = WorkerEvent(
            action=action,
            job_id=flight.job_id,
            task=job.task if job is not None else None,
            attempt=flight.received.receive_count,
            worker=self.name,
            duration_s=duration_s,
            reason=reason,
            delay_s=delay_s,
            submitted_at=job.submitted_at if job is not None else None,
            result=result,
        )
        for observer in self.observers:
            try:
                observer.worker_event(event)
            except Exception:
                log.exception("job observer %r failed", observer)
        return event

    # --- ledger writes -------------------------------------------------------------------

    def event(
        self,
        flight: InFlight,
        state: JobState,
        *,
        error: str | None = None,
        result: TaskResult = None,
    ) -> LedgerEvent | None:
        """A ledger event for the job, stamped now; None if no job id can be read."""
        attempt, now = flight.received.receive_count, time.time()
        if flight.job is not None:
            return LedgerEvent.for_job(
                flight.job,
                state,
                attempt=attempt,
                at=now,
                worker=self.name,
                error=error,
                result=result,
            )
        if flight.job_id is not None:
            return LedgerEvent(flight.job_id, state, attempt, at=now, worker=self.name, error=error)
        return None

    def record(
        self,
        flight: InFlight,
        state: JobState,
        *,
        error: str | None = None,
        result: TaskResult = None,
    ) -> None:
        """Write a ledger event for the job now (skipped if no job id can be read)."""
        event = self.event(flight, state, error=error, result=result)
        if event is not None:
            self.send_due(self.ledger.record_many([event]))

    def write_deferred(self, round_: Round) -> None:
        """Write the round's deferred ledger events in one call; kept for a retry on error.

        A job's ``succeeded`` waits in ``round_.records`` and goes out with the next job's
        ``running`` (or before the round's ack): one ledger call per job, not two; for quick
        jobs, whose ``running`` goes out ahead in one call (``prefetch.plan_ahead``), two
        calls per round.

        Raises:
            StorageError: the ledger could not be written.
        """
        if round_.records:
            self.send_due(self.ledger.record_many(round_.records))
            round_.records.clear()

    def send_due(self, completions: list[Completion]) -> None:
        """Send the group completions a ledger write just made due (usually none)."""
        if completions:
            send_completions(self.queue, self.ledger, self.storage, completions)

    def note_crashed_attempt(
        self, flight: InFlight, record: JobRecord | None, output_path: Path | None
    ) -> None:
        """Record that the previous attempt died, if the ledger still says it is running,
        and remove the temporary output it left behind.

        A worker killed mid-job records nothing; this later delivery is the first sign of
        it, and noting it here means the reason is known if the job fails for good.
        """
        attempt = flight.received.receive_count
        if record is None or record.state is not JobState.RUNNING or record.attempts >= attempt:
            return
        if output_path is not None:
            remove_temps(output_path)
        assert flight.job is not None
        reason = (
            f"attempt {record.attempts} did not finish: its worker ({record.worker or '?'}) "
            "died or its lease expired"
        )
        event = LedgerEvent.for_job(
            flight.job, JobState.RETRYING, attempt=record.attempts, worker=self.name, error=reason
        )
        self.send_due(self.ledger.record_many([event]))

    # --- ledger reads --------------------------------------------------------------------

    def record_of(self, job_id: str) -> JobRecord | None:
        """The ledger's record of exactly this job (never one whose id it only prefixes)."""
        return self.ledger.get_many([job_id]).get(job_id)

    def read_round(self, flights: Sequence[InFlight]) -> dict[str, JobRecord] | None:
        """The ledger's records of the round's jobs: one query for the whole round, so
        that a cancelled job is acked without running. None if the ledger cannot be read:
        the jobs run then, and each checks for a cancel again before it publishes."""
        job_ids = [job_id for flight in flights if (job_id := flight.job_id) is not None]
        if not job_ids:
            return {}
        try:
            return self.ledger.get_many(job_ids)
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            log.warning("cannot read the ledger: %s", exc.message, extra={"action": "ledger"})
            return None

    def fresh_record(self, job_id: str, round_: Round) -> JobRecord | None:
        """The job's record, as read with the round if that was a moment ago, else read
        again (a redelivery's checks must not act on what an earlier job's run made stale).
        """
        if self._clock() - round_.read_at <= FRESH_S and round_.read_ok:
            return round_.known.get(job_id)
        return self.record_of(job_id)
