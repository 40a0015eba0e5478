"""SQSQueue: the queue contract on Amazon SQS, or any SQS-compatible server, through boto3."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError, LeaseCapReached, LeaseLost, QueueError
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, Queue
from conveyor.queues.messages import BatchResult, DeadLetter, Outgoing, QueueStats, Received
from conveyor.queues.sqs_batch import (
    change_visibility,
    delete_messages,
    send_entry,
    send_messages,
    settle,
)
from conveyor.queues.sqs_client import (
    Endpoint,
    RegionalClients,
    RequestCounter,
    call,
    get_attributes,
    make_client,
    message_counts,
)
from conveyor.queues.sqs_dlq import (
    LEGACY_MAX_MESSAGE_BYTES,
    SYSTEM_ATTRIBUTES,
    DeadLetterQueue,
    body_limit_bytes,
)
from conveyor.queues.sqs_leases import CAP_REASON, HeldMessage, LeaseBook, cap_left_s
from conveyor.queues.sqs_url import parse_queue_url
from conveyor.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef


log = logging.getLogger(__name__)

#: Visibility that holds a message while it is copied to the dead-letter queue.
DEAD_LETTER_HOLD_S = 60


class SQSQueue(Queue):
    """A queue on Amazon SQS. The queue's attributes, read once when it is opened, give
    ``size_limit_bytes`` (MaximumMessageSize; ``max_message_bytes``, the largest body it
    takes, leaves room below it for a dead letter's attributes), the dead-letter queue
    and ``max_receive_count`` (RedrivePolicy).

    The URL is opaque (:mod:`conveyor.queues.sqs_url`): any http(s) URL whose last path
    segment is the queue's name, sent verbatim as ``QueueUrl``.

    Leases are receipt handles. SQS may accept a superseded receipt handle, so this
    instance keeps a book of the leases it handed out: one whose message it received
    again, acked, released or dead-lettered since fails without a request. Across
    processes only SQS decides; the worker's idempotent publication covers that case.
    Thread-safe: the boto3 client is, and the book's lock is never held across a request.
    """

    def __init__(
        self,
        url: str,
        settings: Settings,
        *,
        client: SQSClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open the queue at ``url`` and read its attributes (one GetQueueAttributes).

        Args:
            client: a ready boto3 client (tests); default: one built for the URL.
            clock: monotonic seconds for the lease book (tests inject a manual clock).

        Raises:
            ConfigError: a bad URL or visibility timeout.
            QueueNotFound, AccessDenied, TransientQueueError: from SQS.
        """
        parsed = parse_queue_url(url)
        if not 0 < settings.visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
            raise ConfigError(
                f"visibility timeout {settings.visibility_timeout_s} s must be within "
                f"1..{MAX_VISIBILITY_TIMEOUT_S} s (SQS's cap; CONVEYOR_VISIBILITY_TIMEOUT_S)"
            )
        self.url = url
        self.name = parsed.name
        self.visibility_timeout_s = settings.visibility_timeout_s
        self._counter = RequestCounter()
        self._endpoint = Endpoint.for_queue(parsed, settings)
        if client is None:
            client = make_client(self._endpoint, self._counter)
        else:
            self._counter.attach(client)
        self._client = client
        self._clients = RegionalClients(client, self._endpoint, self._counter)
        self._book = LeaseBook(clock)

        attributes = get_attributes(
            client, url, ["MaximumMessageSize", "RedrivePolicy", "FifoQueue"]
        )
        self.size_limit_bytes = int(attributes.get("MaximumMessageSize", LEGACY_MAX_MESSAGE_BYTES))
        self.max_message_bytes = body_limit_bytes(self.size_limit_bytes)
        self._fifo = attributes.get("FifoQueue") == "true" or parsed.fifo
        self.max_receive_count = settings.max_receive_count
        self.dead_letter_queue: DeadLetterQueue | None = None
        if "RedrivePolicy" in attributes:
            try:
                policy = json.loads(attributes["RedrivePolicy"])
                arn = str(policy["deadLetterTargetArn"])
                self.max_receive_count = int(policy["maxReceiveCount"])
            except (ValueError, KeyError, TypeError) as exc:
                raise QueueError(f"unreadable RedrivePolicy on {url}: {exc!r}") from exc
            self.dead_letter_queue = DeadLetterQueue(
                client, arn, url, self.fifo, self._clients.for_region
            )
        else:
            log.warning(
                "SQS queue %s has no dead-letter queue: failed jobs cannot be dead-lettered "
                "(create queues with `conveyor queue create`)",
                url,
            )

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> SQSQueue:
        """Open the SQS queue at ``url`` (see :func:`conveyor.queues.open_queue`)."""
        return cls(url, settings)

    @property
    def fifo(self) -> bool:
        """True for a FIFO queue (its FifoQueue attribute, or a name ending in .fifo)."""
        return self._fifo

    @property
    def remote(self) -> bool:
        """True: every call is a billed request to SQS."""
        return True

    # Sending and receiving ---------------------------------------------------------------

    def _send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        """See :meth:`Queue.send_batch`: SendMessageBatch, in batches of up to 10 whose
        bodies fit the size limit together.

        Raises:
            ConfigError: a delay on a FIFO queue (SQS has no per-message delay there).
        """
        entries = [
            send_entry(index, message, fifo=self.fifo, url=self.url)
            for index, message in enumerate(messages)
        ]
        ids = [""] * len(entries)
        for ok, failed in send_messages(self._client, self.url, entries, self.size_limit_bytes):
            if failed:
                first = min(failed, key=int)
                raise QueueError(f"sending message {first} to {self.url} failed: {failed[first]}")
            for entry_id, success in ok.items():
                ids[int(entry_id)] = str(success["MessageId"])
        return ids

    def _receive(self, max_messages: int, wait_s: float, timeout_s: int) -> list[Received]:
        """See :meth:`Queue.receive`: one ReceiveMessage, long-polling ``wait_s`` rounded
        up to whole seconds. SQS itself moves messages past ``max_receive_count`` to the
        dead-letter queue."""
        started = self._book.clock()
        response = call(
            "ReceiveMessage",
            self.url,
            lambda: self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=math.ceil(wait_s),
                VisibilityTimeout=timeout_s,
                MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
            ),
        )
        expires_at = self._book.clock() + timeout_s
        self._book.prune(started)
        return [
            self._received(message, started, expires_at) for message in response.get("Messages", [])
        ]

    def _received(self, message: MessageTypeDef, received_at: float, expires_at: float) -> Received:
        attributes = message.get("Attributes", {})
        body = message.get("Body", "")
        count = int(attributes.get("ApproximateReceiveCount", "1"))
        held = HeldMessage(
            message["MessageId"],
            body,
            count,
            attributes.get("MessageGroupId"),
            received_at,
            expires_at,
        )
        self._book.add(message["ReceiptHandle"], held)
        sent_at = int(attributes.get("SentTimestamp", "0")) / 1000
        return Received(message["MessageId"], body, message["ReceiptHandle"], count, sent_at)

    # Leases --------------------------------------------------------------------------------

    def _ack_batch(self, leases: Sequence[str]) -> BatchResult:
        """See :meth:`Queue.ack_batch`: DeleteMessageBatch, 10 at a time."""
        result = BatchResult()
        live = self._book.screen(leases, result)
        for ok, failed in delete_messages(self._client, self.url, live):
            for lease in settle(live, ok, failed, result):
                self._book.retire(lease, "stale lease: the message was already deleted")
        return result

    def _extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        """See :meth:`Queue.extend_batch`: ChangeMessageVisibilityBatch. Fails, without a
        request, a lease this instance knows has expired, or whose extension would keep
        the message invisible past SQS's 12-hour cap since it was received (AWS rejects
        both; moto accepts them)."""
        result = BatchResult()
        live = self._book.extendable(leases, visibility_timeout_s, result)
        timeouts_s = [visibility_timeout_s] * len(live)
        for lease in self._change_visibility(live, timeouts_s, result):
            self._book.extended(lease, visibility_timeout_s)
        return result

    def extend(self, lease: str, visibility_timeout_s: int) -> None:
        """Extend one lease.

        Raises:
            LeaseCapReached: the extension would pass SQS's 12-hour cap since receive.
            LeaseLost: the lease is stale or expired.
        """
        result = self.extend_batch([lease], visibility_timeout_s)
        if lease not in result.ok:
            reason = result.failed.get(lease, "stale lease")
            if CAP_REASON in reason:
                raise LeaseCapReached(f"lease lost: {reason}")
            raise LeaseLost(f"lease lost: {reason}")

    def _release_batch(self, leases: Sequence[str], delay_s: int) -> BatchResult:
        """See :meth:`Queue.release_batch`: a visibility change, so a delay works on FIFO
        queues too; one that would pass the 12-hour cap is shortened to end there."""
        result = BatchResult()
        live = self._book.screen(leases, result)
        for lease in self._change_visibility(
            live, self._book.release_delays(live, delay_s), result
        ):
            self._book.retire(lease, "stale lease: the message was released")
        return result

    def _change_visibility(
        self, leases: list[str], timeouts_s: list[int], result: BatchResult
    ) -> list[str]:
        """ChangeMessageVisibilityBatch, 10 at a time; returns the leases changed."""
        changed = []
        for ok, failed in change_visibility(self._client, self.url, leases, timeouts_s):
            changed += settle(leases, ok, failed, result)
        return changed

    def dead_letter(self, lease: str, reason: str) -> None:
        """Hold the message, copy it to the dead-letter queue with ``reason`` as a message
        attribute, then delete the original: a failure in between leaves a duplicate in
        the dead-letter queue, never a lost message.

        Raises:
            LeaseLost: the lease is stale or expired, or not from this instance.
            ConfigError: the queue has no dead-letter queue.
        """
        why = self._book.stale_reason(lease)
        booked = self._book.get(lease)
        if why is not None:
            raise LeaseLost(f"lease lost: {why}")
        if booked is None:
            raise LeaseLost("lease lost: unknown here (dead-letter through the queue that got it)")
        if self.dead_letter_queue is None:
            raise ConfigError(f"SQS queue {self.url} has no dead-letter queue (RedrivePolicy)")
        hold_s = min(DEAD_LETTER_HOLD_S, cap_left_s(booked, self._book.clock()))
        if hold_s > 0:  # a 0 s "hold" would hand the message to another worker
            self.extend(lease, hold_s)
        self.dead_letter_queue.put(
            booked.body,
            reason,
            booked.receive_count,
            message_id=booked.message_id,
            group_id=booked.group_id,
        )
        result = self.ack_batch([lease])
        if lease not in result.ok:
            raise LeaseLost(
                f"lease lost while dead-lettering ({result.failed.get(lease)}): the message "
                "is in the dead-letter queue and may also be delivered again"
            )

    # Inspection and maintenance ------------------------------------------------------------

    def stats(self) -> QueueStats:
        """Approximate counts: one GetQueueAttributes, one more for the dead-letter queue."""
        visible, in_flight, delayed = message_counts(self._client, self.url)
        dead = self.dead_letter_queue.count() if self.dead_letter_queue is not None else 0
        return QueueStats(visible, in_flight, delayed, dead)

    def purge(self) -> int:
        """PurgeQueue: SQS allows one per 60 s, takes up to 60 s, and does not say how many
        messages it deleted, hence -1."""
        call("PurgeQueue", self.url, lambda: self._client.purge_queue(QueueUrl=self.url))
        self._book.retire_all("stale lease: the queue was purged")
        return -1

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Queue.dead_letters` and :meth:`DeadLetterQueue.peek`."""
        if self.dead_letter_queue is None or limit <= 0:
            return []
        return self.dead_letter_queue.peek(limit)

    def redrive(self, limit: int | None = None) -> int:
        """See :meth:`Queue.redrive` and :meth:`DeadLetterQueue.move_back`."""
        if self.dead_letter_queue is None:
            return 0
        return self.dead_letter_queue.move_back(limit, self.size_limit_bytes)

    def _purge_dead_letters(self, older_than_s: float | None) -> int:
        """PurgeQueue on the dead-letter queue, all of it (SQS deletes dead letters by
        age itself: the dead-letter queue's MessageRetentionPeriod, 14 days as
        ``conveyor queue create`` makes it); -1, as SQS does not say how many; 0 when
        there is no dead-letter queue.

        Raises:
            ConfigError: an age was given.
        """
        if older_than_s is not None:
            raise ConfigError(
                "SQS deletes dead letters by age itself (the dead-letter queue's "
                "MessageRetentionPeriod): purge them all, without --older-than"
            )
        if self.dead_letter_queue is None:
            return 0
        self.dead_letter_queue.purge()
        return -1

    def request_counts(self) -> dict[str, int]:
        """HTTP requests made to SQS by this instance, retries included, by API action
        (``SendMessageBatch``, ``ReceiveMessage``...): what AWS bills."""
        return self._counter.counts()

    def close(self) -> None:
        self._clients.close()
