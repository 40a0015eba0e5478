"""The worker loop: receive, run each job with its lease kept alive, publish, record, ack.

``Worker.run_once()`` is one receive-process-ack round; ``Worker.run()`` loops it under a
stop policy (:mod:`conveyor.stop`) until drained, told to stop, or interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Protocol

from conveyor.completions import send_completions, send_due_completions
from conveyor.errors import (
    AccessDenied,
    BadInput,
    ConfigError,
    ConveyorError,
    LeaseLost,
    PermanentTaskError,
    QueueNotFound,
    TransientQueueError,
    TransientTaskError,
)
from conveyor.events import Action, JobEvent, JobObserver, LogObserver
from conveyor.faults import FaultPoint, FaultPoints
from conveyor.jobs import Job, JobState, decode_from_queue, job_id_of, release_claim
from conveyor.ledger import Completion, JobRecord, Ledger, LedgerEvent, open_ledger
from conveyor.queues.base import MAX_BATCH, Queue, Received
from conveyor.reconcile import DeadLetterWatch
from conveyor.settings import EXIT_INTERRUPTED, EXIT_OK, Settings
from conveyor.stop import (
    LoopState,
    Shutdown,
    StopPolicy,
    counts_are_exact,
    open_job_count,
    policy_from_settings,
)
from conveyor.storage import Storage, atomic_output, remove_temps
from conveyor.tasks import TaskContext, TaskFunction, TaskRegistry, TaskResult, default_registry

log = logging.getLogger("conveyor.worker")

#: SQS caps a message's delay at 15 minutes, so a retry's backoff never exceeds it.
MAX_RETRY_DELAY_S = 900
#: How often the main thread wakes while a task runs, to heartbeat and check for a stop.
_TICK_S = 0.05
#: Seconds of a lease's remaining life our own clock cannot vouch for (network delays).
_LEASE_MARGIN_S = 2.0
#: Seconds between reports of the queue request counts to the ledger.
_REPORT_EVERY_S = 30.0
#: A round receives no more jobs than recent ones would run in this part of the
#: visibility timeout (one at a time when a job takes longer): see Pace.prefetch.
_PREFETCH_FRACTION = 0.1
#: An idle worker sends the group completions left due and unsent at most this often.
_DUE_POLL_S = 2.0
#: Queue errors that no retry fixes: they end the worker with exit code 78.
_FATAL = (ConfigError, QueueNotFound, AccessDenied)
#: Seconds for which the round's read of the ledger stands in for a read of one job.
_FRESH_S = 1.0
#: A job is recorded ``running`` ahead of its turn, with the job before it, only if the
#: jobs of the round ahead of it are expected to take no longer than this in all: its
#: ``started_at`` is then early by at most about this much (see ``Worker._plan_ahead``).
_AHEAD_BUDGET_S = 0.05
#: How fast a task's expected duration forgets a slow run (halved after each later run).
_DURATION_DECAY = 0.5


def network_filesystem_of(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the network filesystem (NFS, EFS, SMB...) holding ``path``, or None if
    it is local.

    ``path`` need not exist yet: its nearest existing ancestor is looked up (symlinks
    resolved). ``mountinfo`` is ``/proc/self/mountinfo``'s text (read when None; where there
    is none, as off Linux, every path counts as local).
    """
    from conveyor.queues.sqlite import filesystem_type, is_network_filesystem

    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(os.path.realpath(existing), mountinfo)
    return fstype if is_network_filesystem(fstype) else None


def check_ledger_placement(settings: Settings, mountinfo: str | None = None) -> None:
    """Refuse to run with the embedded SQLite ledger on shared storage (NFS/EFS).

    Workers on shared storage run on several machines; SQLite's locking does not hold
    across them, so the ledger must be a database server there (``CONVEYOR_LEDGER_URL``).

    Raises:
        ConfigError: no ledger URL is set and the storage is on a network filesystem.
    """
    if settings.ledger_url is not None:
        return
    fstype = network_filesystem_of(settings.storage, mountinfo)
    if fstype is None:
        return
    queue_too = " (and --queue to an SQS queue)" if settings.queue_url is None else ""
    raise ConfigError(
        f"storage {settings.storage} is on {fstype}, shared storage where the embedded SQLite "
        f"ledger is unsafe: set CONVEYOR_LEDGER_URL (--ledger) to a postgresql:// URL"
        f"{queue_too}"
    )


