"""What the queue contract passes around: messages going out, received and
dead-lettered, counts and batch outcomes, and the one way a stored body becomes text."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Listings of dead letters cut each body after this many bytes: no valid envelope is
#: larger (the decoder's limit is 1 MiB), so a cut body is a bad message either way.
MAX_LISTED_BODY_BYTES = 1024 * 1024 + 1


@dataclass(frozen=True)
class Outgoing:
    """A message to send.

    Attributes:
        body: the JSON text of the message.
        delay_s: seconds before the message first becomes visible (0 to 900).
        dedup_id: FIFO queues: messages with the same id within 5 minutes are sent once.
        group_id: FIFO queues: messages of one group are delivered in order.
    """

    body: str
    delay_s: int = 0
    dedup_id: str | None = None
    group_id: str | None = None


@dataclass(frozen=True)
class Received:
    """A received message and the lease that lets its receiver ack, extend or release it.

    Every receive of a message gives a new lease; an older lease no longer works.
    """

    message_id: str
    body: str
    lease: str
    receive_count: int
    sent_at: float


@dataclass(frozen=True)
class DeadLetter:
    """A message in the dead-letter queue.

    Attributes:
        body: the message's text, as :func:`message_text` makes any stored body readable
            (a listing may cut a body over :data:`MAX_LISTED_BODY_BYTES`).
        dead_at: when it was dead-lettered (epoch seconds), where the backend keeps it.
        cursor: its place in a newest-first listing: give it as ``before`` to
            :meth:`Queue.dead_letter_page` for the next page. None where the backend
            cannot page (SQS lists dead letters by receiving them, in no set order).
    """

    message_id: str
    body: str
    receive_count: int
    reason: str | None = None
    dead_at: float | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class Removed:
    """What a purge or a redrive took out of a queue.

    Attributes:
        count: how many messages (-1 where the backend cannot tell).
        job_ids: the job ids read from their bodies (bodies without one are left out), or
            None where the backend cannot tell which messages went (SQS's PurgeQueue).
    """

    count: int
    job_ids: list[str] | None = None


@dataclass(frozen=True)
class QueueStats:
    """Approximate message counts (SQS's counts are approximate; SQLite's are exact)."""

    visible: int
    in_flight: int
    delayed: int
    dead_lettered: int

    @property
    def pending(self) -> int:
        """Messages that are not yet done: visible, in flight or delayed."""
        return self.visible + self.in_flight + self.delayed

    def counts(self) -> dict[str, int]:
        """The four counts by name (``visible``, ``in_flight``, ``delayed``,
        ``dead_lettered``), as conveyor prints and serves them."""
        return {
            "visible": self.visible,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "dead_lettered": self.dead_lettered,
        }


@dataclass(frozen=True)
class BatchResult:
    """Per-entry outcome of a batch call: leases (or ids) that worked, and those that did not."""

    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def message_text(raw: object) -> str:
    """A stored message body as text, whatever was stored: the one decoding path for every
    body read from a queue (receive, dead-letter listings, purge, redrive).

    UTF-8 bytes decode as usual; bytes that are not UTF-8 become lone surrogates
    (``surrogateescape``: the text still carries the original bytes, and
    :meth:`conveyor.jobs.Job.from_json` rejects it as not UTF-8); None becomes ``""``;
    numbers their decimal form. Never raises.
    """
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "surrogateescape")
    if raw is None:
        return ""
    return str(raw)


def display_text(raw: object) -> str:
    """Like :func:`message_text`, for what is only shown (a reason, a message id): bytes
    that are not UTF-8 become U+FFFD, so the text can be printed anywhere. Never raises."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "replace")
    text = message_text(raw)
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text
