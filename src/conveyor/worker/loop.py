"""The worker loop: ``Worker.run_once()`` is one receive-process-ack round; ``Worker.run()``
loops it under a stop policy (:mod:`conveyor.stop`) until drained, told to stop, or
interrupted."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from conveyor.backoff import Backoff, ExponentialBackoff
from conveyor.completions import send_due_completions
from conveyor.default_tasks import default_registry
from conveyor.errors import FATAL_ERRORS, ConveyorError
from conveyor.events import Action, LogObserver, WorkerObserver
from conveyor.ledger import Ledger, open_ledger
from conveyor.queues.base import MAX_BATCH, Queue
from conveyor.reconcile import DeadLetterWatch
from conveyor.settings import EXIT_INTERRUPTED, EXIT_OK, Settings
from conveyor.stop import (
    LoopState,
    Shutdown,
    StopPolicy,
    StopWatch,
    open_job_count,
    policy_from_settings,
)
from conveyor.storage import Storage
from conveyor.task_registry import TaskRegistry
from conveyor.worker.execution import TICK_S, Execution
from conveyor.worker.handling import JobHandler
from conveyor.worker.hooks import (
    DeadLetterCheck,
    DueCompletions,
    HealthFile,
    Hooks,
    RequestReport,
    WorkerHook,
)
from conveyor.worker.inflight import Heartbeat, InFlight, Round, RoundResult
from conveyor.worker.journal import Journal
from conveyor.worker.outcomes import Outcomes
from conveyor.worker.placement import check_ledger_placement
from conveyor.worker.prefetch import Pace

log = logging.getLogger("conveyor.worker")


class Worker:
    """Takes jobs off a queue and runs them, one at a time, safely.

    Each task runs on a long-lived task thread while the main thread keeps the leases of
    the round alive (every ``settings.heartbeat_s``), watches for a stop request and
    enforces the grace deadline. Every queue call happens on the main thread.

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
        hooks: more duties around its jobs, after its own (health file, request
            reports, dead-letter and completion checks), e.g. crash points for tests.
    """

    def __init__(
        self,
        queue: Queue,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        registry: TaskRegistry | None = None,
        observers: Sequence[WorkerObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shutdown: Shutdown | None = None,
        backoff: Backoff | None = None,
        hooks: Sequence[WorkerHook] = (),
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
        self.observers: list[WorkerObserver] = (
            list(observers) if observers is not None else [LogObserver()]
        )
        self.shutdown = shutdown or Shutdown()
        self.backoff = backoff or ExponentialBackoff(settings.retry_base_s, settings.retry_max_s)
        self._clock = clock
        self.stop = StopWatch(self.shutdown, clock, settings.grace_s)
        #: How long jobs take here: sets the prefetch and the jobs recorded running ahead.
        self.pace = Pace(settings.visibility_timeout_s)
        #: Records jobs the queue dead-lettered by itself (their worker died) as failed.
        self.dead_letters = DeadLetterWatch(
            queue, self.ledger, worker=self.name, clock=clock, storage=self.storage
        )
        own: list[WorkerHook] = (
            [] if settings.health_file is None else [HealthFile(settings.health_file)]
        )
        own += [
            DeadLetterCheck(self.dead_letters),
            DueCompletions(queue, self.ledger, self.storage, clock),
            RequestReport(queue, self.ledger, clock),
        ]
        self.hooks = Hooks([*own, *hooks])
        self.journal = Journal(
            self.name,
            queue=queue,
            ledger=self.ledger,
            storage=self.storage,
            observers=self.observers,
            clock=clock,
        )
        self.heartbeat = Heartbeat(
            queue,
            visibility_timeout_s=settings.visibility_timeout_s,
            every_s=settings.heartbeat_s,
            clock=clock,
            emit=self.journal.emit,
            on_beat=self.hooks.on_heartbeat,
        )
        self.execution = Execution(
            self.storage, self.journal, self.heartbeat, self.stop, self.hooks
        )
        self.outcomes = Outcomes(queue, self.journal, self.backoff, self.storage, self.hooks)
        self.handler = JobHandler(
            registry=self.registry,
            storage=self.storage,
            journal=self.journal,
            execution=self.execution,
            outcomes=self.outcomes,
            pace=self.pace,
            hooks=self.hooks,
            stop=self.stop,
            clock=clock,
        )

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
            self.execution.close()
            self.hooks.on_exit()

    def _loop(self, policy: StopPolicy) -> int:
        rounds = jobs = last_received = failures = 0
        last_message_at = self._clock()
        while True:
            if self.stop.stopping():
                return EXIT_INTERRUPTED
            state = LoopState(
                rounds=rounds,
                jobs=jobs,
                last_received=last_received,
                idle_s=self._clock() - last_message_at,
                pending=self.dead_letters.pending,
                exact_counts=not self.queue.remote,  # SQS counts are approximate
                open_jobs=functools.partial(open_job_count, self.ledger),
            )
            if policy.should_stop(state):
                self.hooks.on_finish()
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
            self.hooks.after_round(result)
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
        self.hooks.before_round()
        if self.stop.stopping():
            result.interrupted = True
            return result
        limit = min(self.settings.batch_size, MAX_BATCH, max_messages or MAX_BATCH)
        limit = min(limit, self.pace.prefetch())
        try:
            messages = self.queue.receive(
                limit, self.settings.wait_s, self.settings.visibility_timeout_s
            )
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            log.warning("receive failed: %s", exc.message, extra={"action": "receive"})
            result.error = exc.message
            return result
        result.received = len(messages)
        now = self._clock()
        flights = [InFlight(msg, now + self.settings.visibility_timeout_s) for msg in messages]
        round_ = Round(flights, next_beat_at=now + self.heartbeat.every_s)
        known = self.journal.read_round(flights)
        round_.known, round_.read_ok, round_.read_at = known or {}, known is not None, now
        for flight in flights:
            self.journal.emit(Action.RECEIVED, flight)
        try:
            for flight in flights:
                if self.stop.stopping():
                    break
                self.heartbeat.beat_if_due(round_)
                if flight.lost.is_set():
                    continue  # lost while waiting its turn: someone else has it now
                result.events.append(self.handler.handle(flight, round_))
                round_.unstarted.remove(flight)
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # the round's boundary: give everything back, carry on
            log.exception("round failed: %s", exc, extra={"action": "round"})
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.interrupted = self.stop.stopping()
            self.outcomes.note_not_started(round_)
            result.events.extend(self.outcomes.release_unstarted(round_))
            result.acked = self.outcomes.record_and_ack(round_)
            self.pace.note_round(result.received)
        return result

    def _pause(self, seconds: float) -> None:
        """Sleep after a failed round, waking early on a stop request."""
        deadline = time.monotonic() + seconds
        while not self.stop.stopping() and time.monotonic() < deadline:
            time.sleep(min(TICK_S * 4, max(0.0, deadline - time.monotonic())))
