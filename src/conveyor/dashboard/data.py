"""What the dashboard shows, read from the ledger and the queue, cached between polls.

Read-only: nothing here writes to the ledger or changes a message on the queue. Every
ledger read is an indexed query or a read of the chart's time window, so a refresh costs
the same on a ledger of a thousand jobs or ten million.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from conveyor.dashboard.sources import LedgerSource, QueueSource
from conveyor.dashboard.timeline import build_timeline
from conveyor.jobs import JobState, job_id_of
from conveyor.ledger import Ledger, LedgerSummary, Transition
from conveyor.queues.base import Queue
from conveyor.queues.messages import DeadLetter, QueueStats, display_text
from conveyor.storage import check_job_id

#: The chart covers at most this much history by default.
DEFAULT_WINDOW_S = 3600.0
#: How many dead letters and recent failures the page lists.
LIST_LIMIT = 50
#: Most state changes one refresh reads for the chart; a busier window is narrowed to
#: its most recent part that holds no more, so a refresh stays cheap however busy.
CHART_BUDGET = 20_000
#: How many times the window is narrowed before the chart shows only the current counts.
MAX_NARROWINGS = 6
#: Said on the page (and in the JSON) while there is no ledger yet.
NOTHING_YET = "nothing submitted yet"


class _Paged(Protocol):
    @property
    def cursor(self) -> str | None: ...


def next_cursor(page: Sequence[_Paged], limit: int) -> str | None:
    """The cursor of the page after ``page`` (at most ``limit`` items): None at its end,
    or where the source cannot page."""
    return page[-1].cursor if page and len(page) == limit else None


def chart_transitions(
    ledger: Ledger, now: float, window_s: float, budget: int = CHART_BUDGET
) -> tuple[float, list[Transition]]:
    """The changes since the chart's start, and that start: ``now - window_s``, or later
    when the window holds more than ``budget`` changes (then its most recent part that
    holds at most ``budget``, found in a few bounded reads).

    Returns:
        (start, the changes recorded since start, oldest first).
    """
    since = now - window_s
    for _ in range(MAX_NARROWINGS):
        changes = ledger.transitions(since, None, limit=budget + 1)
        if len(changes) <= budget:
            return since, changes
        # The oldest ``budget`` changes took ``covered`` seconds; assuming the same pace,
        # four fifths of that span back from now holds fewer. Halve at least, to converge.
        covered = changes[-1].at - since
        since = now - max(0.0, min(0.8 * covered, 0.5 * (now - since)))
    return now, []


def empty_summary(now: float) -> LedgerSummary:
    """The summary of a ledger with no jobs (shown before anything was submitted)."""
    return LedgerSummary(
        generated_at=now,
        counts=dict.fromkeys(JobState, 0),
        total=0,
        finished_last_minute=0,
        rate_last_minute_per_s=0.0,
        rate_overall_per_s=None,
        recent_failures=[],
        oldest_queued_age_s=None,
        queue_requests={},
    )


class DashboardData:
    """Builds the dashboard's JSON documents from a ledger and a queue.

    One instance serves every request; its methods are thread-safe. The overview is
    computed at most once per ``min_interval_s`` however many pages poll it (and at most
    a fifth of the time: an overview that took 0.3 s is reused for 1.5 s), queue counts
    at most once per ``queue_every_s`` and dead letters once per ``dead_letters_every_s``
    (peeking an SQS dead-letter queue receives its messages, so it is done sparingly).

    Args:
        ledger: the job ledger (read only), or a function opening it, called again until
            there is one (:class:`LedgerNotFound`: nothing submitted yet, so zeros are
            shown) and again after a failed read.
        open_queue: opens the queue; called again after a failure, so the page recovers
            once the queue is reachable.
        queue_url: the queue URL shown on the page.
        ledger_url: the ledger URL shown on the page (any password is hidden).
        window_s: how much history the chart covers at most.
        chart_budget: the most state changes one refresh reads for the chart.
        clock: epoch seconds; tests pass a fixed one.
    """

    def __init__(
        self,
        ledger: Ledger | Callable[[], Ledger],
        open_queue: Callable[[], Queue],
        *,
        queue_url: str = "",
        ledger_url: str = "",
        window_s: float = DEFAULT_WINDOW_S,
        chart_budget: int = CHART_BUDGET,
        min_interval_s: float = 1.0,
        queue_every_s: float = 2.0,
        dead_letters_every_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_url = queue_url
        self.window_s = window_s
        self.chart_budget = chart_budget
        self.min_interval_s = min_interval_s
        self._ledger = LedgerSource(ledger, ledger_url)
        self._queue = QueueSource(
            open_queue,
            stats_every_s=queue_every_s,
            dead_letters_every_s=dead_letters_every_s,
            dead_letters_shown=LIST_LIMIT,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._overview: dict[str, Any] | None = None
        self._overview_at = -float("inf")
        self._reuse_s = min_interval_s

    @property
    def ledger_url(self) -> str:
        """The ledger URL shown on the page (any password hidden)."""
        return self._ledger.url

    # --- documents -----------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Everything the main page shows: counts, queue, rates, chart, failures, DLQ.

        Raises:
            ConveyorError: the ledger cannot be read (one line, for a 503).
        """
        with self._lock:
            now = self._clock()
            started = time.monotonic()
            if self._overview is not None and now - self._overview_at < self._reuse_s:
                return self._overview
            with self._ledger.reading() as ledger:
                changes: list[Transition] = []
                if ledger is None:
                    summary, start = empty_summary(now), now
                else:
                    summary = ledger.summary(now, failures=LIST_LIMIT)
                    start, changes = chart_transitions(
                        ledger, now, self.window_s, self.chart_budget
                    )
            counts = {state.value: n for state, n in summary.counts.items()}
            timeline = build_timeline(changes, counts, start=start, now=now)
            stats, stats_error = self._queue.stats(now)
            dead, dead_error = self._queue.dead_letters(now)
            self._overview = {
                "generated_at": now,
                "queue_url": self.queue_url,
                "ledger_url": self.ledger_url,
                "note": NOTHING_YET if ledger is None else None,
                "summary": summary.to_dict(),
                "queue": _stats_dict(stats, stats_error),
                "dead_letters": {
                    "error": dead_error,
                    "messages": [_dead_letter_dict(d) for d in dead],
                    "next": next_cursor(dead, LIST_LIMIT),
                },
                "timeline": {
                    **timeline.to_dict(),
                    "window_s": self.window_s,
                    "narrowed": ledger is not None and start > now - self.window_s,
                },
            }
            self._overview_at = now
            self._reuse_s = max(self.min_interval_s, 5 * (time.monotonic() - started))
            return self._overview

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's record (``job_id`` or a unique prefix of it) with its history of state
        changes, or None if the ledger has no such job.

        Raises:
            BadInput: the job id is malformed, or the prefix matches several jobs.
            ConveyorError: the ledger cannot be read.
        """
        check_job_id(job_id)
        with self._ledger.reading() as ledger:
            if ledger is None:
                return None
            record = ledger.get(job_id)
            if record is None:
                return None
            history = ledger.history(record.job_id)
        return {**record.to_dict(), "history": [change.to_dict() for change in history]}

    def jobs(
        self,
        state: JobState | None,
        limit: int,
        *,
        before: str | None = None,
        task: str | None = None,
    ) -> dict[str, Any]:
        """A page of jobs (in ``state``, of ``task``, if given), most recently updated
        first, and the cursor of the next page (None at the end).

        Raises:
            BadInput: the cursor is malformed.
            ConveyorError: the ledger cannot be read.
        """
        with self._ledger.reading() as ledger:
            if ledger is None:
                return {"jobs": [], "next": None}
            records = ledger.jobs(state, task=task, limit=limit, before=before)
        return {
            "jobs": [record.to_dict() for record in records],
            "next": next_cursor(records, limit),
        }

    def groups(self, limit: int, *, before: str | None = None) -> dict[str, Any]:
        """A page of job groups, newest created first, with their counts, throughput and
        time left, and the cursor of the next page (None at the end). One indexed read:
        the cost does not grow with the ledger's history.

        Raises:
            BadInput: the cursor is malformed.
            ConveyorError: the ledger cannot be read.
        """
        with self._ledger.reading() as ledger:
            if ledger is None:
                return {"groups": [], "next": None}
            records = ledger.groups(limit=limit, before=before)
        now = self._clock()
        groups = [record.to_dict(now) for record in records]
        return {"groups": groups, "next": next_cursor(records, limit)}

    def group(self, group_id: str) -> dict[str, Any] | None:
        """One group (``group_id`` or a unique prefix of it), or None if there is none.

        Raises:
            BadInput: the id is malformed, or the prefix matches several groups.
            ConveyorError: the ledger cannot be read.
        """
        with self._ledger.reading() as ledger:
            if ledger is None:
                return None
            record = ledger.group(group_id)
        return None if record is None else record.to_dict(self._clock())

    def dead_letters(self, limit: int, before: str | None = None) -> dict[str, Any]:
        """A page of dead letters, newest first, and the cursor of the next page (None at
        the end, or where the queue cannot page: SQS lists them in no set order).

        Raises:
            ConveyorError: the queue cannot be read, or cannot page.
        """
        with self._lock:
            letters = self._queue.dead_letter_page(limit, before)
        return {
            "messages": [_dead_letter_dict(d) for d in letters],
            "next": next_cursor(letters, limit),
        }

    def close(self) -> None:
        """Close the queue, and the ledger if this opened it. Idempotent."""
        with self._lock:
            self._queue.close()
        self._ledger.close()


def _stats_dict(stats: QueueStats | None, error: str | None) -> dict[str, Any]:
    if stats is None:
        return {"error": error or "queue unavailable"}
    return {**stats.counts(), "pending": stats.pending, "error": None}


def _dead_letter_dict(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter for the page. Its body may be anything a queue can hold (bytes,
    bad JSON, the wrong types): what cannot be read is shown as unknown, never raised."""
    return {
        "message_id": display_text(dead.message_id),
        "job_id": job_id_of(dead.body),
        "task": _task_of(dead.body),
        "receive_count": dead.receive_count,
        "reason": None if dead.reason is None else display_text(dead.reason),
    }


def _task_of(body: str) -> str | None:
    """The task named in a message body, if it is a JSON object with a string ``task``
    (a body read from a queue may also be bytes, or None)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError, RecursionError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    if not isinstance(task, str) or len(task) > 200:
        return None
    return display_text(task)  # a lone surrogate would not encode as UTF-8 JSON
