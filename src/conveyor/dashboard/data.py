"""What the dashboard shows, read from the ledger and the queue, cached between polls.

Read-only: nothing here writes to the ledger or changes a message on the queue.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.dashboard.timeline import Timeline, Transitions, baseline_counts, phases
from conveyor.errors import ConveyorError
from conveyor.jobs import JobState
from conveyor.ledger import JobRecord, Ledger, LedgerSummary
from conveyor.queues.base import DeadLetter, Queue, QueueStats
from conveyor.storage import check_job_id

log = logging.getLogger("conveyor.dashboard")

T = TypeVar("T")

#: The chart covers at most this much history by default.
DEFAULT_WINDOW_S = 3600.0
#: How many dead letters and recent failures the page lists.
LIST_LIMIT = 50


class RecentJobs:
    """The records of jobs updated in the last ``window_s``, kept up to date cheaply.

    :meth:`Ledger.jobs` returns the most recently updated jobs first, so each refresh asks
    for a few and widens the request only until it reaches jobs already seen: the cost
    follows the jobs that changed, not the size of the ledger.

    Args:
        ledger: the ledger to read.
        window_s: how far back jobs are kept.
        slack_s: re-read jobs updated this long before the newest one seen, because
            writers on other machines stamp events with their own clocks.
    """

    def __init__(self, ledger: Ledger, window_s: float, *, slack_s: float = 10.0) -> None:
        self.ledger = ledger
        self.window_s = window_s
        self.slack_s = slack_s
        self._records: dict[str, JobRecord] = {}
        self._phases: dict[str, list[tuple[float, str]]] = {}
        self._newest: float | None = None

    def refresh(self, now: float) -> list[JobRecord]:
        """Read what changed since the last call; return the jobs updated in the window."""
        since = now - self.window_s
        known_until = since if self._newest is None else max(since, self._newest - self.slack_s)
        limit = 256
        while True:
            records = self.ledger.jobs(limit=limit)
            if len(records) < limit or records[-1].updated_at < known_until:
                break
            limit *= 4
        for record in records:
            if record.updated_at >= since and self._records.get(record.job_id) != record:
                self._records[record.job_id] = record
                self._phases[record.job_id] = phases(record)
        if records:
            newest = records[0].updated_at
            self._newest = newest if self._newest is None else max(self._newest, newest)
        for job_id in [j for j, r in self._records.items() if r.updated_at < since]:
            del self._records[job_id], self._phases[job_id]
        return list(self._records.values())

    def transitions(self) -> Transitions:
        """The state changes of the jobs kept, ready to sample (see :meth:`refresh`)."""
        return Transitions.of(self._phases.values())


class DashboardData:
    """Builds the dashboard's JSON documents from a ledger and a queue.

    One instance serves every request; its methods are thread-safe. The overview is
    computed at most once per ``min_interval_s`` however many pages poll it (and, on a
    large ledger, at most a fifth of the time: an overview that took 0.3 s is reused for
    1.5 s), queue counts
    at most once per ``queue_every_s`` and dead letters once per ``dead_letters_every_s``
    (peeking an SQS dead-letter queue receives its messages, so it is done sparingly).

    Args:
        ledger: the job ledger (read only).
        open_queue: opens the queue; called again after a failure, so the page recovers
            once the queue is reachable.
        queue_url: the URL shown on the page.
        window_s: how much history the chart covers at most.
        clock: epoch seconds; tests pass a fixed one.
    """

    def __init__(
        self,
        ledger: Ledger,
        open_queue: Callable[[], Queue],
        *,
        queue_url: str = "",
        window_s: float = DEFAULT_WINDOW_S,
        min_interval_s: float = 1.0,
        queue_every_s: float = 2.0,
        dead_letters_every_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.queue_url = queue_url
        self.window_s = window_s
        self.min_interval_s = min_interval_s
        self.queue_every_s = queue_every_s
        self.dead_letters_every_s = dead_letters_every_s
        self._open_queue = open_queue
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: Queue | None = None
        self._recent = RecentJobs(ledger, window_s)
        self._seen_events = -1
        self._recent_records: list[JobRecord] = []
        self._transitions = Transitions.of([])
        self._overview: dict[str, Any] | None = None
        self._overview_at = -float("inf")
        self._reuse_s = min_interval_s
        self._stats: QueueStats | None = None
        self._stats_error: str | None = None
        self._stats_at = -float("inf")
        self._dead: list[DeadLetter] = []
        self._dead_error: str | None = None
        self._dead_at = -float("inf")

    # --- documents -----------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Everything the main page shows: counts, queue, rates, chart, failures, DLQ.

        Raises:
            StorageError: the ledger cannot be read.
        """
        with self._lock:
            now = self._clock()
            started = time.monotonic()
            if self._overview is not None and now - self._overview_at < self._reuse_s:
                return self._overview
            summary = self.ledger.summary(now, failures=LIST_LIMIT)
            if summary.events != self._seen_events:
                # Only when the ledger changed: the records cost a JSON parse each.
                self._recent_records = self._recent.refresh(now)
                self._transitions = self._recent.transitions()
                self._seen_events = summary.events
            timeline = self._timeline(summary, now)
            stats, stats_error = self._queue_stats(now)
            dead, dead_error = self._dead_letters(now)
            self._overview = {
                "generated_at": now,
                "queue_url": self.queue_url,
                "storage": str(self.ledger.storage.root),
                "summary": summary.to_dict(),
                "queue": _stats_dict(stats, stats_error),
                "dead_letters": {
                    "error": dead_error,
                    "messages": [_dead_letter_dict(d) for d in dead],
                },
                "timeline": timeline.to_dict(),
            }
            self._overview_at = now
            self._reuse_s = max(self.min_interval_s, 5 * (time.monotonic() - started))
            return self._overview

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's record as a dict, or None if the ledger has no such job.

        Raises:
            BadInput: the job id is malformed.
        """
        record = self.ledger.get(check_job_id(job_id))
        return None if record is None else record.to_dict()

    def jobs(self, state: JobState | None, limit: int) -> list[dict[str, Any]]:
        """The most recently updated jobs (in ``state`` if given), newest first."""
        return [record.to_dict() for record in self.ledger.jobs(state, limit=limit)]

    def close(self) -> None:
        """Close the queue. Idempotent."""
        with self._lock:
            if self._queue is not None:
                self._queue.close()
                self._queue = None

    # --- parts ---------------------------------------------------------------------------

    def _timeline(self, summary: LedgerSummary, now: float) -> Timeline:
        recent = self._recent_records
        totals = {state.value: n for state, n in summary.counts.items()}
        baseline = baseline_counts(totals, recent)
        if any(baseline.values()) or not recent:
            start = now - self.window_s  # older jobs exist: show the whole window
        else:  # every job is recent: start with the first submit
            start = min(r.submitted_at or r.updated_at for r in recent)
        return self._transitions.sample(baseline, start=max(start, now - self.window_s), now=now)

    def _queue_stats(self, now: float) -> tuple[QueueStats | None, str | None]:
        if now - self._stats_at >= self.queue_every_s:
            self._stats_at = now
            self._stats, self._stats_error = self._ask_queue(lambda q: q.stats())
        return self._stats, self._stats_error

    def _dead_letters(self, now: float) -> tuple[list[DeadLetter], str | None]:
        if now - self._dead_at >= self.dead_letters_every_s:
            self._dead_at = now
            found, self._dead_error = self._ask_queue(lambda q: q.dead_letters(LIST_LIMIT))
            self._dead = found or []
        return self._dead, self._dead_error

    def _ask_queue(self, ask: Callable[[Queue], T]) -> tuple[T | None, str | None]:
        """Ask the queue something; on failure return why, and reopen it next time."""
        try:
            if self._queue is None:
                self._queue = self._open_queue()
            return ask(self._queue), None
        except ConveyorError as exc:
            log.warning("queue unavailable: %s", exc.message)
            if self._queue is not None:
                self._queue.close()
                self._queue = None
            return None, exc.message


def _stats_dict(stats: QueueStats | None, error: str | None) -> dict[str, Any]:
    if stats is None:
        return {"error": error or "queue unavailable"}
    return {
        "visible": stats.visible,
        "in_flight": stats.in_flight,
        "delayed": stats.delayed,
        "dead_lettered": stats.dead_lettered,
        "pending": stats.pending,
        "error": None,
    }


def _dead_letter_dict(dead: DeadLetter) -> dict[str, Any]:
    task = job_id = None
    try:
        body = json.loads(dead.body)
    except ValueError:
        body = None
    if isinstance(body, dict):
        job_id = _valid_job_id(body.get("job_id"))
        task = body.get("task") if isinstance(body.get("task"), str) else None
    return {
        "message_id": dead.message_id,
        "job_id": job_id,
        "task": task,
        "receive_count": dead.receive_count,
        "reason": dead.reason,
    }


def _valid_job_id(value: object) -> str | None:
    """``value`` if it is a usable job id (a dead letter may be any malformed body)."""
    try:
        return check_job_id(value)
    except ConveyorError:
        return None
