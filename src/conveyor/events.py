"""The single place where job outcomes are reported: logs today, metrics tomorrow."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class Action(enum.StrEnum):
    """What happened to a job in the worker."""

    RECEIVED = "received"  #: the message was received (its lease taken), before any check
    STARTED = "started"  #: the task started (ledger: running)
    SUCCEEDED = "succeeded"  #: output published, ledger succeeded, message acked
    SKIPPED = "skipped"  #: redelivered but already succeeded: acked without running
    RETRYING = "retrying"  #: transient failure: released with a backoff delay
    FAILED = "failed"  #: permanent failure or retries exhausted: dead-lettered
    LEASE_LOST = "lease_lost"  #: the lease expired or was taken: not published, not acked
    RELEASED = "released"  #: given back on shutdown (visibility 0) for another worker
    LEASE_EXTENDED = "lease_extended"  #: the heartbeat extended the message's lease
    #: the job was cancelled (``Client.cancel``): acked without running, or not published
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class WorkerEvent:
    """What a worker did with one message (received, started, a lease extended, acked,
    retried, dead-lettered...), reported to its observers (logs, metrics). Not to be
    confused with :class:`conveyor.ledger.LedgerEvent`, a job's state change written to
    the ledger: one worker event may write none, one or several of those.

    Attributes:
        action: what happened.
        job_id: the job's id, or None for a message too malformed to name one.
        task: the task name, when known.
        attempt: the message's receive count (1 on the first delivery).
        duration_s: seconds the task ran, for finished attempts.
        reason: the error message, for failures and retries.
        worker: the worker's name.
        delay_s: for retries, the seconds before the job is visible again.
        submitted_at: when the job was submitted (epoch seconds), once decoded.
        result: for ``succeeded``, the dict the task returned (``rows`` for the CSV task).
    """

    action: Action
    job_id: str | None
    task: str | None
    attempt: int
    worker: str
    duration_s: float | None = None
    reason: str | None = None
    delay_s: int | None = None
    submitted_at: float | None = None
    result: Mapping[str, object] | None = None


class WorkerObserver(Protocol):
    """Receives every job event of a worker (logging, metrics). Must not raise."""

    def worker_event(self, event: WorkerEvent) -> None:
        """Handle one event; called on the worker's main thread."""


class LogObserver:
    """Logs every job event as a structured line on the ``conveyor.worker`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("conveyor.worker")

    def worker_event(self, event: WorkerEvent) -> None:
        """Log the event: warnings for retries and lost leases, errors for failures."""
        level = {
            Action.FAILED: logging.ERROR,
            Action.RETRYING: logging.WARNING,
            Action.LEASE_LOST: logging.WARNING,
            Action.RELEASED: logging.WARNING,
            # Every message and every heartbeat: details for --log-level debug.
            Action.RECEIVED: logging.DEBUG,
            Action.LEASE_EXTENDED: logging.DEBUG,
        }.get(event.action, logging.INFO)
        if not self._logger.isEnabledFor(level):
            return  # this runs several times per job: skip building a record nobody logs
        text = f"job {event.job_id or '?'} {event.action}"
        if event.reason:
            text = f"{text}: {event.reason}"
        if event.delay_s is not None:
            text = f"{text} (again in {event.delay_s} s)"
        self._logger.log(
            level,
            text,
            extra={
                "job_id": event.job_id,
                "task": event.task,
                "action": str(event.action),
                "attempt": event.attempt,
                "duration_s": None if event.duration_s is None else round(event.duration_s, 4),
                "worker": event.worker,
                "reason": event.reason,
            },
        )
