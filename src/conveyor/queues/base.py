"""The queue contract every backend implements: SQS semantics, at-least-once delivery."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from conveyor.errors import ConfigError, LeaseLost, MessageTooLarge
from conveyor.queues.messages import (
    BatchResult,
    DeadLetter,
    Outgoing,
    QueueStats,
    Received,
    Removed,
)

#: SQS's ceiling on a visibility timeout (12 hours); every backend enforces it.
MAX_VISIBILITY_TIMEOUT_S = 43_200
#: SQS's ceiling on a long-poll wait and on a batch.
MAX_WAIT_S = 20
MAX_BATCH = 10
#: SQS's ceiling on a message delay.
MAX_DELAY_S = 900


def check_visibility_timeout_s(value: int) -> int:
    """Return ``value`` if it is a valid visibility timeout (0 to 43,200 s, as SQS).

    Raises:
        ValueError: out of range.
    """
    if not 0 <= value <= MAX_VISIBILITY_TIMEOUT_S:
        raise ValueError(
            f"visibility timeout {value} s is outside 0..{MAX_VISIBILITY_TIMEOUT_S} s (SQS's cap)"
        )
    return value


def billed_requests(entries: int) -> int:
    """Requests a call on ``entries`` entries costs on SQS: one per batch of up to 10."""
    return max(1, -(-entries // MAX_BATCH))


def check_queue_config(visibility_timeout_s: int, max_receive_count: int) -> None:
    """Reject queue settings SQS would reject, naming the setting to fix.

    Raises:
        ConfigError: the visibility timeout is outside 1..43,200 s, or the receive count
            below 1.
    """
    if not 0 < visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise ConfigError(
            f"visibility timeout {visibility_timeout_s} s must be within "
            f"1..{MAX_VISIBILITY_TIMEOUT_S} s (CONVEYOR_VISIBILITY_TIMEOUT_S)"
        )
    if max_receive_count < 1:
        raise ConfigError(
            f"max receive count {max_receive_count} must be at least 1 (CONVEYOR_MAX_RECEIVE_COUNT)"
        )


def check_receive(max_messages: int, wait_s: float) -> None:
    """Reject a receive that SQS would reject: 1..10 messages, a wait of 0..20 s.

    Raises:
        ValueError: out of range.
    """
    if not 1 <= max_messages <= MAX_BATCH:
        raise ValueError(f"max_messages {max_messages} is outside 1..{MAX_BATCH}")
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise ValueError(f"wait_s {wait_s} is outside 0..{MAX_WAIT_S} s")


def check_outgoing(messages: Sequence[Outgoing], max_message_bytes: int) -> None:
    """Check every message before any is sent, so a bad batch sends nothing.

    Raises:
        MessageTooLarge: a body exceeds ``max_message_bytes`` (UTF-8 bytes).
        ValueError: a delay is outside 0..900 s.
    """
    for index, message in enumerate(messages):
        size = len(message.body.encode())
        if size > max_message_bytes:
            raise MessageTooLarge(
                f"message {index} is {size} bytes, above the queue's limit of "
                f"{max_message_bytes}: put large data on the storage and send its path"
            )
        if not 0 <= message.delay_s <= MAX_DELAY_S:
            raise ValueError(f"message {index}: delay {message.delay_s} s is outside 0..900 s")


class Queue(abc.ABC):
    """A job queue with SQS semantics.

    - A received message is invisible for the visibility timeout, then visible again unless
      acked in time.
    - Every receive increments the message's receive count; a message received more than
      ``max_receive_count`` times moves to the dead-letter queue instead of being delivered.
    - Every receive gives a new lease; an old lease can no longer ack, extend or release a
      message that was received again since.

    Methods are thread-safe: a worker's heartbeat thread may extend leases, or another
    thread send, while one thread long-polls in :meth:`receive` on the same instance.
    Transient failures raise :class:`~conveyor.errors.TransientQueueError`; a missing queue
    :class:`~conveyor.errors.QueueNotFound`; missing permissions
    :class:`~conveyor.errors.AccessDenied`.
    """

    #: The URL this queue was opened from.
    url: str
    #: Largest message body, in bytes, this queue accepts.
    max_message_bytes: int
    #: Receives after which a message goes to the dead-letter queue.
    max_receive_count: int
    #: Visibility timeout given by a receive that names none.
    visibility_timeout_s: int

    @property
    def fifo(self) -> bool:
        """True for a FIFO queue: messages of one group arrive in order, and a message sent
        again with the same ``dedup_id`` within 5 minutes is sent once (SQS FIFO)."""
        return False

    @property
    def remote(self) -> bool:
        """True where every call is a billed network request (SQS), so callers poll it
        sparingly; False for a local queue (SQLite, memory), where a call costs nothing."""
        return False

    # The contract's calls: each checks its arguments as SQS would, then calls the
    # backend's ``_`` twin (a template method), so every backend refuses the same calls.

    def send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        """Send messages, in batches of up to 10 where the backend batches.

        Blocks until every message is durably queued. Not idempotent (except FIFO dedup).

        Returns:
            The message ids, in the order given.

        Raises:
            MessageTooLarge: a body exceeds ``max_message_bytes``.
            ValueError: a delay is outside 0..900 s.
            QueueError: an entry failed after retries; entries before it may have been sent.
        """
        check_outgoing(messages, self.max_message_bytes)
        if not messages:
            return []
        return self._send_batch(messages)

    def receive(
        self, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Received]:
        """Receive up to ``max_messages`` (at most 10), long-polling up to ``wait_s`` seconds.

        Returns as soon as at least one message is available, or with an empty list when the
        wait ends. Each returned message is invisible to others for the visibility timeout
        (default: the queue's). Messages past ``max_receive_count`` are moved to the
        dead-letter queue, not returned.

        Raises:
            ValueError: 1..10 messages, a wait of 0..20 s, a timeout of 0..43,200 s.
        """
        check_receive(max_messages, wait_s)
        timeout_s = check_visibility_timeout_s(
            self.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        )
        return self._receive(max_messages, wait_s, timeout_s)

    def ack_batch(self, leases: Sequence[str]) -> BatchResult:
        """Delete the messages held by these leases. Idempotent for a lease still current.

        A stale lease (message received again since, or already deleted) is reported in
        ``failed``; it never deletes a message someone else now holds.
        """
        if not leases:
            return BatchResult()
        return self._ack_batch(leases)

    def extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        """Make these messages invisible for ``visibility_timeout_s`` more seconds from now.

        Stale or expired-and-redelivered leases are reported in ``failed``.

        Raises:
            ValueError: the timeout is outside 0..43,200 s.
        """
        check_visibility_timeout_s(visibility_timeout_s)
        if not leases:
            return BatchResult()
        return self._extend_batch(leases, visibility_timeout_s)

    def release_batch(self, leases: Sequence[str], delay_s: int = 0) -> BatchResult:
        """Give messages back: visible again after ``delay_s`` seconds (0: at once).

        Raises:
            ValueError: the delay is outside 0..43,200 s.
        """
        check_visibility_timeout_s(delay_s)
        if not leases:
            return BatchResult()
        return self._release_batch(leases, delay_s)

    # What each backend implements: called with checked arguments and at least one entry.

    @abc.abstractmethod
    def _send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        """:meth:`send_batch` of checked messages, at least one."""

    @abc.abstractmethod
    def _receive(self, max_messages: int, wait_s: float, timeout_s: int) -> list[Received]:
        """:meth:`receive` with checked arguments and the visibility timeout decided."""

    @abc.abstractmethod
    def _ack_batch(self, leases: Sequence[str]) -> BatchResult:
        """:meth:`ack_batch` of at least one lease."""

    @abc.abstractmethod
    def _extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        """:meth:`extend_batch` of at least one lease, with a checked timeout."""

    @abc.abstractmethod
    def _release_batch(self, leases: Sequence[str], delay_s: int) -> BatchResult:
        """:meth:`release_batch` of at least one lease, with a checked delay."""

    @abc.abstractmethod
    def dead_letter(self, lease: str, reason: str) -> None:
        """Move a held message to the dead-letter queue at once (a permanent failure).

        Raises:
            LeaseLost: the lease is stale.
        """

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """Count visible, in-flight, delayed and dead-lettered messages."""

    @abc.abstractmethod
    def purge(self) -> int:
        """Delete every message in the queue (not the dead-letter queue). Returns how many,
        or -1 where the backend cannot tell."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """List up to ``limit`` messages in the dead-letter queue without consuming them,
        newest first where the backend keeps an order (SQS lists in no set order)."""

    @abc.abstractmethod
    def redrive(self, limit: int | None = None) -> int:
        """Move dead-lettered messages back to the queue with a fresh receive count,
        oldest first where the backend keeps an order.

        Returns how many were moved.
        """

    # Optional parts of the contract, with what a backend that lacks them does -------------

    #: True where the dead-letter queue keeps a "reconciled" mark per message
    #: (:meth:`unreconciled_dead_letters`, :meth:`mark_reconciled`), so that reconciling
    #: it costs in proportion to what is new, not to its whole content.
    tracks_reconciliation: ClassVar[bool] = False

    def dead_letter_page(self, limit: int = 100, before: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest first, older than the one whose
        :attr:`DeadLetter.cursor` is ``before``. Does not consume them.

        Raises:
            ConfigError: ``before`` is given to a backend that cannot page (SQS).
            BadInput: ``before`` is not a cursor of this queue.
        """
        if before is not None:
            raise ConfigError(
                f"the queue {self.url} lists dead letters in no set order: it cannot page"
            )
        return self.dead_letters(limit)

    def unreconciled_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters not yet marked reconciled, oldest first.

        A backend that does not track reconciliation returns :meth:`dead_letters`.
        """
        return self.dead_letters(limit)

    def mark_reconciled(self, letters: Sequence[DeadLetter]) -> None:  # noqa: B027
        """Mark dead letters as reconciled with the ledger, so that
        :meth:`unreconciled_dead_letters` no longer returns them. Idempotent; a letter
        gone since (redriven, purged) is ignored. A no-op where nothing is tracked."""

    def purge_jobs(self) -> Removed:
        """:meth:`purge`, also saying which jobs' messages were deleted where the backend
        can tell (the caller records them in the ledger)."""
        return Removed(self.purge())

    def redrive_jobs(self, limit: int | None = None) -> Removed:
        """:meth:`redrive`, also saying which jobs' messages moved where the backend can
        tell (the caller reopens them in the ledger)."""
        return Removed(self.redrive(limit))

    def purge_dead_letters(self, older_than_s: float | None = None) -> int:
        """Delete dead letters (those dead-lettered more than ``older_than_s`` ago, or
        all); returns how many, or -1 where the backend cannot tell.

        Raises:
            ConfigError: a negative age, or the backend cannot do it (or not by age).
        """
        if older_than_s is not None and not older_than_s >= 0:
            raise ConfigError(f"bad age {older_than_s!r}: seconds >= 0")
        return self._purge_dead_letters(older_than_s)

    def _purge_dead_letters(self, older_than_s: float | None) -> int:
        """:meth:`purge_dead_letters` with a checked age; by default, refused."""
        raise ConfigError(f"the queue {self.url} cannot purge its dead letters")

    def request_counts(self) -> dict[str, int]:
        """Requests made to the queue service by this instance, by kind (for cost)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and file handles. Idempotent."""

    # Conveniences over the batch calls --------------------------------------------------

    def send(self, message: Outgoing) -> str:
        """Send one message; see :meth:`send_batch`."""
        return self.send_batch([message])[0]

    def ack(self, lease: str) -> bool:
        """Ack one message; False when the lease was stale."""
        return lease in self.ack_batch([lease]).ok

    def extend(self, lease: str, visibility_timeout_s: int) -> None:
        """Extend one lease.

        Raises:
            LeaseLost: the lease is stale.
        """
        result = self.extend_batch([lease], visibility_timeout_s)
        if lease not in result.ok:
            raise LeaseLost(f"lease lost: {result.failed.get(lease, 'stale lease')}")

    def release(self, lease: str, delay_s: int = 0) -> None:
        """Release one lease.

        Raises:
            LeaseLost: the lease is stale.
        """
        result = self.release_batch([lease], delay_s)
        if lease not in result.ok:
            raise LeaseLost(f"lease lost: {result.failed.get(lease, 'stale lease')}")

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
