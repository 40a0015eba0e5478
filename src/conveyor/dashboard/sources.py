"""Where the dashboard reads from: the ledger (opened when there is one, reopened after a
failed read) and the queue (asked sparingly, its answers kept between polls).

Read-only: nothing here writes to the ledger or changes a message on the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

from conveyor.errors import BadInput, ConveyorError, QueueNotFound
from conveyor.ledger import Ledger, LedgerNotFound, redact_url
from conveyor.queues.base import Queue
from conveyor.queues.messages import DeadLetter, QueueStats

log = logging.getLogger("conveyor.dashboard")

T = TypeVar("T")

#: The counts of a queue that does not exist yet.
NO_MESSAGES = QueueStats(visible=0, in_flight=0, delayed=0, dead_lettered=0)


class LedgerUnreadable(ConveyorError):
    """The ledger cannot be read (the dashboard answers 503, and retries next time)."""

    exit_code = 75


def one_line(exc: BaseException) -> str:
    """An unexpected error as one line: its type and the first line of its text."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class LedgerSource:
    """The ledger to read: one given, or one opened by a function, called again until
    there is one (:class:`LedgerNotFound`: nothing submitted yet) and after a failed read.

    Thread-safe. ``url`` is the URL shown on the page (any password hidden).
    """

    def __init__(self, ledger: Ledger | Callable[[], Ledger], url: str = "") -> None:
        self._open: Callable[[], Ledger] | None
        if isinstance(ledger, Ledger):
            self._ledger: Ledger | None = ledger
            self._open = None
            url = url or ledger.url
        else:
            self._ledger, self._open = None, ledger
        self.url = redact_url(url) if url else ""
        self._lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[Ledger | None]:
        """The ledger to read (None: there is none yet), turning any failure to read it
        into one :class:`LedgerUnreadable` line; a ledger this opened is reopened next time.

        ``BadInput`` (a malformed id or cursor, an ambiguous prefix) passes through: it is
        the request's fault, not the ledger's.
        """
        try:
            yield self._current()
        except BadInput:
            raise
        except ConveyorError as exc:
            self._forget()
            raise LedgerUnreadable(f"cannot read the ledger: {exc.message}") from exc
        except Exception as exc:  # a driver's own error: still one line, never a 500
            log.warning("cannot read the ledger", exc_info=True)
            self._forget()
            raise LedgerUnreadable(f"cannot read the ledger: {one_line(exc)}") from exc

    def close(self) -> None:
        """Close the ledger if this opened it. Idempotent."""
        with self._lock:
            if self._open is not None and self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def _current(self) -> Ledger | None:
        with self._lock:
            if self._ledger is None and self._open is not None:
                try:
                    self._ledger = self._open()
                except LedgerNotFound:
                    return None
                self.url = self.url or self._ledger.url
            return self._ledger

    def _forget(self) -> None:
        with self._lock:
            if self._open is not None and self._ledger is not None:
                ledger, self._ledger = self._ledger, None
                with suppress(Exception):  # already broken; the next read opens a fresh one
                    ledger.close()


class QueueSource:
    """The queue, opened on first use and reopened after a failure, so the page recovers
    once the queue is reachable. Its counts are asked at most once per ``stats_every_s``
    and its dead letters once per ``dead_letters_every_s`` (peeking an SQS dead-letter
    queue receives its messages, so it is done sparingly).

    Not thread-safe: the caller holds its own lock around every call.
    """

    def __init__(
        self,
        open_queue: Callable[[], Queue],
        *,
        stats_every_s: float,
        dead_letters_every_s: float,
        dead_letters_shown: int,
    ) -> None:
        self._open = open_queue
        self._queue: Queue | None = None
        self.stats_every_s = stats_every_s
        self.dead_letters_every_s = dead_letters_every_s
        self._shown = dead_letters_shown
        self._stats: QueueStats | None = None
        self._stats_error: str | None = None
        self._stats_at = -float("inf")
        self._dead: list[DeadLetter] = []
        self._dead_error: str | None = None
        self._dead_at = -float("inf")

    def stats(self, now: float) -> tuple[QueueStats | None, str | None]:
        """The queue's counts, or None and why they cannot be read."""
        if now - self._stats_at >= self.stats_every_s:
            self._stats_at = now
            self._stats, self._stats_error = self._ask(lambda q: q.stats(), NO_MESSAGES)
        return self._stats, self._stats_error

    def dead_letters(self, now: float) -> tuple[list[DeadLetter], str | None]:
        """The newest dead letters (as many as the page shows), and why, if they cannot
        be read."""
        if now - self._dead_at >= self.dead_letters_every_s:
            self._dead_at = now
            nothing: list[DeadLetter] = []
            found, self._dead_error = self._ask(lambda q: q.dead_letter_page(self._shown), nothing)
            self._dead = found or []
        return self._dead, self._dead_error

    def dead_letter_page(self, limit: int, before: str | None) -> list[DeadLetter]:
        """A page of dead letters, newest first, read now (none if the queue does not
        exist yet).

        Raises:
            ConveyorError: the queue cannot be read, or cannot page.
        """
        try:
            if self._queue is None:
                self._queue = self._open()
            return self._queue.dead_letter_page(limit, before)
        except QueueNotFound:
            return []

    def close(self) -> None:
        """Close the queue. Idempotent."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def _ask(self, ask: Callable[[Queue], T], missing: T) -> tuple[T | None, str | None]:
        """Ask the queue something; on failure return why, and reopen it next time.

        A queue that does not exist yet (nothing submitted) answers ``missing``.
        """
        try:
            if self._queue is None:
                self._queue = self._open()
            return ask(self._queue), None
        except QueueNotFound:
            return missing, None
        except Exception as exc:  # the page shows why, and the ledger's part still works
            message = exc.message if isinstance(exc, ConveyorError) else one_line(exc)
            log.warning("queue unavailable: %s", message)
            if self._queue is not None:
                with suppress(Exception):
                    self._queue.close()
                self._queue = None
            return None, message
