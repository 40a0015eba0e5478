"""How far ahead a worker takes jobs: ``Pace`` learns how long jobs take and sets how many
messages a round receives; ``plan_ahead`` picks the quick jobs recorded running together."""

from __future__ import annotations

import math
from collections.abc import Callable

from conveyor.errors import BadInput
from conveyor.jobs import Job, JobState, decode_from_queue
from conveyor.queues.base import MAX_BATCH
from conveyor.storage import Storage
from conveyor.worker.inflight import InFlight, Round

#: A round receives no more jobs than recent ones would run in this part of the
#: visibility timeout (one at a time when a job takes longer): see Pace.prefetch.
PREFETCH_FRACTION = 0.1
#: ... and no more than they would run in this many seconds: what a worker holds while
#: other workers may be idle (the tail of a group of shards) stays about this long.
PREFETCH_MAX_S = 1.0
#: A job is recorded ``running`` ahead of its turn, with the job before it, only if the
#: jobs of the round ahead of it are expected to take no longer than this in all: its
#: ``started_at`` is then early by at most about this much (see ``plan_ahead``).
AHEAD_BUDGET_S = 0.05
#: How fast a task's expected duration forgets a slow run (halved after each later run).
DURATION_DECAY = 0.5


class Pace:
    """How long this worker's jobs take, learnt from its runs: each task's expected
    duration, and how long recent jobs took whatever their task.

    They set how many messages a round receives (:meth:`prefetch`) and which quick jobs
    are recorded ``running`` ahead of their turn (:func:`plan_ahead`).
    """

    def __init__(self, visibility_timeout_s: float) -> None:
        self.visibility_timeout_s = visibility_timeout_s
        #: Each task's expected duration: its last run, or a recent slow run half-forgotten.
        self._expected_s: dict[str, float] = {}
        #: How long recent jobs took, any task (None before the first).
        self._recent_s: float | None = None
        #: The prefetch until a job has run here: 1, doubled after each round that
        #: received messages but ran none (skipped, cancelled, malformed ones).
        self._cold = 1

    def learn(self, task: str, duration_s: float) -> None:
        """Note how long a run of ``task`` took (a slow run is forgotten over a few more)."""
        before_s = self._expected_s.get(task, 0.0)
        self._expected_s[task] = max(duration_s, before_s * DURATION_DECAY)
        recent_s = self._recent_s or 0.0
        self._recent_s = max(duration_s, recent_s * DURATION_DECAY)

    def note_round(self, received: int) -> None:
        """After a round that received ``received`` messages: while no job has run yet (all
        were skipped, cancelled or malformed), take twice as many next time."""
        if self._recent_s is None and received:
            self._cold = min(MAX_BATCH, 2 * self._cold)

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
        would run within ``PREFETCH_FRACTION`` of the visibility timeout, and within
        ``PREFETCH_MAX_S``: a batch of quick jobs, two of half a second, one long job at a
        time, so that the last jobs of a backlog are not queued behind one busy worker
        while the others idle. A fresh worker does not know yet how long its jobs
        take: it takes one message, then learns (K workers started on K long jobs run
        them at once); a round of messages that ran no job doubles that (TCP's slow start).
        """
        if self._recent_s is None:
            return self._cold
        if self._recent_s <= 0:
            return MAX_BATCH
        budget_s = min(PREFETCH_FRACTION * self.visibility_timeout_s, PREFETCH_MAX_S)
        return max(1, min(MAX_BATCH, math.floor(budget_s / self._recent_s)))


def plan_ahead(
    flight: InFlight,
    round_: Round,
    pace: Pace,
    storage: Storage,
    stopping: Callable[[], bool],
) -> list[InFlight]:
    """The jobs of the round right after ``flight``'s to record as running with it.

    A transaction per job cost more than a quick job itself. A job is taken only if it
    will plainly run (:func:`plainly_runs`) and the jobs before it, ``flight``'s included,
    are expected (from their tasks' recent durations) to take no more than
    ``AHEAD_BUDGET_S`` in all: its ``started_at`` is then early by about that much at
    most. A task not seen yet, or one that was recently slow, ends the plan; so does a
    stop request (``stopping()``). A job planned but never started is recorded
    ``retrying`` when the round ends (``Outcomes.note_not_started``).
    """
    assert flight.job is not None
    spent_s = pace.expected_s(flight.job.task)
    if spent_s > AHEAD_BUDGET_S or not round_.read_ok or stopping():
        return []
    ahead: list[InFlight] = []
    for other in round_.flights[round_.flights.index(flight) + 1 :]:
        if not plainly_runs(other, round_, pace, storage):
            break
        assert other.job is not None
        ahead.append(other)
        spent_s += pace.expected_s(other.job.task)
        if spent_s > AHEAD_BUDGET_S:
            break
    return ahead


def plainly_runs(flight: InFlight, round_: Round, pace: Pace, storage: Storage) -> bool:
    """Whether the job will start when its turn comes, with no ledger read of its own: a
    first delivery, held, decodable, queued (or unknown) as of the round's read, of a task
    this worker has run before, with no output published yet."""
    if flight.lost.is_set() or flight.received.receive_count != 1:
        return False
    job = decoded(flight, storage)
    if job is None or not pace.knows(job.task):
        return False
    record = round_.known.get(job.job_id)
    if record is not None and record.state is not JobState.QUEUED:
        return False
    try:
        return job.output is None or not storage.resolve_output(job.output).exists()
    except BadInput:
        return False


def decoded(flight: InFlight, storage: Storage) -> Job | None:
    """The job, decoded now if it was not yet; None if it cannot be (its turn deals with
    that)."""
    if flight.job is None:
        try:
            flight.job = decode_from_queue(flight.received.body, storage)
        except BadInput:
            return None
    return flight.job
