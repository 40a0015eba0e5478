"""When a worker stops: stop policies (drained, enough jobs, idle) and the shutdown signal."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from conveyor.settings import EXIT_INTERRUPTED, Settings


@dataclass(frozen=True)
class LoopState:
    """What a stop policy sees between two rounds of the worker loop.

    Attributes:
        rounds: rounds run so far.
        jobs: messages handled so far (any outcome).
        last_received: messages the last round received (0: an empty receive).
        idle_s: seconds since the last message was received (or since the start).
        pending: counts the queue's visible, delayed and in-flight messages (one request;
            call it only when needed).
    """

    rounds: int
    jobs: int
    last_received: int
    idle_s: float
    pending: Callable[[], int]


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
    """Stop once ``empty_polls`` consecutive receives came back empty while the queue held
    nothing visible, delayed or in flight.

    In-flight messages held by other workers count as pending on purpose: one of them may
    fail and come back, and a work-queue Kubernetes Job completes when its first pod exits 0.
    """

    def __init__(self, empty_polls: int = 3) -> None:
        self.empty_polls = max(1, empty_polls)
        self._drained = 0

    def should_stop(self, state: LoopState) -> bool:
        if state.rounds == 0:
            return False
        if state.last_received or state.pending() > 0:
            self._drained = 0
            return False
        self._drained += 1
        return self._drained >= self.empty_polls

    def receive_limit(self, state: LoopState) -> int | None:
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
