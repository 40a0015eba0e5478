"""One job's handling, from its decoded message to its outcome: the per-job boundary, the
checks before running (cancelled, already succeeded, crashed before), the run, the record."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from conveyor.errors import FATAL_ERRORS, BadInput, LeaseLost
from conveyor.events import Action, WorkerEvent
from conveyor.jobs import JobState, decode_from_queue
from conveyor.ledger import JobRecord
from conveyor.stop import StopWatch
from conveyor.storage import Storage
from conveyor.task_registry import TaskRegistry
from conveyor.worker.execution import Cancelled, Execution, GraceExpired, cancel_reason
from conveyor.worker.hooks import WorkerHook
from conveyor.worker.inflight import InFlight, Round
from conveyor.worker.journal import Journal
from conveyor.worker.outcomes import Outcomes, reason_of
from conveyor.worker.prefetch import Pace, plan_ahead

log = logging.getLogger("conveyor.worker")


class JobHandler:
    """Handles the jobs of a round, one at a time; every job ends in one event."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        storage: Storage,
        journal: Journal,
        execution: Execution,
        outcomes: Outcomes,
        pace: Pace,
        hooks: WorkerHook,
        stop: StopWatch,
        clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.storage = storage
        self.journal = journal
        self.execution = execution
        self.outcomes = outcomes
        self.pace = pace
        self.hooks = hooks
        self.stop = stop
        self._clock = clock

    def handle(self, flight: InFlight, round_: Round) -> WorkerEvent:
        """Handle one message: the per-job boundary, which always ends in an event."""
        emit = self.journal.emit
        try:
            return self._process(flight, round_)
        except FATAL_ERRORS:
            raise
        except GraceExpired:
            give_back = functools.partial(
                self.outcomes.give_back, flight, "stopped before it finished"
            )
            return self._settle(flight, give_back)
        except LeaseLost as exc:
            return emit(Action.LEASE_LOST, flight, reason=exc.message)
        except Cancelled as exc:
            # Like a lost lease, the output was not published; unlike one, the message is
            # done with: acked, so that no worker runs the job again.
            round_.acks.append(flight.received.lease)
            return emit(Action.CANCELLED, flight, reason=exc.reason)
        except Exception as exc:
            return self._settle(flight, functools.partial(self.outcomes.failed, flight, exc))

    def _settle(self, flight: InFlight, outcome: Callable[[], WorkerEvent]) -> WorkerEvent:
        """Apply a failure's outcome (retry, dead-letter, give back) to the queue and ledger.

        If that fails too, the message is left alone: it comes back after its visibility
        timeout, and its receive count still moves it towards the dead-letter queue.
        """
        try:
            return outcome()
        except FATAL_ERRORS:
            raise
        except LeaseLost as exc:
            return self.journal.emit(Action.LEASE_LOST, flight, reason=exc.message)
        except Exception as exc:
            log.exception("could not settle message %s", flight.received.message_id)
            reason = f"not settled: {reason_of(exc)}"
            return self.journal.emit(Action.LEASE_LOST, flight, reason=reason)

    def _process(self, flight: InFlight, round_: Round) -> WorkerEvent:
        """Decode, check, run, publish, record; queue the ack. Raises on any failure."""
        received = flight.received
        try:
            job = flight.job = flight.job or decode_from_queue(received.body, self.storage)
        except BadInput:
            cancelled = self._cancelled_at_receive(flight, round_)
            if cancelled is not None:
                raise Cancelled(f"not run: {cancel_reason(cancelled)}") from None
            if not self._succeeded_before(flight, round_):
                raise
            # A late duplicate of a job that succeeded (its claim-checked params are gone
            # with it): nothing left to do.
            round_.acks.append(received.lease)
            return self.journal.emit(Action.SKIPPED, flight)
        cancelled = self._cancelled_at_receive(flight, round_)
        if cancelled is not None:
            raise Cancelled(f"not run: {cancel_reason(cancelled)}")
        self.hooks.before_process(job.job_id)
        func = self.registry.get(job.task)
        input_path = None if job.input is None else self.storage.resolve_input(job.input)
        output_path = None if job.output is None else self.storage.resolve_output(job.output)
        published = output_path is None or output_path.exists()
        # The ledger is read (one indexed lookup) only when that can change what happens:
        # on a redelivery, or when the output is already there.
        # A group's completion may be sent twice (its sender died before marking it
        # sent): the round's read says which job is one, and a copy after its success
        # is skipped.
        known = round_.known.get(job.job_id)
        record = None
        if (
            received.receive_count > 1
            or (output_path is not None and published)
            or (known is not None and known.group_completion)
        ):
            record = self.journal.fresh_record(job.job_id, round_)
        # A group's job that succeeded is done even if its output is gone: the group's
        # completion consumed it (a late duplicate must not write a part again).
        if (
            record is not None
            and record.state is JobState.SUCCEEDED
            and (published or record.group is not None)
        ):
            round_.acks.append(received.lease)
            return self.journal.emit(Action.SKIPPED, flight)
        self.journal.note_crashed_attempt(flight, record, output_path)
        if flight.running_ahead:
            flight.running_ahead = False
        else:
            self._record_running(flight, round_)
        self.journal.emit(Action.STARTED, flight)
        started = self._clock()
        try:
            task_result = self.execution.execute(func, input_path, output_path, flight, round_)
        finally:
            duration_s = self._clock() - started
            self.pace.learn(job.task, duration_s)
        round_.defer(self.journal.event(flight, JobState.SUCCEEDED, result=task_result))
        self.hooks.after_success(job.job_id, functools.partial(self.journal.write_deferred, round_))
        round_.acks.append(received.lease)
        return self.journal.emit(
            Action.SUCCEEDED, flight, duration_s=duration_s, result=task_result
        )

    def _record_running(self, flight: InFlight, round_: Round) -> None:
        """Record the job as running, with the deferred successes of the jobs before it and
        the ``running`` of the quick jobs after it (``prefetch.plan_ahead``): one
        transaction.

        A job that cannot be recorded as running does not run: the ``StorageError`` ends
        its attempt (retried later), and the jobs planned with it are not marked recorded,
        so each writes its own ``running`` again before it starts.
        """
        ahead = plan_ahead(flight, round_, self.pace, self.storage, self.stop.stopping)
        round_.defer(self.journal.event(flight, JobState.RUNNING))
        for other in ahead:
            round_.defer(self.journal.event(other, JobState.RUNNING))
        self.journal.write_deferred(round_)
        for other in ahead:
            other.running_ahead = True

    def _cancelled_at_receive(self, flight: InFlight, round_: Round) -> JobRecord | None:
        """The job's record if the round's read found it cancelled, else None."""
        record = round_.known.get(flight.job_id or "")
        return record if record is not None and record.state is JobState.CANCELLED else None

    def _succeeded_before(self, flight: InFlight, round_: Round) -> bool:
        """Whether the ledger has the message's job as succeeded (read only for a message
        that cannot be decoded, so it costs nothing on the normal path)."""
        job_id = flight.job_id
        record = None if job_id is None else self.journal.fresh_record(job_id, round_)
        return record is not None and record.state is JobState.SUCCEEDED