class Backoff(Protocol):
    """How long a job waits before its next attempt after a transient failure."""

    def delay_s(self, attempt: int) -> int:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 1)."""


class ExponentialBackoff:
    """``base_s * 2**(attempt-1)`` capped at ``max_s`` and 900 s, with "equal jitter".

    Half the delay is fixed and half random, so jobs that failed together (a storage
    hiccup) come back spread out, yet never sooner than half the nominal delay.
    """

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay_s(self, attempt: int) -> int:
        nominal = self.base_s * 2.0 ** min(max(attempt, 1) - 1, 32)
        ceiling = min(nominal, self.max_s, MAX_RETRY_DELAY_S)
        return round(ceiling / 2 + self._rng.uniform(0, ceiling / 2))


@dataclass
class RoundResult:
    """What one round did.

    Attributes:
        received: messages received.
        events: the final event of each message handled (``started`` excluded).
        acked: messages deleted from the queue.
        interrupted: a stop request came during the round; unstarted messages were released.
        error: why the round failed as a whole (the queue was unreachable), or None.
    """

    received: int = 0
    events: list[JobEvent] = field(default_factory=list)
    acked: int = 0
    interrupted: bool = False
    error: str | None = None

    def count(self, action: Action) -> int:
        """How many messages ended the round with ``action``."""
        return sum(1 for event in self.events if event.action == action)


class _Lease:
    """One received message in this round: held until acked, released or lost."""

    def __init__(self, received: Received, valid_until: float) -> None:
        self.received = received
        self.job: Job | None = None  # set once the message is decoded
        #: Recorded ``running`` ahead of its turn (with an earlier job of the round), and
        #: not started yet.
        self.running_ahead = False
        #: Our own clock's estimate of when the lease expires (last extension + timeout).
        self.valid_until = valid_until
        self.lost = threading.Event()  # set by the main thread, read by the task thread

    @property
    def job_id(self) -> str | None:
        """The job's id, read from the raw message if it could not be decoded."""
        if self.job is not None:
            return self.job.job_id
        return job_id_of(self.received.body)

    def check(self) -> None:
        """``TaskContext.check_lease``: raise once the heartbeat lost the lease."""
        if self.lost.is_set():
            raise LeaseLost(f"lease lost on message {self.received.message_id}")


class _GraceExpired(Exception):
    """The grace period after a stop request ended while a task was still running."""


class _Cancelled(Exception):
    """The job was cancelled (``Client.cancel``): it is not run, or not published."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Call:
    """One task call handed to the task thread: its outcome, and an event set when done."""

    __slots__ = ("ctx", "done", "error", "func", "result")

    def __init__(self, func: TaskFunction, ctx: TaskContext) -> None:
        self.func = func
        self.ctx = ctx
        self.done = threading.Event()
        self.result: TaskResult = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.func(self.ctx)
        except BaseException as exc:  # a task's SystemExit too: it must not end the worker
            self.error = exc
        finally:
            self.done.set()


def _serve(inbox: SimpleQueue[_Call | None]) -> None:
    """The task thread's loop: run calls one after another until told to stop (None)."""
    while (call := inbox.get()) is not None:
        call.run()


class _TaskRunner:
    """A long-lived daemon thread that runs the worker's tasks, one at a time.

    A thread per job cost more than a short job itself. A daemon, so a task still running
    at exit cannot hold the process up; a task abandoned at the grace deadline keeps its
    thread, and the next call gets a fresh one.
    """

    def __init__(self) -> None:
        self._inbox: SimpleQueue[_Call | None] | None = None
        self._current: _Call | None = None

    def submit(self, func: TaskFunction, ctx: TaskContext) -> _Call:
        """Start ``func(ctx)`` on the task thread; wait on the returned call's ``done``."""
        busy = self._current is not None and not self._current.done.is_set()
        if self._inbox is None or busy:
            self.close()  # an abandoned task's thread exits once its task returns
            self._inbox = SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(self._inbox,), name="conveyor-task", daemon=True
            )
            thread.start()
        call = self._current = _Call(func, ctx)
        assert self._inbox is not None
        self._inbox.put(call)
        return call

    def close(self) -> None:
        """Let the task thread exit after its current task; a later submit starts another."""
        if self._inbox is not None:
            self._inbox.put(None)
            self._inbox = None


class Pace:
    """How long this worker's jobs take, learnt from its runs: each task's expected
    duration, and how long recent jobs took whatever their task.

    They set how many messages a round receives (:meth:`prefetch`) and which quick jobs
    are recorded ``running`` ahead of their turn (``Worker._plan_ahead``).
    """

    def __init__(self, visibility_timeout_s: float) -> None:
        self.visibility_timeout_s = visibility_timeout_s
        #: Each task's expected duration: its last run, or a recent slow run half-forgotten.
        self._expected_s: dict[str, float] = {}
        #: How long recent jobs took, any task (None before the first).
        self._recent_s: float | None = None

    def learn(self, task: str, duration_s: float) -> None:
        """Note how long a run of ``task`` took (a slow run is forgotten over a few more)."""
        before_s = self._expected_s.get(task, 0.0)
        self._expected_s[task] = max(duration_s, before_s * _DURATION_DECAY)
        recent_s = self._recent_s or 0.0
        self._recent_s = max(duration_s, recent_s * _DURATION_DECAY)

    def warm(self, recent_s: float) -> None:
        """Start as if recent jobs took ``recent_s`` each, no task known yet: a worker that
        knows its workload (and tests) need not begin with a round of one message."""
        self._recent_s = recent_s

    def knows(self, task: str) -> bool:
        """Whether this worker has run ``task`` before."""
        return task in self._expected_s

    def expected_s(self, task: str) -> float:
        """How long ``task`` is expected to take (infinite when it never ran here)."""
        return self._expected_s.get(task, math.inf)

    def prefetch(self) -> int:
        """How many messages to receive at most: no more than this worker will start soon.

        Messages held while others run are work other workers could do (Celery's prefetch
        pitfall: one worker holding a small backlog of long jobs while the others idle).
        So a round takes as many jobs as recent ones (slow ones forgotten over a few more)
        would run within ``_PREFETCH_FRACTION`` of the visibility timeout: a batch of quick
        jobs, one long job at a time. A fresh worker does not know yet how long its jobs
        take: it takes one message, then learns (K workers started on K long jobs run
        them at once).
        """
        if self._recent_s is None:
            return 1
        if self._recent_s <= 0:
            return MAX_BATCH
        budget_s = _PREFETCH_FRACTION * self.visibility_timeout_s
        return max(1, min(MAX_BATCH, math.floor(budget_s / self._recent_s)))


