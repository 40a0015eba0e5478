"""When a worker stops: stop policies (drained, enough jobs, idle) and the shutdown signal."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from conveyor.errors import FATAL_ERRORS, ConveyorError
from conveyor.jobs import JobState
from conveyor.settings import EXIT_INTERRUPTED, Settings

if TYPE_CHECKING:
    from conveyor.ledger import Ledger

log = logging.getLogger("conveyor.stop")
#: The worker's own log, where it says it is stopping.
worker_log = logging.getLogger("conveyor.worker")


#: Ledger states of a job that may still need a worker: it has not ended.
OPEN_STATES: tuple[JobState, ...] = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


@dataclass(frozen=True)
class LoopState:
    """What a stop policy sees between two rounds of the worker loop.

    Attributes:
        rounds: rounds run so far.
        jobs: messages handled so far (any outcome).
        last_received: messages the last round received (0: an empty receive).
        idle_s: seconds since the last message was received (or since the start).
        pending: counts the queue's visible, delayed and in-flight messages (one request
            on SQS; call it only when needed).
        exact_counts: whether ``pending`` is exact (SQLite, memory: counted in one
            transaction) or approximate (SQS: may lag a minute after producers stop).
        open_jobs: counts the jobs the ledger has queued, running or retrying (constant
            time: the ledger's maintained counters); None where no ledger is at hand.
    """

    rounds: int
    jobs: int
    last_received: int
    idle_s: float
    pending: Callable[[], int]
    exact_counts: bool = False
    open_jobs: Callable[[], int] | None = None


def open_job_count(ledger: Ledger) -> int:
    """How many jobs the ledger has queued, running or retrying (constant time)."""
    counts = ledger.counts()
    return sum(counts[state] for state in OPEN_STATES)


class StopPolicy(Protocol):
    """Decides when the worker loop ends with "finished" (exit 0).

    ``should_stop`` is called exactly once after every round (and once before the first),
    so a policy may count rounds itself.
    """

    def should_stop(self, state: LoopState) -> bool:
        """True to end the loop now."""

    def receive_limit(self, state: LoopState) -> int | None:
        """The most messages the next round may receive, or None for no limit."""


class RunForever:
    """Never stop on its own (only a signal ends the loop)."""

    def should_stop(self, state: LoopState) -> bool:
        return False

    def receive_limit(self, state: LoopState) -> int | None:
        return None


class UntilEmpty:
    """Stop once the queue is drained: nothing visible, delayed or in flight anywhere.

    Exiting 0 too early is the costly mistake (a work-queue Kubernetes Job starts no pod
    after one has succeeded, so work a dying pod gives back would wait for nobody), so
    every exit needs evidence that holds for the queue's kind (docs/architecture.md,
    "When --until-empty exits"):

    - always: the last receive came back empty, and the queue's counts read right after it
      are all zero (other workers' in-flight messages count: one may fail and come back);
    - exact counts (SQLite, memory): that is enough, the first time;
    - approximate counts (SQS): the ledger must also have no job queued, running or
      retrying (its counts are exact, and every change after the submit is written there
      before the queue is told); where the ledger cannot say so (no ledger, a ledger
      error, or open jobs the queue does not show: stale records, or another queue's jobs
      sharing the ledger), ``empty_polls`` such rounds in a row, as the counts settle.
    """

    def __init__(self, empty_polls: int = 3) -> None:
        self.empty_polls = max(1, empty_polls)
        self._drained = 0
        self._told_fallback = False
        #: Why the policy stopped (the evidence it had), once it has.
        self.evidence: str | None = None

    def should_stop(self, state: LoopState) -> bool:
        if state.rounds == 0:
            return False
        if state.last_received or not self._queue_empty(state):
            self._drained = 0
            return False
        self._drained += 1
        if state.exact_counts:
            return self._stop("an empty receive, then exact queue counts of 0")
        open_jobs = _open_jobs(state)
        if open_jobs == 0:
            return self._stop("an empty receive, queue counts of 0 and no open job in the ledger")
        if self._drained >= self.empty_polls:
            return self._stop(f"{self._drained} empty receives in a row with queue counts of 0")
        self._tell_fallback(state, open_jobs)
        return False

    def receive_limit(self, state: LoopState) -> int | None:
        return None

    def _queue_empty(self, state: LoopState) -> bool:
        """Whether the queue counts nothing pending; False when it could not be asked."""
        try:
            return state.pending() == 0
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            log.warning("cannot count the queue's messages: %s", exc.message)
            return False

    def _stop(self, evidence: str) -> bool:
        self.evidence = evidence
        log.info("the queue is drained: %s", evidence, extra={"action": "drained"})
        return True

    def _tell_fallback(self, state: LoopState, open_jobs: int | None) -> None:
        """Say once why this worker waits for more empty receives than one."""
        if self._told_fallback:
            return
        self._told_fallback = True
        if state.open_jobs is None:
            why = "no ledger vouches for its approximate counts"
        elif open_jobs is None:
            why = "the ledger cannot be read"
        else:
            why = f"the ledger has {open_jobs} open job(s) the queue does not show"
        log.info(
            "the queue looks drained but %s: exiting after %d empty receives in a row",
            why,
            self.empty_polls,
            extra={"action": "draining"},
        )


def _open_jobs(state: LoopState) -> int | None:
    """The ledger's open jobs, or None when there is no ledger or it cannot be read."""
    if state.open_jobs is None:
        return None
    try:
        return state.open_jobs()
    except ConveyorError as exc:
        log.warning("cannot count the ledger's open jobs: %s", exc.message)
        return None


class MaxJobs:
    """Stop after handling ``max_jobs`` messages; never receive more than are left."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs

    def should_stop(self, state: LoopState) -> bool:
        return state.jobs >= self.max_jobs

    def receive_limit(self, state: LoopState) -> int | None:
        return max(0, self.max_jobs - state.jobs)


class MaxIdle:
    """Stop after ``max_idle_s`` seconds without receiving a message."""

    def __init__(self, max_idle_s: float) -> None:
        self.max_idle_s = max_idle_s

    def should_stop(self, state: LoopState) -> bool:
        return state.idle_s >= self.max_idle_s

    def receive_limit(self, state: LoopState) -> int | None:
        return None


class AnyOf:
    """Stop as soon as any of several policies says so (each is still asked every round)."""

    def __init__(self, policies: Iterable[StopPolicy]) -> None:
        self.policies = list(policies)

    def should_stop(self, state: LoopState) -> bool:
        # A list, not any(): every stateful policy must see every round.
        return any([policy.should_stop(state) for policy in self.policies])

    def receive_limit(self, state: LoopState) -> int | None:
        limits = [
            limit
            for limit in (policy.receive_limit(state) for policy in self.policies)
            if limit is not None
        ]
        return min(limits) if limits else None


def policy_from_settings(settings: Settings) -> StopPolicy:
    """The combination of ``--until-empty``, ``--max-jobs`` and ``--max-idle-s``."""
    policies: list[StopPolicy] = []
    if settings.until_empty:
        policies.append(UntilEmpty(settings.empty_polls))
    if settings.max_jobs is not None:
        policies.append(MaxJobs(settings.max_jobs))
    if settings.max_idle_s is not None:
        policies.append(MaxIdle(settings.max_idle_s))
    if not policies:
        return RunForever()
    return policies[0] if len(policies) == 1 else AnyOf(policies)


class Shutdown:
    """A request to stop, set by SIGTERM/SIGINT (or by a test calling :meth:`request`).

    The first signal only sets an event: the worker stops receiving, lets the running job
    finish within the grace period, and exits 75. A second signal exits at once (75), like
    a second Ctrl-C. The worker's main thread never *waits* on this event (it polls
    :meth:`is_set`), so setting it from a signal handler cannot deadlock on the event's lock.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        #: Signals received so far, and the name of the last one.
        self.signals = 0
        self.signal_name = "stop request"

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    def request(self) -> None:
        """Ask the worker to stop (what the first signal does)."""
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for a stop request (for threads other than the main one)."""
        return self._event.wait(timeout_s)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes: no logging (its locks may be
        # held), just the event; the worker logs when it notices.
        self.signals += 1
        self.signal_name = signal.Signals(signum).name
        if self.signals > 1:
            os.write(2, f"conveyor: second {self.signal_name}: exiting now\n".encode())
            os._exit(EXIT_INTERRUPTED)
        self.request()

    @contextmanager
    def installed(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> Iterator[Shutdown]:
        """Route these signals to this object while the block runs (main thread only)."""
        previous = {signum: signal.signal(signum, self._handle) for signum in signals}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class StopWatch:
    """A worker's view of the stop request: when it first saw it (logged once), and
    whether the grace period a running job gets since then is over.

    Args:
        shutdown: the stop request a signal handler sets.
        clock: monotonic seconds (the worker's clock).
        grace_s: seconds a running job may still take once a stop was seen.
    """

    def __init__(self, shutdown: Shutdown, clock: Callable[[], float], grace_s: float) -> None:
        self.shutdown = shutdown
        self.grace_s = grace_s
        self._clock = clock
        self._seen_at: float | None = None

    def stopping(self) -> bool:
        """Whether a stop was requested; notes (and logs) when this worker first saw it."""
        if not self.shutdown.is_set():
            return False
        if self._seen_at is None:
            self._seen_at = self._clock()
            worker_log.warning(
                "%s: stopping; a running job gets %g s to finish",
                self.shutdown.signal_name,
                self.grace_s,
                extra={"action": "shutdown"},
            )
        return True

    def grace_over(self) -> bool:
        """Whether a stop was requested at least ``grace_s`` ago (by the worker's clock)."""
        if not self.stopping():
            return False
        assert self._seen_at is not None
        return self._clock() - self._seen_at >= self.grace_s
