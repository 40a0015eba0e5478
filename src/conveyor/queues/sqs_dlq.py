"""An SQS queue's dead-letter queue: put a message there with its reason, peek, redrive."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from conveyor.errors import QueueError
from conveyor.queues.base import MAX_BATCH, DeadLetter
from conveyor.queues.sqs_batch import chunks, fifo_id, run_batch, size_chunks
from conveyor.queues.sqs_client import call, message_counts

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

log = logging.getLogger(__name__)

#: Message attributes conveyor puts on a message it dead-letters itself.
REASON_ATTRIBUTE = "conveyor-reason"
RECEIVE_COUNT_ATTRIBUTE = "conveyor-receive-count"
MAX_REASON_CHARS = 1_000
#: Visibility that hides dead letters while they are listed or moved back.
PEEK_VISIBILITY_S = 30
#: A long poll asks every SQS server; a short poll (0 s) may miss messages.
PEEK_WAIT_S = 1

SYSTEM_ATTRIBUTES: list[MessageSystemAttributeNameType] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
]


class DeadLetterQueue:
    """The dead-letter queue named by a source queue's RedrivePolicy (by ARN)."""

    def __init__(self, client: SQSClient, arn: str, source_url: str, fifo: bool) -> None:
        self._client = client
        self.arn = arn
        self._source_url = source_url
        self._fifo = fifo
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The queue's URL, looked up from its ARN on first use."""
        if self._url is None:
            *_, account, name = self.arn.split(":")
            response = call(
                "GetQueueUrl",
                self.arn,
                lambda: self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account),
            )
            self._url = response["QueueUrl"]
        return self._url

    def count(self) -> int:
        """Approximate number of dead letters (visible, being listed, or delayed)."""
        return sum(message_counts(self._client, self.url))

    def put(
        self, body: str, reason: str, receive_count: int, *, message_id: str, group_id: str | None
    ) -> None:
        """Send one message here, with why and after how many receives it failed."""
        url = self.url
        request: SendMessageRequestTypeDef = {
            "QueueUrl": url,
            "MessageBody": body,
            "MessageAttributes": {
                REASON_ATTRIBUTE: {
                    "DataType": "String",
                    "StringValue": reason[:MAX_REASON_CHARS] or "-",
                },
                RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receive_count)},
            },
        }
        if self._fifo:
            request["MessageGroupId"] = group_id or fifo_id(message_id)
            # Retrying a dead-letter of the same message within 5 minutes sends it once.
            request["MessageDeduplicationId"] = fifo_id("dead-letter", message_id)
        call("SendMessage", url, lambda: self._client.send_message(**request))

    def peek(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, received with a short visibility then released.

        A listing counts as a receive of each listed message. A FIFO dead-letter queue
        shows one message per message group at a time.
        """
        target = min(limit, message_counts(self._client, self.url)[0])
        found: dict[str, DeadLetter] = {}
        held: list[str] = []
        try:
            while len(found) < target:
                batch = self._receive(min(MAX_BATCH, target - len(found)))
                if not batch:
                    break
                for message in batch:
                    held.append(message["ReceiptHandle"])
                    found.setdefault(message["MessageId"], _dead_letter_of(message))
        finally:
            self._release(held)
        return list(found.values())[:limit]

    def move_back(self, limit: int | None, max_message_bytes: int) -> int:
        """Redrive by hand: receive here, send to the source queue, delete here; ten at a
        time. Returns how many moved.

        Not StartMessageMoveTask: that runs asynchronously, takes no count, and
        SQS-compatible test servers lack it; this works everywhere and counts exactly.
        """
        available = message_counts(self._client, self.url)[0]
        target = available if limit is None else min(limit, available)
        moved = 0
        while moved < target:
            batch = self._receive(min(MAX_BATCH, target - moved))
            if not batch:
                break
            moved += self._send_back(batch, max_message_bytes)
        return moved

    def _send_back(self, batch: list[MessageTypeDef], max_message_bytes: int) -> int:
        """Send a batch to the source queue (a fresh message: receive count 1), then delete
        here those that were sent; release the others and report the first failure."""
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for index, message in enumerate(batch):
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": str(index),
                "MessageBody": message.get("Body", ""),
            }
            if self._fifo:
                message_id = message["MessageId"]
                group = message.get("Attributes", {}).get("MessageGroupId")
                entry["MessageGroupId"] = group or fifo_id(message_id)
                # A retried redrive of the same dead letter is sent once.
                entry["MessageDeduplicationId"] = fifo_id("redrive", message_id)
            entries.append(entry)
        sent: list[str] = []
        problems: dict[str, str] = {}
        for part in size_chunks(entries, max_message_bytes):
            ok, failed = run_batch(
                "SendMessageBatch",
                self._source_url,
                part,
                lambda e: self._client.send_message_batch(QueueUrl=self._source_url, Entries=e),
            )
            sent.extend(ok)
            problems.update(failed)
        handles = [message["ReceiptHandle"] for message in batch]
        deletes: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": i, "ReceiptHandle": handles[int(i)]} for i in sent
        ]
        for delete in chunks(deletes):
            _, undeleted = run_batch(
                "DeleteMessageBatch",
                self.url,
                delete,
                lambda e: self._client.delete_message_batch(QueueUrl=self.url, Entries=e),
            )
            for why in undeleted.values():
                log.warning("a redriven message is still in %s too: %s", self.url, why)
        if problems:
            self._release([handles[int(i)] for i in problems])
            first = min(problems, key=int)
            raise QueueError(f"redriving to {self._source_url} failed: {problems[first]}")
        return len(sent)

    def _receive(self, max_messages: int) -> list[MessageTypeDef]:
        url = self.url
        response = call(
            "ReceiveMessage",
            url,
            lambda: self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=PEEK_WAIT_S,
                VisibilityTimeout=PEEK_VISIBILITY_S,
                MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
                MessageAttributeNames=[REASON_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE],
            ),
        )
        return response.get("Messages", [])

    def _release(self, handles: list[str]) -> None:
        """Make peeked messages visible again at once."""
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(handles)
        ]
        for part in chunks(entries):
            _, failed = run_batch(
                "ChangeMessageVisibilityBatch",
                self.url,
                part,
                lambda e: self._client.change_message_visibility_batch(
                    QueueUrl=self.url, Entries=e
                ),
            )
            for why in failed.values():
                log.warning(
                    "a listed dead letter stays hidden for %d s: %s", PEEK_VISIBILITY_S, why
                )


def _dead_letter_of(message: MessageTypeDef) -> DeadLetter:
    """A DeadLetter from a peeked message: the reason and receive count conveyor recorded,
    or, for a message SQS moved itself, SQS's receive count less this peek."""
    attributes = {
        name: value.get("StringValue")
        for name, value in message.get("MessageAttributes", {}).items()
    }
    recorded = attributes.get(RECEIVE_COUNT_ATTRIBUTE)
    if recorded is not None:
        count = int(recorded)
    else:
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")) - 1
    return DeadLetter(
        message["MessageId"],
        message.get("Body", ""),
        max(0, count),
        attributes.get(REASON_ATTRIBUTE),
    )
