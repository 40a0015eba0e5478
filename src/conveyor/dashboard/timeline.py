"""Jobs by state over time, and finishes per time bucket, from the ledger's state changes.

The chart starts from the ledger's current counts and walks back through the changes
recorded inside its window (``Ledger.transitions``), undoing each one: its cost follows
the window, never the ledger's size, and every change shows, even one a later change
undid (a failure followed by a redrive).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.jobs import JobState
from conveyor.ledger import Transition, state_rank

#: Bucket widths the chart may use, in seconds: round numbers a reader can take in.
BUCKET_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
#: At most this many points per series: enough for a chart, small enough to send every 2 s.
MAX_POINTS = 120

_STATES = tuple(state.value for state in JobState)
#: States whose arrivals the throughput chart counts.
FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)
_QUEUED, _RUNNING, _RETRYING = (
    JobState.QUEUED.value,
    JobState.RUNNING.value,
    JobState.RETRYING.value,
)


@dataclass(frozen=True)
class Timeline:
    """Jobs per state sampled at every bucket boundary, and finishes within each bucket.

    Attributes:
        start: epoch seconds where the first bucket begins (a multiple of ``bucket_s``).
        bucket_s: the width of a bucket.
        times: the sample times: ``start``, then each bucket's end (``now`` for the last
            one), so there is one more sample than buckets.
        states: for each state, how many jobs were in it at each sample time.
        finished: for each terminal state, jobs that reached it in each bucket.
    """

    start: float
    bucket_s: int
    times: list[float]
    states: dict[str, list[int]]
    finished: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "start": self.start,
            "bucket_s": self.bucket_s,
            "times": self.times,
            "states": self.states,
            "finished": self.finished,
        }


def bucket_width_s(span_s: float, max_points: int = MAX_POINTS) -> int:
    """The smallest width in ``BUCKET_STEPS_S`` that covers ``span_s`` in ``max_points``."""
    for step in BUCKET_STEPS_S:
        if span_s / step <= max_points:
            return step
    return math.ceil(span_s / max_points)


def previous_state(first: Transition) -> str | None:
    """The state a job left at ``first``, its first change inside the window, when its
    earlier changes are older than the window: the one the worker's protocol puts before
    it. None for ``queued`` (a new job: it was in no state before).

    ``running`` follows ``queued`` on the first attempt and ``retrying`` after; an outcome
    follows ``running``, except one recorded before any run (attempt 0: a cancel of a
    queued job).
    """
    state = str(first.state)
    if state == _QUEUED:
        return None
    if state == _RUNNING:
        return _QUEUED if first.attempt <= 1 else _RETRYING
    if state == _RETRYING:
        return _RUNNING
    return _RUNNING if first.attempt >= 1 else _QUEUED


def in_ledger_order(changes: list[Transition]) -> list[Transition]:
    """One job's changes (by time) in the order the ledger applied them.

    The ledger moves a job only to a higher :func:`state_rank`, except a redrive (failed
    back to queued), so between redrives the ranks rise. Times come from the writers'
    clocks, which may disagree by a little: sorting by rank undoes that.
    """
    if len(changes) < 2:
        return changes
    ordered: list[Transition] = []
    run: list[Transition] = []
    for change in changes:
        redrive = change.state == JobState.QUEUED and run and run[-1].state == JobState.FAILED
        if redrive:
            ordered += sorted(run, key=_rank)
            run = []
        run.append(change)
    return ordered + sorted(run, key=_rank)


def _rank(change: Transition) -> int:
    return state_rank(JobState(change.state), change.attempt)


@dataclass(frozen=True)
class Moves:
    """When jobs entered and left each state, sorted, ready to be sampled at any time."""

    entered: dict[str, list[float]]
    left: dict[str, list[float]]
    finished: dict[str, list[float]]

    @classmethod
    def of(cls, transitions: Iterable[Transition], *, now: float) -> Moves:
        """Collect the moves of ``transitions`` (oldest first, as the ledger lists them).

        A job's later changes leave the state of its change before; its first one leaves
        :func:`previous_state`. Times past ``now`` (a writer's clock ahead of ours) count
        as ``now``, and a change never comes before the job's change before it.
        """
        entered: dict[str, list[float]] = {name: [] for name in _STATES}
        left: dict[str, list[float]] = {name: [] for name in _STATES}
        finished: dict[str, list[float]] = {name: [] for name in FINISHED}
        by_job: dict[str, list[Transition]] = {}
        for change in transitions:
            by_job.setdefault(change.job_id, []).append(change)
        for changes in by_job.values():
            came_from: str | None = None
            at_before = -math.inf
            for index, change in enumerate(in_ledger_order(changes)):
                state = str(change.state)
                if index == 0:
                    came_from = previous_state(change)
                at = max(min(change.at, now), at_before)
                if came_from != state:  # a new attempt in the same state is no move
                    if came_from is not None:
                        left[came_from].append(at)
                    entered[state].append(at)
                    if state in finished:
                        finished[state].append(at)
                came_from, at_before = state, at
        for moments in (*entered.values(), *left.values(), *finished.values()):
            moments.sort()
        return cls(entered, left, finished)

    def sample(
        self,
        counts: Mapping[str, int],
        *,
        start: float,
        now: float,
        max_points: int = MAX_POINTS,
    ) -> Timeline:
        """Jobs per state at each bucket boundary of ``[start, now]``, finishes per bucket.

        Args:
            counts: jobs per state now; earlier samples undo the moves made since.
            start: the first time shown (rounded down to a bucket boundary).
            now: the last time shown; the last sample is taken exactly then, so it
                matches ``counts``.
            max_points: the most buckets to return.
        """
        width = bucket_width_s(max(1.0, now - start), max_points)
        first = math.floor(start / width) * width
        count = max(1, math.ceil((now - first) / width))
        times = [first] + [min(first + width * (i + 1), now) for i in range(count)]
        states: dict[str, list[int]] = {}
        for name in _STATES:
            entered, left = self.entered[name], self.left[name]
            # Never negative: counts and moves are read a moment apart.
            before = self.count_before(name, counts)
            series = [
                max(0, before + bisect.bisect_right(entered, at) - bisect.bisect_right(left, at))
                for at in times
            ]
            series[-1] = max(0, counts.get(name, 0))
            states[name] = series
        finished = {}
        for name, moments in self.finished.items():
            # Bucket i holds finishes in [times[i], times[i+1]); the last one includes now.
            edges = [bisect.bisect_left(moments, at) for at in times[:-1]]
            edges.append(bisect.bisect_right(moments, now))
            finished[name] = [edges[i + 1] - edges[i] for i in range(count)]
        return Timeline(start=first, bucket_s=width, times=times, states=states, finished=finished)

    def first_move(self) -> float | None:
        """The time of the earliest move, if any."""
        firsts = [moments[0] for moments in self.entered.values() if moments]
        return min(firsts) if firsts else None

    def all_new(self, counts: Mapping[str, int]) -> bool:
        """Whether every job counted entered its first state inside the window (so the
        chart can start at the first move rather than at the window's start)."""
        return all(self.count_before(name, counts) <= 0 for name in _STATES)

    def count_before(self, state: str, counts: Mapping[str, int]) -> int:
        """Jobs in ``state`` when the window began: the count now with the moves since
        undone."""
        return counts.get(state, 0) - len(self.entered[state]) + len(self.left[state])


def build_timeline(
    transitions: Iterable[Transition],
    counts: Mapping[str, int],
    *,
    start: float,
    now: float,
    max_points: int = MAX_POINTS,
) -> Timeline:
    """Sample jobs per state over ``[start, now]``, and count finishes per bucket.

    When every job in ``counts`` was created inside the window, the chart starts at the
    first change instead of ``start``, so a young ledger fills the chart.

    Args:
        transitions: the state changes recorded since ``start``, oldest first.
        counts: jobs per state now (``Ledger.counts()``, by state name).
        start, now, max_points: see :meth:`Moves.sample`.
    """
    moves = Moves.of(transitions, now=now)
    first = moves.first_move()
    if first is not None and moves.all_new(counts):
        start = max(start, first)
    return moves.sample(counts, start=start, now=now, max_points=max_points)
