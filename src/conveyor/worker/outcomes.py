"""How a job's attempt ends on the queue, after the ledger: retried with a backoff,
dead-lettered, given back, or acked with the rest of its round."""

from __future__ import annotations

import logging

from conveyor.backoff import Backoff
from conveyor.claims import release_claim
from conveyor.errors import FATAL_ERRORS, BadInput, ConveyorError
from conveyor.events import Action, WorkerEvent
from conveyor.jobs import Job, JobState
from conveyor.queues.base import Queue
from conveyor.storage import Storage
from conveyor.worker.hooks import WorkerHook
from conveyor.worker.inflight import InFlight, Round
from conveyor.worker.journal import Journal

log = logging.getLogger("conveyor.worker")


def reason_of(exc: BaseException) -> str:
    """One line saying what went wrong, for the ledger and the dead-letter queue."""
    if isinstance(exc, ConveyorError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Outcomes:
    """Ends jobs' attempts: the ledger first, then the queue.

    Args:
        queue: the worker's queue.
        journal: the ledger writes and job events.
        backoff: retry delays.
        storage: where the claim-checked params of acked jobs are released.
        hooks: the worker's hooks (``before_ack``).
    """

    def __init__(
        self, queue: Queue, journal: Journal, backoff: Backoff, storage: Storage, hooks: WorkerHook
    ) -> None:
        self.queue = queue
        self.journal = journal
        self.backoff = backoff
        self.storage = storage
        self.hooks = hooks

    def failed(self, flight: InFlight, exc: BaseException) -> WorkerEvent:
        """A job raised: dead-letter it if permanent or out of attempts, else retry later."""
        attempt = flight.received.receive_count
        reason = reason_of(exc)
        if isinstance(exc, ConveyorError) and exc.permanent:
            return self.dead_letter(flight, reason)
        if not isinstance(exc, ConveyorError):  # a bug in the task, probably: show where
            log.warning(
                "job %s raised %s",
                flight.job_id,
                type(exc).__name__,
                exc_info=exc,
                extra={"job_id": flight.job_id, "attempt": attempt},
            )
        if attempt >= self.queue.max_receive_count:
            # Dead-letter now rather than on the next receive: the reason travels with the
            # message, the ledger and the queue agree at once, and nobody waits a backoff
            # for a job that will not run again.
            return self.dead_letter(flight, f"gave up after {attempt} attempts: {reason}")
        delay_s = self.backoff.delay_s(attempt)
        self.journal.record(flight, JobState.RETRYING, error=reason)
        self.queue.release(flight.received.lease, delay_s)
        return self.journal.emit(Action.RETRYING, flight, reason=reason, delay_s=delay_s)

    def dead_letter(self, flight: InFlight, reason: str) -> WorkerEvent:
        """Record the job as failed (if it has an id) and move its message to the DLQ."""
        self.journal.record(flight, JobState.FAILED, error=reason)
        self.queue.dead_letter(flight.received.lease, reason)
        return self.journal.emit(Action.FAILED, flight, reason=reason)

    def give_back(self, flight: InFlight, reason: str) -> WorkerEvent:
        """Release a message now (visibility 0) so another worker takes it at once."""
        self.journal.record(flight, JobState.RETRYING, error=reason)
        self.queue.release(flight.received.lease, 0)
        return self.journal.emit(Action.RELEASED, flight, reason=reason)

    def note_not_started(self, round_: Round) -> None:
        """Queue a ``retrying`` event for each job recorded running ahead of its turn that
        never started (a stop request, a lost lease, a failed round): the ledger must not
        show it running, nor its next delivery take it for a crashed attempt."""
        for flight in round_.unstarted:
            if flight.running_ahead:
                why = "lease lost" if flight.lost.is_set() else "given back"
                error = f"not started: {why}"
                round_.defer(self.journal.event(flight, JobState.RETRYING, error=error))

    def release_unstarted(self, round_: Round) -> list[WorkerEvent]:
        """Give back the messages of the round that never started (stop request, error)."""
        pending = [flight for flight in round_.unstarted if not flight.lost.is_set()]
        if not pending:
            return []
        try:
            result = self.queue.release_batch([flight.received.lease for flight in pending], 0)
        except ConveyorError as exc:
            log.warning("could not release %d message(s): %s", len(pending), exc.message)
            return []
        return [
            self.journal.emit(Action.RELEASED, flight, reason="not started")
            for flight in pending
            if flight.received.lease in result.ok
        ]

    def record_and_ack(self, round_: Round) -> int:
        """End a round: write its deferred ledger events, then ack its finished messages.

        If the ledger cannot be written, nothing is acked: the messages come back after
        their visibility timeout, and a rerun publishes the same output.

        Returns:
            How many messages were acked.
        """
        try:
            self.journal.write_deferred(round_)
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            if round_.acks:
                log.warning(
                    "not acking %d message(s): cannot write the ledger: %s",
                    len(round_.acks),
                    exc.message,
                    extra={"action": "ledger"},
                )
            return 0
        acking = set(round_.acks)
        self.hooks.before_ack(
            [flight.job_id for flight in round_.flights if flight.received.lease in acking]
        )
        acked = self._ack(round_.acks)
        self._release_claims(round_, acked)
        return len(acked)

    def _ack(self, leases: list[str]) -> set[str]:
        """Delete the round's finished messages in one batch call; the last step of a job.

        Returns:
            The leases acked.
        """
        if not leases:
            return set()
        try:
            result = self.queue.ack_batch(leases)
        except ConveyorError as exc:
            # Published and recorded: a redelivery is acked without running again.
            log.warning("ack of %d message(s) failed: %s", len(leases), exc.message)
            return set()
        for lease, why in result.failed.items():
            log.warning("ack failed for lease %s: %s", lease, why, extra={"action": "ack"})
        return set(result.ok)

    def _release_claims(self, round_: Round, acked: set[str]) -> None:
        """Remove the claim-checked params of the jobs that succeeded and were acked: no
        attempt will read them again (a job that may be retried or redriven keeps its
        claim; a late duplicate of a finished job is acked from the ledger)."""
        for flight in round_.flights:
            body = flight.received.body
            if flight.received.lease not in acked or '"params_ref"' not in body:
                continue
            try:
                job = Job.from_json(body)
            except BadInput:
                continue
            if job.params_ref is not None:
                release_claim(self.storage, job.job_id, job.params_ref)
