"""Jobs by state over time, and finishes per time bucket, from the ledger's job records.

Only jobs updated inside the window change state there; every other job sits in its
current state throughout, so it enters the series as a constant baseline.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.jobs import JobState
from conveyor.ledger import JobRecord

#: Bucket widths the chart may use, in seconds: round numbers a reader can take in.
BUCKET_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
#: At most this many points per series: enough for a chart, small enough to send every 2 s.
MAX_POINTS = 120

_STATES = tuple(state.value for state in JobState)
_FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value)


@dataclass(frozen=True)
class Timeline:
    """Jobs per state sampled at every bucket boundary, and finishes within each bucket.

    Attributes:
        start: epoch seconds where the first bucket begins (a multiple of ``bucket_s``).
        bucket_s: the width of a bucket.
        times: the sample times: ``start``, then each bucket's end (``now`` for the last
            one), so there is one more sample than buckets.
        states: for each state, how many jobs were in it at each sample time.
        finished: for ``succeeded`` and ``failed``, jobs that reached it in each bucket.
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


_QUEUED, _RUNNING = JobState.QUEUED.value, JobState.RUNNING.value


def phases(record: JobRecord) -> list[tuple[float, str]]:
    """The states a job went through, as (entered at, state), oldest first.

    A record keeps the submit time, the last start and the last update, so earlier
    attempts of a retried job fold into one run: good enough for a chart.
    """
    state = str(record.state)
    started = record.started_at
    first = record.submitted_at
    if first is None:
        first = started if started is not None else record.updated_at
    steps = [(first, _QUEUED)]
    # Clocks of different machines disagree a little: never let a phase end before it began.
    if started is not None and state != _QUEUED:
        steps.append((max(started, first), _RUNNING))
    if state not in (_QUEUED, _RUNNING):
        steps.append((max(record.updated_at, steps[-1][0]), state))
    return steps


@dataclass(frozen=True)
class Transitions:
    """When jobs entered and left each state, sorted, ready to be sampled at any time."""

    entered: dict[str, list[float]]
    left: dict[str, list[float]]
    finished: dict[str, list[float]]

    @classmethod
    def of(cls, histories: Iterable[Sequence[tuple[float, str]]]) -> Transitions:
        """Collect the transitions of jobs given by their :func:`phases`."""
        entered: dict[str, list[float]] = {name: [] for name in _STATES}
        left: dict[str, list[float]] = {name: [] for name in _STATES}
        finished: dict[str, list[float]] = {name: [] for name in _FINISHED}
        for steps in histories:
            for (at, name), (next_at, _) in itertools.pairwise(steps):
                entered[name].append(at)
                left[name].append(next_at)
            last_at, last = steps[-1]
            entered[last].append(last_at)
            if last in finished:
                finished[last].append(last_at)
        for moments in (*entered.values(), *left.values(), *finished.values()):
            moments.sort()
        return cls(entered, left, finished)

    def sample(
        self,
        baseline: Mapping[str, int],
        *,
        start: float,
        now: float,
        max_points: int = MAX_POINTS,
    ) -> Timeline:
        """Jobs per state at each bucket boundary of ``[start, now]``, finishes per bucket.

        Args:
            baseline: jobs per state that did not change since before ``start``.
            start: the first time shown (rounded down to a bucket boundary).
            now: the last time shown; the last sample is taken exactly then, so it
                matches the ledger's current counts.
            max_points: the most buckets to return.
        """
        width = bucket_width_s(max(1.0, now - start), max_points)
        first = math.floor(start / width) * width
        count = max(1, math.ceil((now - first) / width))
        times = [first] + [min(first + width * (i + 1), now) for i in range(count)]
        states = {
            name: [
                baseline.get(name, 0)
                + bisect.bisect_right(self.entered[name], at)
                - bisect.bisect_right(self.left[name], at)
                for at in times
            ]
            for name in _STATES
        }
        finished = {}
        for name, moments in self.finished.items():
            # Bucket i holds finishes in [times[i], times[i+1]); the last one includes now.
            edges = [bisect.bisect_left(moments, at) for at in times[:-1]]
            edges.append(bisect.bisect_right(moments, now))
            finished[name] = [edges[i + 1] - edges[i] for i in range(count)]
        return Timeline(start=first, bucket_s=width, times=times, states=states, finished=finished)


def build_timeline(
    records: Iterable[JobRecord],
    baseline: Mapping[str, int],
    *,
    start: float,
    now: float,
    max_points: int = MAX_POINTS,
) -> Timeline:
    """Sample jobs per state over ``[start, now]``, and count finishes per bucket.

    Args:
        records: the jobs updated since ``start`` (the only ones whose state changes).
        baseline: jobs per state that did not change since before ``start``.
        start, now, max_points: see :meth:`Transitions.sample`.
    """
    transitions = Transitions.of(phases(record) for record in records)
    return transitions.sample(baseline, start=start, now=now, max_points=max_points)


def baseline_counts(totals: Mapping[str, int], recent: Iterable[JobRecord]) -> dict[str, int]:
    """Jobs per state outside ``recent``: the ledger's totals less the recent jobs' states.

    Never negative: the totals and the records are read a moment apart, so a job may
    already show its new state in one and not yet in the other.
    """
    moved = Counter(str(record.state) for record in recent)  # str(): .value is slow
    return {name: max(0, totals.get(name, 0) - moved[name]) for name in _STATES}