class Worker:
    """Takes jobs off a queue and runs them, one at a time, safely.

    Each task runs on a long-lived task thread while the main thread keeps the leases of
    the round alive
    (every ``settings.heartbeat_s``), watches for a stop request and enforces the grace
    deadline. Every queue call happens on the main thread.

    Args:
        queue: where the jobs come from.
        settings: the worker's configuration (storage root, timeouts, retries).
        ledger: where job states are recorded (default: opened from
            ``settings.resolved_ledger_url``; the embedded SQLite ledger is refused when
            the storage is on a network filesystem, see :func:`check_ledger_placement`).
        registry: the tasks this worker can run (default: the process-wide registry).
        observers: receive every job event (default: a structured log line per event).
        clock: monotonic seconds; tests inject a fake one.
        shutdown: the stop request a signal handler sets (see ``Shutdown.installed``).
        backoff: retry delays (default: exponential from ``settings.retry_base_s``).
    """

    def __init__(
        self,
        queue: Queue,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        registry: TaskRegistry | None = None,
        observers: Sequence[JobObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shutdown: Shutdown | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.storage = Storage(settings.storage)
        if ledger is None:
            check_ledger_placement(settings)
            ledger = open_ledger(settings.resolved_ledger_url)
        self.ledger = ledger
        self.registry = registry or default_registry()
        self.observers = list(observers) if observers is not None else [LogObserver()]
        self.shutdown = shutdown or Shutdown()
        self.backoff = backoff or ExponentialBackoff(settings.retry_base_s, settings.retry_max_s)
        self._clock = clock
        # At least two beats per visibility timeout, even for very short timeouts.
        self._heartbeat_s = settings.heartbeat_s
        # Our clock starts a lease after the receive returned, the queue's before: a lease
        # "valid" by less than this is extended before publishing (see _confirm).
        self._margin_s = max(_LEASE_MARGIN_S, settings.visibility_timeout_s / 10)
        self._stop_seen_at: float | None = None
        self._due_polled_at = -math.inf
        self._reported_at = clock()
        self._runner = _TaskRunner()
        #: How long jobs take here: sets the prefetch and the jobs recorded running ahead.
        self.pace = Pace(settings.visibility_timeout_s)
        #: Test-only crash points (``CONVEYOR_TEST_CRASH_AT``, read once here); None normally.
        self.faults = FaultPoints.from_env(os.environ)
        #: Records jobs the queue dead-lettered by itself (their worker died) as failed.
        self.dead_letters = DeadLetterWatch(
            queue, self.ledger, worker=self.name, clock=clock, storage=self.storage
        )

    # --- the loop ------------------------------------------------------------------------

    def run(self, policy: StopPolicy | None = None) -> int:
        """Run rounds until the stop policy is met (0) or a stop is requested (75).

        Returns:
            The exit code: ``EXIT_OK`` (finished) or ``EXIT_INTERRUPTED``.

        Raises:
            ConfigError, QueueNotFound, AccessDenied: the queue cannot be used at all.
        """
        policy = policy or policy_from_settings(self.settings)
        try:
            return self._loop(policy)
        finally:
            self._runner.close()
            self._report_requests()

    def _loop(self, policy: StopPolicy) -> int:
        rounds = jobs = last_received = failures = 0
        last_message_at = self._clock()
        while True:
            if self._stopping():
                return EXIT_INTERRUPTED
            state = LoopState(
                rounds=rounds,
                jobs=jobs,
                last_received=last_received,
                idle_s=self._clock() - last_message_at,
                pending=self.dead_letters.pending,
                exact_counts=counts_are_exact(self.queue.url),
                open_jobs=functools.partial(open_job_count, self.ledger),
            )
            if policy.should_stop(state):
                self.dead_letters.poll(final=True)
                if send_due_completions(self.queue, self.ledger, self.storage):
                    continue  # a group's completion is queued now: run it before stopping
                log.info("finished: %d job(s) in %d round(s)", jobs, rounds)
                return EXIT_OK
            result = self.run_once(policy.receive_limit(state))
            rounds += 1
            jobs += result.received
            last_received = result.received
            if result.received:
                last_message_at = self._clock()
                self.dead_letters.note_activity()
            elif not result.error and not result.interrupted:
                self.dead_letters.poll()
                self._poll_due_completions()
            if self._clock() - self._reported_at >= _REPORT_EVERY_S:
                self._report_requests()
            if result.interrupted:
                return EXIT_INTERRUPTED
            failures = failures + 1 if result.error else 0
            if failures:
                self._pause(min(30.0, 0.5 * 2.0**failures))

    def run_once(self, max_messages: int | None = None) -> RoundResult:
        """One round: receive up to a batch, handle each message, then ack the batch.

        Never raises for one job's failure (each ends with an event and a ledger record),
        nor for a transient queue error (``result.error``), so the loop carries on.

        Raises:
            ConfigError, QueueNotFound, AccessDenied: the queue cannot be used at all.
        """
        result = RoundResult()
        self._touch_health()
        if self._stopping():
            result.interrupted = True
            return result
        limit = min(self.settings.batch_size, MAX_BATCH, max_messages or MAX_BATCH)
        limit = min(limit, self.pace.prefetch())
        try:
            messages = self.queue.receive(
                limit, self.settings.wait_s, self.settings.visibility_timeout_s
            )
        except _FATAL:
            raise
        except ConveyorError as exc:
            log.warning("receive failed: %s", exc.message, extra={"action": "receive"})
            result.error = exc.message
            return result
        result.received = len(messages)
        now = self._clock()
        leases = [_Lease(msg, now + self.settings.visibility_timeout_s) for msg in messages]
        round_ = _Round(leases, next_beat_at=now + self._heartbeat_s)
        known = self._read_round(leases)
        round_.known, round_.read_ok, round_.read_at = known or {}, known is not None, now
        for lease in leases:
            self._emit(Action.RECEIVED, lease)
        try:
            for lease in leases:
                if self._stopping():
                    break
                self._beat_if_due(round_)
                if lease.lost.is_set():
                    continue  # lost while waiting its turn: someone else has it now
                result.events.append(self._handle(lease, round_))
                round_.unstarted.remove(lease)
        except _FATAL:
            raise
        except Exception as exc:  # the round's boundary: give everything back, carry on
            log.exception("round failed: %s", exc, extra={"action": "round"})
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.interrupted = self._stopping()
            self._note_not_started(round_)
            result.events.extend(self._release_unstarted(round_))
            result.acked = self._record_and_ack(round_)
        return result

    # --- one job -------------------------------------------------------------------------

    def _handle(self, lease: _Lease, round_: _Round) -> JobEvent:
        """Handle one message: the per-job boundary, which always ends in an event."""
        try:
            return self._process(lease, round_)
        except _FATAL:
            raise
        except _GraceExpired:
            return self._settle(lease, lambda: self._give_back(lease, "stopped before it finished"))
        except LeaseLost as exc:
            return self._emit(Action.LEASE_LOST, lease, reason=exc.message)
        except _Cancelled as exc:
            # Like a lost lease, the output was not published; unlike one, the message is
            # done with: acked, so that no worker runs the job again.
            round_.acks.append(lease.received.lease)
            return self._emit(Action.CANCELLED, lease, reason=exc.reason)
        except Exception as exc:
            return self._settle(lease, functools.partial(self._failed, lease, exc))

    def _settle(self, lease: _Lease, outcome: Callable[[], JobEvent]) -> JobEvent:
        """Apply a failure's outcome (retry, dead-letter, give back) to the queue and ledger.

        If that fails too, the message is left alone: it comes back after its visibility
        timeout, and its receive count still moves it towards the dead-letter queue.
        """
        try:
            return outcome()
        except _FATAL:
            raise
        except LeaseLost as exc:
            return self._emit(Action.LEASE_LOST, lease, reason=exc.message)
        except Exception as exc:
            log.exception("could not settle message %s", lease.received.message_id)
            return self._emit(Action.LEASE_LOST, lease, reason=f"not settled: {_reason(exc)}")

    def _process(self, lease: _Lease, round_: _Round) -> JobEvent:
        """Decode, check, run, publish, record; queue the ack. Raises on any failure."""
        received = lease.received
        try:
            job = lease.job = lease.job or decode_from_queue(received.body, self.storage)
        except BadInput:
            cancelled = self._cancelled_at_receive(lease, round_)
            if cancelled is not None:
                raise _Cancelled(f"not run: {self._cancel_reason(cancelled)}") from None
            if not self._succeeded_before(lease, round_):
                raise
            # A late duplicate of a job that succeeded (its claim-checked params are gone
            # with it): nothing left to do.
            round_.acks.append(received.lease)
            return self._emit(Action.SKIPPED, lease)
        cancelled = self._cancelled_at_receive(lease, round_)
        if cancelled is not None:
            raise _Cancelled(f"not run: {self._cancel_reason(cancelled)}")
        if self.faults is not None:
            self.faults.hit(FaultPoint.AFTER_RECEIVE, job.job_id)
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
            record = self._fresh_record(job.job_id, round_)
        # A group's job that succeeded is done even if its output is gone: the group's
        # completion consumed it (a late duplicate must not write a part again).
        if (
            record is not None
            and record.state is JobState.SUCCEEDED
            and (published or record.group is not None)
        ):
            round_.acks.append(received.lease)
            return self._emit(Action.SKIPPED, lease)
        self._note_crashed_attempt(lease, record, output_path)
        if lease.running_ahead:
            lease.running_ahead = False
        else:
            self._record_running(lease, round_)
        self._emit(Action.STARTED, lease)
        started = self._clock()
        try:
            task_result = self._execute(func, input_path, output_path, lease, round_)
        finally:
            duration_s = self._clock() - started
            self.pace.learn(job.task, duration_s)
        round_.defer(self._event(lease, JobState.SUCCEEDED, result=task_result))
        if self.faults is not None:
            self._write_records(round_)  # the crash below must find the success recorded
            self.faults.hit(FaultPoint.AFTER_LEDGER, job.job_id)
        round_.acks.append(received.lease)
        return self._emit(Action.SUCCEEDED, lease, duration_s=duration_s, result=task_result)

    def _record_running(self, lease: _Lease, round_: _Round) -> None:
        """Record the job as running, with the deferred successes of the jobs before it and
        the ``running`` of the quick jobs after it (:meth:`_plan_ahead`): one transaction.

        A job that cannot be recorded as running does not run: the ``StorageError`` ends
        its attempt (retried later), and the jobs planned with it are not marked recorded,
        so each writes its own ``running`` again before it starts.
        """
        ahead = self._plan_ahead(lease, round_)
        round_.defer(self._event(lease, JobState.RUNNING))
        for other in ahead:
            round_.defer(self._event(other, JobState.RUNNING))
        self._write_records(round_)
        for other in ahead:
            other.running_ahead = True

    def _plan_ahead(self, lease: _Lease, round_: _Round) -> list[_Lease]:
        """The jobs of the round right after ``lease``'s to record as running with it.

        A transaction per job cost more than a quick job itself. A job is taken only if it
        will plainly run (:meth:`_plainly_runs`) and the jobs before it, ``lease``'s
        included, are expected (from their tasks' recent durations) to take no more than
        ``_AHEAD_BUDGET_S`` in all: its ``started_at`` is then early by about that much at
        most. A task not seen yet, or one that was recently slow, ends the plan; so does
        a stop request. A job planned but never started is recorded ``retrying`` when the
        round ends (:meth:`_note_not_started`).
        """
        assert lease.job is not None
        spent_s = self.pace.expected_s(lease.job.task)
        if spent_s > _AHEAD_BUDGET_S or not round_.read_ok or self._stopping():
            return []
        ahead: list[_Lease] = []
        for other in round_.leases[round_.leases.index(lease) + 1 :]:
            if not self._plainly_runs(other, round_):
                break
            assert other.job is not None
            ahead.append(other)
            spent_s += self.pace.expected_s(other.job.task)
            if spent_s > _AHEAD_BUDGET_S:
                break
        return ahead

    def _plainly_runs(self, lease: _Lease, round_: _Round) -> bool:
        """Whether the lease's job will start when its turn comes, with no ledger read of its
        own: a first delivery, held, decodable, queued (or unknown) as of the round's read,
        of a task this worker has run before, with no output published yet."""
        if lease.lost.is_set() or lease.received.receive_count != 1:
            return False
        job = self._decoded(lease)
        if job is None or not self.pace.knows(job.task):
            return False
        record = round_.known.get(job.job_id)
        if record is not None and record.state is not JobState.QUEUED:
            return False
        try:
            return job.output is None or not self.storage.resolve_output(job.output).exists()
        except BadInput:
            return False

    def _decoded(self, lease: _Lease) -> Job | None:
        """The lease's job, decoded now if it was not yet; None if it cannot be (its turn
        deals with that)."""
        if lease.job is None:
            try:
                lease.job = decode_from_queue(lease.received.body, self.storage)
            except BadInput:
                return None
        return lease.job

    def _note_not_started(self, round_: _Round) -> None:
        """Queue a ``retrying`` event for each job recorded running ahead of its turn that
        never started (a stop request, a lost lease, a failed round): the ledger must not
        show it running, nor its next delivery take it for a crashed attempt."""
        for lease in round_.unstarted:
            if lease.running_ahead:
                why = "lease lost" if lease.lost.is_set() else "given back"
                round_.defer(self._event(lease, JobState.RETRYING, error=f"not started: {why}"))

    def _record_of(self, job_id: str) -> JobRecord | None:
        """The ledger's record of exactly this job (never one whose id it only prefixes)."""
        return self.ledger.get_many([job_id]).get(job_id)

    def _read_round(self, leases: Sequence[_Lease]) -> dict[str, JobRecord] | None:
        """The ledger's records of the round's jobs: one query for the whole round, so
        that a cancelled job is acked without running. None if the ledger cannot be read:
        the jobs run then, and each checks for a cancel again before it publishes."""
        job_ids = [job_id for lease in leases if (job_id := lease.job_id) is not None]
        if not job_ids:
            return {}
        try:
            return self.ledger.get_many(job_ids)
        except _FATAL:
            raise
        except ConveyorError as exc:
            log.warning("cannot read the ledger: %s", exc.message, extra={"action": "ledger"})
            return None

    def _fresh_record(self, job_id: str, round_: _Round) -> JobRecord | None:
        """The job's record, as read with the round if that was a moment ago, else read
        again (a redelivery's checks must not act on what an earlier job's run made stale).
        """
        if self._clock() - round_.read_at <= _FRESH_S and round_.read_ok:
            return round_.known.get(job_id)
        return self._record_of(job_id)

    def _cancelled_at_receive(self, lease: _Lease, round_: _Round) -> JobRecord | None:
        """The job's record if the round's read found it cancelled, else None."""
        record = round_.known.get(lease.job_id or "")
        return record if record is not None and record.state is JobState.CANCELLED else None

    @staticmethod
    def _cancel_reason(record: JobRecord) -> str:
        return record.error or "cancelled"

    def _check_not_cancelled(self, lease: _Lease) -> None:
        """Just before publishing: raise ``_Cancelled`` if the job was cancelled while it
        ran (one read of exactly this job).

        Raises:
            StorageError: the ledger cannot be read (a transient failure: retried).
        """
        job_id = lease.job_id
        record = None if job_id is None else self._record_of(job_id)
        if record is not None and record.state is JobState.CANCELLED:
            raise _Cancelled(f"not published: {self._cancel_reason(record)}")

    def _succeeded_before(self, lease: _Lease, round_: _Round) -> bool:
        """Whether the ledger has the message's job as succeeded (read only for a message
        that cannot be decoded, so it costs nothing on the normal path)."""
        job_id = lease.job_id
        record = None if job_id is None else self._fresh_record(job_id, round_)
        return record is not None and record.state is JobState.SUCCEEDED

    def _execute(
        self,
        func: TaskFunction,
        input_path: Path | None,
        output_path: Path | None,
        lease: _Lease,
        round_: _Round,
    ) -> TaskResult:
        """Run the task while this thread heartbeats; publish its output if still leased.

        A job without output publishes nothing; its lease is still confirmed before it
        counts as succeeded.
        """
        assert lease.job is not None
        if output_path is None:
            ctx = TaskContext(
                lease.job, input_path, None, None, lease_check=lease.check, storage=self.storage
            )
            task_result = self._run_task(func, ctx, lease, round_)
            self._confirm(lease)
            return task_result
        fault = None if self.faults is None else self.faults.storage_hook(lease.job_id)
        with atomic_output(output_path, lambda: self._confirm(lease), fault) as temp:
            ctx = TaskContext(
                lease.job,
                input_path,
                output_path,
                temp,
                lease_check=lease.check,
                storage=self.storage,
            )
            return self._run_task(func, ctx, lease, round_)

    def _run_task(
        self, func: TaskFunction, ctx: TaskContext, lease: _Lease, round_: _Round
    ) -> TaskResult:
        """Run ``func(ctx)`` on the task thread and wait for it; its result, checked."""
        call = self._runner.submit(func, ctx)
        self._wait_for(call, lease, round_)
        if isinstance(call.error, Exception):
            raise call.error
        if call.error is not None:  # SystemExit, KeyboardInterrupt: not the worker's
            raise TransientTaskError(
                f"task raised {type(call.error).__name__}: {call.error}"
            ) from call.error
        return _checked_result(call.result)

    def _wait_for(self, call: _Call, lease: _Lease, round_: _Round) -> None:
        """Block until the task ends, heartbeating; past the grace deadline, give up on it."""
        while not call.done.wait(_TICK_S):
            self._beat_if_due(round_)
            seen_at = self._stop_seen_at if self._stopping() else None
            if seen_at is not None and self._clock() - seen_at >= self.settings.grace_s:
                lease.lost.set()  # the abandoned task must not publish
                raise _GraceExpired

    def _confirm(self, lease: _Lease) -> None:
        """Just before publishing: make sure the lease is still ours and the job was not
        cancelled while it ran (one read of the ledger; ``_Cancelled`` if it was).

        A lease is lost only by expiring (someone else may then receive the message) or by
        a failed heartbeat. While our own clock says it has plenty of time left, that is
        proof enough and costs no request; close to expiry, extend it to be sure. If the
        queue cannot be reached then, publish only if the lease is still valid by our clock.
        """
        lease.check()
        self._check_not_cancelled(lease)
        if self._clock() < lease.valid_until - self._margin_s:
            return
        try:
            self.queue.extend(lease.received.lease, self.settings.visibility_timeout_s)
        except LeaseLost:
            lease.lost.set()
            raise
        except TransientQueueError:
            if self._clock() > lease.valid_until - _LEASE_MARGIN_S:
                raise
        else:
            lease.valid_until = self._clock() + self.settings.visibility_timeout_s

    def _note_crashed_attempt(
        self, lease: _Lease, record: JobRecord | None, output_path: Path | None
    ) -> None:
        """Record that the previous attempt died, if the ledger still says it is running,
        and remove the temporary output it left behind.

        A worker killed mid-job records nothing; this later delivery is the first sign of
        it, and noting it here means the reason is known if the job fails for good.
        """
        attempt = lease.received.receive_count
        if record is None or record.state is not JobState.RUNNING or record.attempts >= attempt:
            return
        if output_path is not None:
            remove_temps(output_path)
        assert lease.job is not None
        reason = (
            f"attempt {record.attempts} did not finish: its worker ({record.worker or '?'}) "
            "died or its lease expired"
        )
        event = LedgerEvent.for_job(
            lease.job, JobState.RETRYING, attempt=record.attempts, worker=self.name, error=reason
        )
        self._send_due(self.ledger.record_many([event]))

    def _crash_before_ack(self, round_: _Round) -> None:
        """Test-only: crash before the round's ack if ``CONVEYOR_TEST_CRASH_AT`` says so."""
        acking = set(round_.acks)
        for lease in round_.leases:
            if self.faults is not None and lease.received.lease in acking:
                self.faults.hit(FaultPoint.BEFORE_ACK, lease.job_id)

    # --- outcomes ------------------------------------------------------------------------

    def _failed(self, lease: _Lease, exc: BaseException) -> JobEvent:
        """A job raised: dead-letter it if permanent or out of attempts, else retry later."""
        attempt = lease.received.receive_count
        reason = _reason(exc)
        if isinstance(exc, ConveyorError) and exc.permanent:
            return self._dead_letter(lease, reason)
        if not isinstance(exc, ConveyorError):  # a bug in the task, probably: show where
            log.warning(
                "job %s raised %s",
                lease.job_id,
                type(exc).__name__,
                exc_info=exc,
                extra={"job_id": lease.job_id, "attempt": attempt},
            )
        if attempt >= self.queue.max_receive_count:
            # Dead-letter now rather than on the next receive: the reason travels with the
            # message, the ledger and the queue agree at once, and nobody waits a backoff
            # for a job that will not run again.
            return self._dead_letter(lease, f"gave up after {attempt} attempts: {reason}")
        delay_s = self.backoff.delay_s(attempt)
        self._record(lease, JobState.RETRYING, error=reason)
        self.queue.release(lease.received.lease, delay_s)
        return self._emit(Action.RETRYING, lease, reason=reason, delay_s=delay_s)

    def _dead_letter(self, lease: _Lease, reason: str) -> JobEvent:
        """Record the job as failed (if it has an id) and move its message to the DLQ."""
        self._record(lease, JobState.FAILED, error=reason)
        self.queue.dead_letter(lease.received.lease, reason)
        return self._emit(Action.FAILED, lease, reason=reason)

    def _give_back(self, lease: _Lease, reason: str) -> JobEvent:
        """Release a message now (visibility 0) so another worker takes it at once."""
        self._record(lease, JobState.RETRYING, error=reason)
        self.queue.release(lease.received.lease, 0)
        return self._emit(Action.RELEASED, lease, reason=reason)

    def _release_unstarted(self, round_: _Round) -> list[JobEvent]:
        """Give back the messages of the round that never started (stop request, error)."""
        pending = [lease for lease in round_.unstarted if not lease.lost.is_set()]
        if not pending:
            return []
        try:
            result = self.queue.release_batch([lease.received.lease for lease in pending], 0)
        except ConveyorError as exc:
            log.warning("could not release %d message(s): %s", len(pending), exc.message)
            return []
        return [
            self._emit(Action.RELEASED, lease, reason="not started")
            for lease in pending
            if lease.received.lease in result.ok
        ]

    def _record_and_ack(self, round_: _Round) -> int:
        """End a round: write its deferred ledger events, then ack its finished messages.

        If the ledger cannot be written, nothing is acked: the messages come back after
        their visibility timeout, and a rerun publishes the same output.
        """
        try:
            self._write_records(round_)
        except _FATAL:
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
        if self.faults is not None:
            self._crash_before_ack(round_)
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

    def _release_claims(self, round_: _Round, acked: set[str]) -> None:
        """Remove the claim-checked params of the jobs that succeeded and were acked: no
        attempt will read them again (a job that may be retried or redriven keeps its
        claim; a late duplicate of a finished job is acked from the ledger)."""
        for lease in round_.leases:
            if lease.received.lease not in acked or '"params_ref"' not in lease.received.body:
                continue
            try:
                job = Job.from_json(lease.received.body)
            except BadInput:
                continue
            if job.params_ref is not None:
                release_claim(self.storage, job.job_id, job.params_ref)

    # --- leases --------------------------------------------------------------------------

    def _beat_if_due(self, round_: _Round) -> None:
        """Extend every lease still held in this round once a heartbeat is due."""
        now = self._clock()
        if now < round_.next_beat_at:
            return
        round_.next_beat_at = now + self._heartbeat_s
        self._touch_health()
        held = round_.held()
        if not held:
            return
        try:
            result = self.queue.extend_batch(
                [lease.received.lease for lease in held], self.settings.visibility_timeout_s
            )
        except _FATAL:
            raise
        except ConveyorError as exc:
            log.warning(
                "heartbeat failed, will retry: %s", exc.message, extra={"action": "heartbeat"}
            )
            return
        for lease in held:
            why = result.failed.get(lease.received.lease)
            if why is None:
                lease.valid_until = now + self.settings.visibility_timeout_s
                self._emit(Action.LEASE_EXTENDED, lease)
                continue
            lease.lost.set()
            log.warning(
                "lease lost on message %s: %s",
                lease.received.message_id,
                why,
                extra={"action": "heartbeat", "job_id": lease.job_id},
            )

    # --- helpers -------------------------------------------------------------------------

    def _stopping(self) -> bool:
        """Whether a stop was requested; notes (and logs) when this worker first saw it."""
        if not self.shutdown.is_set():
            return False
        if self._stop_seen_at is None:
            self._stop_seen_at = self._clock()
            log.warning(
                "%s: stopping; a running job gets %g s to finish",
                self.shutdown.signal_name,
                self.settings.grace_s,
                extra={"action": "shutdown"},
            )
        return True

    def _pause(self, seconds: float) -> None:
        """Sleep after a failed round, waking early on a stop request."""
        deadline = time.monotonic() + seconds
        while not self._stopping() and time.monotonic() < deadline:
            time.sleep(min(_TICK_S * 4, max(0.0, deadline - time.monotonic())))

    def _touch_health(self) -> None:
        """Touch the liveness file (Kubernetes exec probe: ``conveyor health``)."""
        path = self.settings.health_file
        if path is None:
            return
        try:
            path.touch()
        except OSError as exc:
            log.warning("cannot touch health file %s: %s", path, exc.strerror)

    def _report_requests(self) -> None:
        """Store this worker's queue requests by kind in the ledger (``conveyor status``)."""
        counts = self.queue.request_counts()
        if not counts:
            return
        try:
            self.ledger.record_worker_stats(self.ledger.writer, counts)
        except ConveyorError as exc:
            log.warning("cannot store queue request counts: %s", exc.message)
        self._reported_at = self._clock()

    def _record(
        self, lease: _Lease, state: JobState, *, error: str | None = None, result: TaskResult = None
    ) -> None:
        """Write a ledger event for the lease's job now (skipped if no job id can be read)."""
        event = self._event(lease, state, error=error, result=result)
        if event is not None:
            self._send_due(self.ledger.record_many([event]))

    def _event(
        self, lease: _Lease, state: JobState, *, error: str | None = None, result: TaskResult = None
    ) -> LedgerEvent | None:
        """A ledger event for the lease's job, stamped now; None if no job id can be read."""
        attempt, now = lease.received.receive_count, time.time()
        if lease.job is not None:
            return LedgerEvent.for_job(
                lease.job,
                state,
                attempt=attempt,
                at=now,
                worker=self.name,
                error=error,
                result=result,
            )
        if lease.job_id is not None:
            return LedgerEvent(lease.job_id, state, attempt, at=now, worker=self.name, error=error)
        return None

    def _send_due(self, completions: list[Completion]) -> None:
        """Send the group completions a ledger write just made due (usually none)."""
        if completions:
            send_completions(self.queue, self.ledger, self.storage, completions)

    def _poll_due_completions(self) -> None:
        """After an empty receive, at most every ``_DUE_POLL_S``: send the completions the
        ledger has as due and not sent (their sender died between the two)."""
        now = self._clock()
        if now - self._due_polled_at < _DUE_POLL_S:
            return
        self._due_polled_at = now
        send_due_completions(self.queue, self.ledger, self.storage)

    def _write_records(self, round_: _Round) -> None:
        """Write the round's deferred ledger events in one call; kept for a retry on error.

        A job's ``succeeded`` waits in ``round_.records`` and goes out with the next job's
        ``running`` (or before the round's ack): one ledger call per job, not two; for quick
        jobs, whose ``running`` goes out ahead in one call (:meth:`_plan_ahead`), two calls
        per round.

        Raises:
            StorageError: the ledger could not be written.
        """
        if round_.records:
            self._send_due(self.ledger.record_many(round_.records))
            round_.records.clear()

    def _emit(
        self,
        action: Action,
        lease: _Lease,
        *,
        duration_s: float | None = None,
        reason: str | None = None,
        delay_s: int | None = None,
        result: TaskResult = None,
    ) -> JobEvent:
        """Tell every observer (logs, metrics) what happened to a job; the one place."""
        event = JobEvent(
            action=action,
            job_id=lease.job_id,
            task=lease.job.task if lease.job is not None else None,
            attempt=lease.received.receive_count,
            worker=self.name,
            duration_s=duration_s,
            reason=reason,
            delay_s=delay_s,
            submitted_at=lease.job.submitted_at if lease.job is not None else None,
            result=result,
        )
        for observer in self.observers:
            try:
                observer.job_event(event)
            except Exception:
                log.exception("job observer %r failed", observer)
        return event


@dataclass
class _Round:
    """The leases received in one round and what is left to do with them."""

    leases: list[_Lease]
    next_beat_at: float
    acks: list[str] = field(default_factory=list)
    unstarted: list[_Lease] = field(default_factory=list)
    #: Ledger events not written yet (see ``Worker._write_records``).
    records: list[LedgerEvent] = field(default_factory=list)
    #: The ledger's records of the round's jobs, read once when it was received, and when.
    known: dict[str, JobRecord] = field(default_factory=dict)
    read_at: float = -math.inf
    read_ok: bool = True

    def __post_init__(self) -> None:
        self.unstarted = list(self.leases)

    def defer(self, event: LedgerEvent | None) -> None:
        """Queue a ledger event for the round's next write."""
        if event is not None:
            self.records.append(event)

    def held(self) -> list[_Lease]:
        """Leases to keep alive: not yet lost, and either not done or waiting for the ack."""
        acking = set(self.acks)
        return [
            lease
            for lease in self.leases
            if not lease.lost.is_set()
            and (lease in self.unstarted or lease.received.lease in acking)
        ]


def _checked_result(result: object) -> TaskResult:
    """A task's return value, checked to be a JSON object (or None) for the ledger."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise PermanentTaskError(
            f"task returned {type(result).__name__}; return a dict of JSON values or None"
        )
    try:
        json.dumps(dict(result), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task result is not JSON: {exc}") from None
    return result


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, for the ledger and the dead-letter queue."""
    if isinstance(exc, ConveyorError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
