"""Duties around a worker's jobs and rounds, as hooks (like dramatiq's middleware): the
health file, request reports, dead-letter and completion checks when idle, crash points."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from conveyor.completions import send_due_completions
from conveyor.errors import ConveyorError
from conveyor.faults import FaultPoint, FaultPoints
from conveyor.ledger import Ledger
from conveyor.queues.base import Queue
from conveyor.reconcile import DeadLetterWatch
from conveyor.storage import Storage
from conveyor.worker.inflight import RoundResult

log = logging.getLogger("conveyor.worker")

#: Seconds between reports of the queue request counts to the ledger.
REPORT_EVERY_S = 30.0
#: An idle worker sends the group completions left due and unsent at most this often.
DUE_POLL_S = 2.0

#: What ``atomic_output`` calls at each of its steps (``mid_write``, ``after_fsync``, ...).
OutputStep = Callable[[str, Path], None]


class WorkerHook:
    """A duty around the worker's rounds and jobs; every method does nothing unless a
    subclass says otherwise. Called on the worker's main thread, in this order: a round
    starts, then per job ``before_process``, ``output_step``, ``after_success``; then
    ``before_ack``, ``after_round``; ``on_heartbeat`` whenever a heartbeat is due, and
    ``on_finish`` / ``on_exit`` at the end. A hook must not raise (a crash point ends the
    process on purpose)."""

    def before_round(self) -> None:
        """A round is about to receive."""

    def on_heartbeat(self) -> None:
        """A heartbeat is due (while a task runs, or between the jobs of a round)."""

    def before_process(self, job_id: str) -> None:
        """The job's message is decoded and not cancelled; nothing is recorded yet."""

    def output_step(self, job_id: str | None) -> OutputStep | None:
        """What to call at each step of publishing the job's output (None: nothing)."""
        return None

    def after_success(self, job_id: str, commit: Callable[[], None]) -> None:
        """The job succeeded; its success is deferred until ``commit()`` writes it."""

    def before_ack(self, job_ids: Sequence[str | None]) -> None:
        """The round's ledger writes are done; these jobs' messages are about to be acked."""

    def after_round(self, result: RoundResult) -> None:
        """A round ended (``result.received`` 0: an empty receive)."""

    def on_finish(self) -> None:
        """The stop policy is met: the worker is about to exit 0."""

    def on_exit(self) -> None:
        """The worker's run ends, whatever the reason."""


class Hooks(WorkerHook):
    """Several hooks called as one, in order."""

    def __init__(self, hooks: Sequence[WorkerHook]) -> None:
        self.hooks = list(hooks)

    def before_round(self) -> None:
        for hook in self.hooks:
            hook.before_round()

    def on_heartbeat(self) -> None:
        for hook in self.hooks:
            hook.on_heartbeat()

    def before_process(self, job_id: str) -> None:
        for hook in self.hooks:
            hook.before_process(job_id)

    def output_step(self, job_id: str | None) -> OutputStep | None:
        steps = [step for hook in self.hooks if (step := hook.output_step(job_id)) is not None]
        if len(steps) <= 1:
            return steps[0] if steps else None

        def each(name: str, temp: Path) -> None:
            for step in steps:
                step(name, temp)

        return each

    def after_success(self, job_id: str, commit: Callable[[], None]) -> None:
        for hook in self.hooks:
            hook.after_success(job_id, commit)

    def before_ack(self, job_ids: Sequence[str | None]) -> None:
        for hook in self.hooks:
            hook.before_ack(job_ids)

    def after_round(self, result: RoundResult) -> None:
        for hook in self.hooks:
            hook.after_round(result)

    def on_finish(self) -> None:
        for hook in self.hooks:
            hook.on_finish()

    def on_exit(self) -> None:
        for hook in self.hooks:
            hook.on_exit()


class HealthFile(WorkerHook):
    """Touches the liveness file every round and heartbeat (``conveyor health``, the
    Kubernetes exec probe)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def touch(self) -> None:
        try:
            self.path.touch()
        except OSError as exc:
            log.warning("cannot touch health file %s: %s", self.path, exc.strerror)

    def before_round(self) -> None:
        self.touch()

    def on_heartbeat(self) -> None:
        self.touch()


class RequestReport(WorkerHook):
    """Stores the worker's queue requests by kind in the ledger (``conveyor status``), every
    ``REPORT_EVERY_S`` and when the worker exits."""

    def __init__(self, queue: Queue, ledger: Ledger, clock: Callable[[], float]) -> None:
        self.queue = queue
        self.ledger = ledger
        self._clock = clock
        self._reported_at = clock()

    def report(self) -> None:
        counts = self.queue.request_counts()
        if not counts:
            return
        try:
            self.ledger.record_worker_stats(self.ledger.writer, counts)
        except ConveyorError as exc:
            log.warning("cannot store queue request counts: %s", exc.message)
        self._reported_at = self._clock()

    def after_round(self, result: RoundResult) -> None:
        if self._clock() - self._reported_at >= REPORT_EVERY_S:
            self.report()

    def on_exit(self) -> None:
        self.report()


class DeadLetterCheck(WorkerHook):
    """Has the dead-letter watch look after empty receives, once more at the finish, and
    learn of every spell of work (see :class:`~conveyor.reconcile.DeadLetterWatch`)."""

    def __init__(self, watch: DeadLetterWatch) -> None:
        self.watch = watch

    def after_round(self, result: RoundResult) -> None:
        if result.received:
            self.watch.note_activity()
        elif not result.error and not result.interrupted:
            self.watch.poll()

    def on_finish(self) -> None:
        self.watch.poll(final=True)


class DueCompletions(WorkerHook):
    """After an empty receive, at most every ``DUE_POLL_S``: sends the group completions
    the ledger has as due and not sent (their sender died between the two)."""

    def __init__(
        self, queue: Queue, ledger: Ledger, storage: Storage, clock: Callable[[], float]
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.storage = storage
        self._clock = clock
        self._polled_at = -math.inf

    def after_round(self, result: RoundResult) -> None:
        if result.received or result.error or result.interrupted:
            return
        now = self._clock()
        if now - self._polled_at < DUE_POLL_S:
            return
        self._polled_at = now
        send_due_completions(self.queue, self.ledger, self.storage)


class CrashPoints(WorkerHook):
    """Test-only: crash the worker at the step ``CONVEYOR_TEST_CRASH_AT`` names
    (:mod:`conveyor.faults`)."""

    def __init__(self, faults: FaultPoints) -> None:
        self.faults = faults

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> list[WorkerHook]:
        """The crash points the environment asks for: none normally, read once at start-up.

        Raises:
            ConfigError: the variable names no known point.
        """
        faults = FaultPoints.from_env(environ)
        return [] if faults is None else [cls(faults)]

    def before_process(self, job_id: str) -> None:
        self.faults.hit(FaultPoint.AFTER_RECEIVE, job_id)

    def output_step(self, job_id: str | None) -> OutputStep | None:
        return self.faults.storage_hook(job_id)

    def after_success(self, job_id: str, commit: Callable[[], None]) -> None:
        commit()  # a crash here or at any later step must find the success recorded
        self.faults.hit(FaultPoint.AFTER_LEDGER, job_id)

    def before_ack(self, job_ids: Sequence[str | None]) -> None:
        for job_id in job_ids:
            self.faults.hit(FaultPoint.BEFORE_ACK, job_id)
