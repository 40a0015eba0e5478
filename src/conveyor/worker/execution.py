"""Running one job's task on the task thread while the main thread heartbeats, and
publishing its output only while the job is still leased and not cancelled."""

from __future__ import annotations

from pathlib import Path

from conveyor.atomic import atomic_output
from conveyor.errors import TransientTaskError
from conveyor.jobs import JobState
from conveyor.ledger import JobRecord
from conveyor.stop import StopWatch
from conveyor.storage import Storage
from conveyor.task_context import TaskContext, TaskFunction, TaskResult
from conveyor.worker.hooks import WorkerHook
from conveyor.worker.inflight import Heartbeat, InFlight, Round
from conveyor.worker.journal import Journal
from conveyor.worker.task_thread import TaskCall, TaskThread, checked_result

#: How often the main thread wakes while a task runs, to heartbeat and check for a stop.
TICK_S = 0.05


class GraceExpired(Exception):
    """The grace period after a stop request ended while a task was still running."""


class Cancelled(Exception):
    """The job was cancelled (``Client.cancel``): it is not run, or not published."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cancel_reason(record: JobRecord) -> str:
    """Why a cancelled job was cancelled, as its record says."""
    return record.error or "cancelled"


class Execution:
    """Runs a job's task and publishes its output, the lease kept alive meanwhile.

    Args:
        storage: the storage root the task's context resolves paths in.
        journal: the ledger read that checks for a cancel before publishing.
        heartbeat: keeps the round's leases alive, and vouches for the job's lease.
        stop: the stop request, and the grace deadline it sets.
        hooks: the worker's hooks (their ``output_step`` at each step of publishing).
    """

    def __init__(
        self,
        storage: Storage,
        journal: Journal,
        heartbeat: Heartbeat,
        stop: StopWatch,
        hooks: WorkerHook,
    ) -> None:
        self.storage = storage
        self.journal = journal
        self.heartbeat = heartbeat
        self.stop = stop
        self.hooks = hooks
        self.tasks = TaskThread()

    def execute(
        self,
        func: TaskFunction,
        input_path: Path | None,
        output_path: Path | None,
        flight: InFlight,
        round_: Round,
    ) -> TaskResult:
        """Run the task while this thread heartbeats; publish its output if still leased.

        A job without output publishes nothing; its lease is still confirmed before it
        counts as succeeded.

        Raises:
            GraceExpired: a stop request's grace period ended first.
            Cancelled: the job was cancelled while it ran.
            LeaseLost: the lease was lost (nothing published).
        """
        assert flight.job is not None
        if output_path is None:
            ctx = TaskContext(
                flight.job, input_path, None, None, lease_check=flight.check, storage=self.storage
            )
            task_result = self._run_task(func, ctx, flight, round_)
            self.confirm(flight)
            return task_result
        step = self.hooks.output_step(flight.job_id)
        with atomic_output(output_path, lambda: self.confirm(flight), step) as temp:
            ctx = TaskContext(
                flight.job,
                input_path,
                output_path,
                temp,
                lease_check=flight.check,
                storage=self.storage,
            )
            return self._run_task(func, ctx, flight, round_)

    def _run_task(
        self, func: TaskFunction, ctx: TaskContext, flight: InFlight, round_: Round
    ) -> TaskResult:
        """Run ``func(ctx)`` on the task thread and wait for it; its result, checked."""
        call = self.tasks.submit(func, ctx)
        self._wait_for(call, flight, round_)
        if isinstance(call.error, Exception):
            raise call.error
        if call.error is not None:  # SystemExit, KeyboardInterrupt: not the worker's
            raise TransientTaskError(
                f"task raised {type(call.error).__name__}: {call.error}"
            ) from call.error
        return checked_result(call.result)

    def _wait_for(self, call: TaskCall, flight: InFlight, round_: Round) -> None:
        """Block until the task ends, heartbeating; past the grace deadline, give up on it."""
        while not call.done.wait(TICK_S):
            self.heartbeat.beat_if_due(round_)
            if self.stop.grace_over():
                flight.lost.set()  # the abandoned task must not publish
                raise GraceExpired

    def confirm(self, flight: InFlight) -> None:
        """Just before publishing: make sure the lease is still ours and the job was not
        cancelled while it ran (one read of the ledger; ``Cancelled`` if it was); see
        :meth:`Heartbeat.confirm`."""
        flight.check()
        self.check_not_cancelled(flight)
        self.heartbeat.confirm(flight)

    def check_not_cancelled(self, flight: InFlight) -> None:
        """Just before publishing: raise ``Cancelled`` if the job was cancelled while it
        ran (one read of exactly this job).

        Raises:
            StorageError: the ledger cannot be read (a transient failure: retried).
        """
        job_id = flight.job_id
        record = None if job_id is None else self.journal.record_of(job_id)
        if record is not None and record.state is JobState.CANCELLED:
            raise Cancelled(f"not published: {cancel_reason(record)}")

    def close(self) -> None:
        """Let the task thread exit after its current task."""
        self.tasks.close()
