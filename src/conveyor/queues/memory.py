"""MemoryQueue: an in-process queue with SQS semantics, the fake for unit tests."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from conveyor.errors import BadInput, LeaseLost
from conveyor.queues.base import Queue, billed_requests, check_queue_config
from conveyor.queues.messages import (
    BatchResult,
    DeadLetter,
    Outgoing,
    QueueStats,
    Received,
    Removed,
)
from conveyor.settings import Settings

#: Same limit as the SQLite queue, so a test passing here passes there.
DEFAULT_MAX_MESSAGE_BYTES = 262_144

#: Longest a long-poll sleeps between checks: an injected clock can move without telling us.
_RECHECK_S = 0.05


class ManualClock:
    """A clock that moves only when told: inject it to expire leases without sleeping.

    ``clock = ManualClock(); queue = MemoryQueue(clock=clock); clock.advance(31)``.
    """

    def __init__(self, start_s: float = 1_000.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now_s += seconds


@dataclass
class _Message:
    message_id: str
    body: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    lease: str | None = None


class MemoryQueue(Queue):
    """A thread-safe queue held in this process, with the same semantics as SQLite and SQS.

    Visibility and delays follow ``clock`` (default :func:`time.monotonic`), so a test can
    inject a :class:`ManualClock` and expire a lease without sleeping; a long poll's
    ``wait_s`` is real time. There is no registry of named queues: each
    :meth:`from_url` call returns a fresh, empty queue; tests share an instance directly.
    """

    tracks_reconciliation = True

    def __init__(
        self,
        name: str = "memory",
        *,
        visibility_timeout_s: int = 30,
        max_receive_count: int = 5,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_queue_config(visibility_timeout_s, max_receive_count)
        self.url = f"memory://{name}"
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receive_count = max_receive_count
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        # Insertion-ordered, so receives are roughly first-in first-out.
        self._messages: dict[str, _Message] = {}
        # Oldest first; each letter's cursor is its sequence number, which only grows.
        self._dead: list[DeadLetter] = []
        self._dead_seq = 0
        self._reconciled: set[str] = set()  # cursors of reconciled letters
        self._counts: Counter[str] = Counter()
        self._changed = threading.Condition()

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> MemoryQueue:
        """A fresh queue for ``memory://name``, configured from ``settings``."""
        name = urlsplit(url).netloc or "memory"
        return cls(
            name,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_receive_count=settings.max_receive_count,
        )

    # Sending and receiving ---------------------------------------------------------------

    def _send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        with self._changed:
            self._count("send", len(messages))
            now = self._clock()
            sent_at = time.time()
            ids = []
            for message in messages:
                message_id = secrets.token_hex(16)
                self._messages[message_id] = _Message(
                    message_id, message.body, sent_at, now + message.delay_s
                )
                ids.append(message_id)
            self._changed.notify_all()
        return ids

    def _receive(self, max_messages: int, wait_s: float, timeout_s: int) -> list[Received]:
        deadline = time.monotonic() + wait_s
        with self._changed:
            self._count("receive", 1)
            while True:
                received = self._claim(max_messages, timeout_s)
                remaining_s = deadline - time.monotonic()
                if received or remaining_s <= 0:
                    return received
                self._changed.wait(min(remaining_s, _RECHECK_S))

    def _claim(self, max_messages: int, timeout_s: int) -> list[Received]:
        """Lease up to ``max_messages`` visible messages; dead-letter those received too often."""
        now = self._clock()
        received: list[Received] = []
        for message in list(self._messages.values()):
            if len(received) == max_messages:
                break
            if message.visible_at > now:
                continue
            if message.receive_count >= self.max_receive_count:
                self._move_to_dead_letters(
                    message, f"received {message.receive_count} times (max_receive_count)"
                )
                continue
            message.receive_count += 1
            message.visible_at = now + timeout_s
            message.lease = f"{message.message_id}.{secrets.token_hex(8)}"
            received.append(
                Received(
                    message.message_id,
                    message.body,
                    message.lease,
                    message.receive_count,
                    message.sent_at,
                )
            )
        return received

    # Leases --------------------------------------------------------------------------------

    def _held(self, lease: str) -> _Message | None:
        """The message this lease currently holds, or None if the lease is stale."""
        message = self._messages.get(lease.partition(".")[0])
        if message is None or message.lease != lease:
            return None
        return message

    def _for_each_lease(
        self, kind: str, leases: Sequence[str], action: Callable[[_Message], None]
    ) -> BatchResult:
        result = BatchResult()
        with self._changed:
            self._count(kind, len(leases))
            for lease in leases:
                message = self._held(lease)
                if message is None:
                    result.failed[lease] = "stale lease: the message was received again or deleted"
                else:
                    action(message)
                    result.ok.append(lease)
            self._changed.notify_all()
        return result

    def _ack_batch(self, leases: Sequence[str]) -> BatchResult:
        def ack(message: _Message) -> None:
            del self._messages[message.message_id]

        return self._for_each_lease("ack", leases, ack)

    def _extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        def extend(message: _Message) -> None:
            message.visible_at = self._clock() + visibility_timeout_s

        return self._for_each_lease("extend", leases, extend)

    def _release_batch(self, leases: Sequence[str], delay_s: int) -> BatchResult:
        def release(message: _Message) -> None:
            message.visible_at = self._clock() + delay_s
            message.lease = None

        return self._for_each_lease("release", leases, release)

    def dead_letter(self, lease: str, reason: str) -> None:
        with self._changed:
            self._count("dead_letter", 1)
            message = self._held(lease)
            if message is None:
                raise LeaseLost("lease lost: the message was received again or deleted")
            self._move_to_dead_letters(message, reason)

    def _move_to_dead_letters(self, message: _Message, reason: str) -> None:
        del self._messages[message.message_id]
        self._dead_seq += 1
        self._dead.append(
            DeadLetter(
                message.message_id,
                message.body,
                message.receive_count,
                reason,
                dead_at=time.time(),
                cursor=str(self._dead_seq),
            )
        )

    # Inspection and maintenance --------------------------------------------------------------

    def stats(self) -> QueueStats:
        with self._changed:
            now = self._clock()
            visible = in_flight = delayed = 0
            for message in self._messages.values():
                if message.visible_at <= now:
                    visible += 1
                elif message.lease is not None:
                    in_flight += 1
                else:
                    delayed += 1
            return QueueStats(visible, in_flight, delayed, len(self._dead))

    def purge(self) -> int:
        return self.purge_jobs().count

    def purge_jobs(self) -> Removed:
        from conveyor.jobs import job_id_of

        with self._changed:
            bodies = [message.body for message in self._messages.values()]
            self._messages.clear()
        return Removed(len(bodies), [i for body in bodies if (i := job_id_of(body)) is not None])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.dead_letter_page(limit)

    def dead_letter_page(self, limit: int = 100, before: str | None = None) -> list[DeadLetter]:
        below = None if before is None else _seq(before)
        with self._changed:
            newest_first = reversed(self._dead)
            found = [d for d in newest_first if below is None or _seq(d.cursor) < below]
        return found[: max(0, limit)]

    def unreconciled_dead_letters(self, limit: int) -> list[DeadLetter]:
        with self._changed:
            return [d for d in self._dead if d.cursor not in self._reconciled][: max(0, limit)]

    def mark_reconciled(self, letters: Sequence[DeadLetter]) -> None:
        with self._changed:
            self._reconciled.update(d.cursor for d in letters if d.cursor is not None)

    def redrive(self, limit: int | None = None) -> int:
        return self.redrive_jobs(limit).count

    def redrive_jobs(self, limit: int | None = None) -> Removed:
        from conveyor.jobs import job_id_of

        with self._changed:
            moving = self._dead[:limit] if limit is not None else list(self._dead)
            del self._dead[: len(moving)]
            now = self._clock()
            for dead in moving:
                self._messages[dead.message_id] = _Message(
                    dead.message_id, dead.body, time.time(), now
                )
            self._changed.notify_all()
        job_ids = [i for dead in moving if (i := job_id_of(dead.body)) is not None]
        return Removed(len(moving), job_ids)

    def _purge_dead_letters(self, older_than_s: float | None) -> int:
        cutoff = None if older_than_s is None else time.time() - older_than_s
        with self._changed:
            kept = [
                d
                for d in self._dead
                if cutoff is not None and d.dead_at is not None and d.dead_at >= cutoff
            ]
            removed = len(self._dead) - len(kept)
            self._dead = kept
        return removed

    def request_counts(self) -> dict[str, int]:
        with self._changed:
            return dict(self._counts)

    def _count(self, kind: str, entries: int) -> None:
        """Count requests as SQS would bill them: one per batch of up to 10 entries."""
        self._counts[kind] += billed_requests(entries)


def _seq(cursor: str | None) -> int:
    """The sequence number in a dead letter's cursor.

    Raises:
        BadInput: not a cursor of this queue.
    """
    if cursor is None or not cursor.isascii() or not cursor.isdigit():
        raise BadInput(f"bad dead-letter cursor {str(cursor)[:40]!r}: use a listed one")
    return int(cursor)
