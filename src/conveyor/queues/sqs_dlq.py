"""An SQS queue's dead-letter queue: put a message there with its reason, peek, redrive."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import botocore.exceptions

from conveyor.errors import QueueError
from conveyor.queues.base import MAX_BATCH
from conveyor.queues.messages import DeadLetter
from conveyor.queues.sqs_batch import change_visibility, delete_messages, fifo_id, send_messages
from conveyor.queues.sqs_client import call, get_attributes, message_counts
from conveyor.queues.sqs_url import parse_queue_arn

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

log = logging.getLogger(__name__)

#: Message attributes conveyor puts on a message it dead-letters itself.
REASON_ATTRIBUTE = "conveyor-reason"
RECEIVE_COUNT_ATTRIBUTE = "conveyor-receive-count"
#: A reason is cut to this many UTF-8 bytes (the ledger keeps it whole).
MAX_REASON_BYTES = 1_536
#: Bytes a sender leaves free under the size limit for those attributes: SQS counts every
#: attribute's name, type and value in the message size. Both attributes at their largest
#: (a 1,536-byte reason, a 20-digit count) take 1,605 bytes.
ATTRIBUTE_BUDGET_BYTES = 2_048
#: The end of a shortened reason.
ELLIPSIS = "\u2026"
#: Characters SQS accepts in bodies and string attributes (XML 1.0's), and ANSI escape
#: sequences (an exception's colours), which are dropped whole rather than mangled.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-_])")
_REPLACEMENT = "\ufffd"
#: Error codes of a message refused for what it holds (too large, invalid characters).
_CONTENT_ERRORS = frozenset(
    {"InvalidParameterValue", "InvalidMessageContents", "InvalidAttributeValue"}
)
#: Visibility that hides dead letters while they are listed or moved back.
PEEK_VISIBILITY_S = 30
#: A long poll asks every SQS server; a short poll (0 s) may miss messages.
PEEK_WAIT_S = 1
#: A reason cut shorter than this says nothing: the dead letter goes without it.
MIN_REASON_CHARS = 16
#: SQS's size limit on queues created before 2025, when an old server omits the attribute.
LEGACY_MAX_MESSAGE_BYTES = 262_144

SYSTEM_ATTRIBUTES: list[MessageSystemAttributeNameType] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
]


def body_limit_bytes(size_limit_bytes: int) -> int:
    """The largest body conveyor sends to a queue of this MaximumMessageSize: the limit
    less room for the attributes a dead letter carries (SQS counts them in the size), so
    every message sent can later be dead-lettered with its reason. Submitters claim-check
    above it."""
    return size_limit_bytes - min(ATTRIBUTE_BUDGET_BYTES, size_limit_bytes // 8)


def sqs_text(text: str) -> str:
    """``text`` in the characters SQS accepts in a body or string attribute value: ANSI
    escape sequences dropped, every other character outside XML 1.0's set (control
    characters, lone surrogates) replaced by U+FFFD. SQS refuses the whole message
    ("Invalid characters found") otherwise."""
    return _NOT_XML_CHAR.sub(_REPLACEMENT, _ANSI_ESCAPE.sub("", text))


def attributes_bytes(attributes: Mapping[str, MessageAttributeValueTypeDef]) -> int:
    """The bytes SQS counts in a message's size for these attributes: each name, data type
    and value, in UTF-8."""
    return sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def shorten(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character, ending
    in an ellipsis when it was cut; empty if not even the ellipsis fits."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(ELLIPSIS.encode())
    if room < 0:
        return ""
    return data[:room].decode(errors="ignore") + ELLIPSIS


def dead_letter_attributes(
    body: str, reason: str, receive_count: int, max_message_bytes: int
) -> dict[str, MessageAttributeValueTypeDef]:
    """The attributes a dead letter carries, made to fit beside ``body`` in
    ``max_message_bytes``: the receive count and the reason, sanitised and shortened to the
    room left; without the reason if less than a few characters of it fit, and with
    neither if even the count does not (the ledger keeps the reason whole anyway)."""
    count: dict[str, MessageAttributeValueTypeDef] = {
        RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receive_count)}
    }
    room = max_message_bytes - len(body.encode("utf-8", "surrogatepass")) - attributes_bytes(count)
    if room < 0:
        return {}
    overhead = len(REASON_ATTRIBUTE) + len("String")
    clean = sqs_text(reason).strip() or "-"
    text = shorten(clean, min(MAX_REASON_BYTES, room - overhead))
    if not text or (text != clean and len(text) < MIN_REASON_CHARS):
        return count
    return {REASON_ATTRIBUTE: {"DataType": "String", "StringValue": text}, **count}


class DeadLetterQueue:
    """The dead-letter queue named by a source queue's RedrivePolicy (by ARN).

    Its URL is looked up from the ARN (GetQueueUrl with the ARN's name and account, on a
    client for the ARN's region), never derived from the source queue's URL: the two may
    live in different regions, and servers shape their URLs differently.
    """

    def __init__(
        self,
        source_client: SQSClient,
        arn: str,
        source_url: str,
        fifo: bool,
        client_for: Callable[[str], SQSClient],
    ) -> None:
        """Address the dead-letter queue at ``arn`` (nothing is asked of SQS yet).

        Args:
            source_client: the source queue's client (redrive sends there).
            arn: the dead-letter queue's ARN.
            client_for: a client signing for a region (the ARN's).

        Raises:
            ConfigError: ``arn`` is not an SQS queue ARN.
        """
        self._source_client = source_client
        self.arn = arn
        self._arn = parse_queue_arn(arn)
        self._client_for = client_for
        self._source_url = source_url
        self._fifo = fifo
        self._url: str | None = None
        self._max_message_bytes: int | None = None

    @property
    def _client(self) -> SQSClient:
        return self._client_for(self._arn.region)

    @property
    def url(self) -> str:
        """The queue's URL, looked up from its ARN on first use."""
        if self._url is None:
            name, account = self._arn.name, self._arn.account_id
            response = call(
                "GetQueueUrl",
                self.arn,
                lambda: self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account),
            )
            self._url = response["QueueUrl"]
        return self._url

    @property
    def max_message_bytes(self) -> int:
        """The dead-letter queue's own size limit (MaximumMessageSize), read on first use."""
        if self._max_message_bytes is None:
            attributes = get_attributes(self._client, self.url, ["MaximumMessageSize"])
            self._max_message_bytes = int(
                attributes.get("MaximumMessageSize", LEGACY_MAX_MESSAGE_BYTES)
            )
        return self._max_message_bytes

    def count(self) -> int:
        """Approximate number of dead letters (visible, being listed, or delayed)."""
        return sum(message_counts(self._client, self.url))

    def put(
        self, body: str, reason: str, receive_count: int, *, message_id: str, group_id: str | None
    ) -> None:
        """Send one message here, with why and after how many receives it failed.

        The attributes are made to fit the dead-letter queue's size limit beside the body
        (see :func:`dead_letter_attributes`). Should the server still find the message too
        large or its characters invalid (it counts differently), it is sent again without
        attributes: the message must reach this queue; its reason is in the ledger.
        """
        url = self.url
        attributes = dead_letter_attributes(body, reason, receive_count, self.max_message_bytes)
        request: SendMessageRequestTypeDef = {"QueueUrl": url, "MessageBody": body}
        if attributes:
            request["MessageAttributes"] = attributes
        if self._fifo:
            request["MessageGroupId"] = group_id or fifo_id(message_id)
            # Retrying a dead-letter of the same message within 5 minutes sends it once.
            request["MessageDeduplicationId"] = fifo_id("dead-letter", message_id)
        try:
            call("SendMessage", url, lambda: self._client.send_message(**request))
        except QueueError as exc:
            if "MessageAttributes" not in request or not _refused_content(exc):
                raise
            log.warning(
                "dead-lettering message %s to %s without its reason: %s", message_id, url, exc
            )
            del request["MessageAttributes"]
            call("SendMessage", url, lambda: self._client.send_message(**request))

    def purge(self) -> None:
        """PurgeQueue: every dead letter goes (SQS allows one purge per 60 s)."""
        url = self.url
        call("PurgeQueue", url, lambda: self._client.purge_queue(QueueUrl=url))

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
        for ok, failed in send_messages(
            self._source_client, self._source_url, entries, max_message_bytes
        ):
            sent.extend(ok)
            problems.update(failed)
        handles = [message["ReceiptHandle"] for message in batch]
        for _, undeleted in delete_messages(
            self._client, self.url, [handles[int(i)] for i in sent]
        ):
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
        for _, failed in change_visibility(self._client, self.url, handles, [0] * len(handles)):
            for why in failed.values():
                log.warning(
                    "a listed dead letter stays hidden for %d s: %s", PEEK_VISIBILITY_S, why
                )


def _refused_content(exc: QueueError) -> bool:
    """Whether SQS refused a message for its size or characters (not for access, a
    missing queue or an outage, which sending it again without attributes cannot fix)."""
    cause = exc.__cause__
    if not isinstance(cause, botocore.exceptions.ClientError):
        return False
    code = str(cause.response.get("Error", {}).get("Code", ""))
    return code.rsplit(".", 1)[-1] in _CONTENT_ERRORS


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
