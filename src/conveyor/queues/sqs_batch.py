"""SQS batch calls: chunking to SQS's limits, retrying or reporting failed entries, FIFO ids."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.errors import ConfigError
from conveyor.queues.base import MAX_BATCH
from conveyor.queues.messages import BatchResult, Outgoing
from conveyor.queues.sqs_client import call

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

E = TypeVar("E", bound=Mapping[str, Any])
#: One batch call's outcome: successful result entries by ``Id``, failed ids with why.
Outcome = tuple[dict[str, Mapping[str, Any]], dict[str, str]]

#: Tries for batch entries that failed through no fault of ours (SenderFault false).
BATCH_ATTEMPTS = 3
BATCH_RETRY_BASE_S = 0.1


def chunks(entries: Sequence[E]) -> Iterator[list[E]]:
    """Batches of at most 10 entries, SQS's limit."""
    for start in range(0, len(entries), MAX_BATCH):
        yield list(entries[start : start + MAX_BATCH])


def size_chunks(entries: Sequence[E], max_bytes: int) -> Iterator[list[E]]:
    """Batches of at most 10 send entries whose bodies add up to at most ``max_bytes``:
    SQS limits a whole SendMessageBatch request, not only each message."""
    chunk: list[E] = []
    size = 0
    for entry in entries:
        entry_size = len(str(entry["MessageBody"]).encode())
        if chunk and (len(chunk) == MAX_BATCH or size + entry_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk


def fifo_id(*parts: str) -> str:
    """A FIFO deduplication or group id derived from ``parts`` (64 hex digits)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def run_batch(
    action: str,
    url: str,
    entries: list[E],
    send: Callable[[list[E]], Mapping[str, Any]],
) -> Outcome:
    """Run one batch call of at most 10 entries, keyed by their ``Id``.

    Entries that failed through no fault of ours (``SenderFault`` false: throttling or an
    internal error for that entry) are sent again, up to ``BATCH_ATTEMPTS`` times in all;
    every other failure is reported with its code and message, never dropped.

    Returns:
        The successful result entries by id, and the failed ids with the reason.
    """
    ok: dict[str, Mapping[str, Any]] = {}
    failed: dict[str, str] = {}
    pending = {str(entry["Id"]): entry for entry in entries}
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        if not pending:
            break
        if attempt > 1:
            time.sleep(BATCH_RETRY_BASE_S * 2 ** (attempt - 2))
        response = call(action, url, functools.partial(send, list(pending.values())))
        for success in response.get("Successful", []):
            if pending.pop(str(success["Id"]), None) is not None:
                ok[str(success["Id"])] = success
        retry: dict[str, E] = {}
        for failure in response.get("Failed", []):
            entry_id = str(failure["Id"])
            entry = pending.pop(entry_id, None)
            if entry is None:
                continue
            why = f"{failure.get('Code', 'Error')}: {failure.get('Message', '')}".strip(" :")
            if failure.get("SenderFault", True) or attempt == BATCH_ATTEMPTS:
                failed[entry_id] = why
            else:
                retry[entry_id] = entry
        for entry_id in pending:
            failed[entry_id] = f"{action} returned no result for this entry"
        pending = retry
    return ok, failed


def change_visibility(
    client: SQSClient, url: str, handles: Sequence[str], timeouts_s: Sequence[int]
) -> Iterator[Outcome]:
    """ChangeMessageVisibilityBatch, 10 at a time: each receipt handle's message becomes
    visible after its timeout. Yields each batch's outcome, keyed by index into ``handles``."""
    entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
        {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": timeout_s}
        for i, (handle, timeout_s) in enumerate(zip(handles, timeouts_s, strict=True))
    ]
    for part in chunks(entries):
        yield run_batch(
            "ChangeMessageVisibilityBatch",
            url,
            part,
            lambda e: client.change_message_visibility_batch(QueueUrl=url, Entries=e),
        )


def delete_messages(client: SQSClient, url: str, handles: Sequence[str]) -> Iterator[Outcome]:
    """DeleteMessageBatch, 10 at a time. Yields each batch's outcome, keyed by index into
    ``handles``."""
    entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
        {"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(handles)
    ]
    for part in chunks(entries):
        yield run_batch(
            "DeleteMessageBatch",
            url,
            part,
            lambda e: client.delete_message_batch(QueueUrl=url, Entries=e),
        )


def send_entry(
    index: int, message: Outgoing, *, fifo: bool, url: str
) -> SendMessageBatchRequestEntryTypeDef:
    """The SendMessageBatch entry of ``message``, ``index`` its Id.

    Raises:
        ConfigError: a delay on a FIFO queue (SQS has no per-message delay there).
    """
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(index), "MessageBody": message.body}
    if not fifo:
        if message.delay_s:
            entry["DelaySeconds"] = message.delay_s
        return entry
    if message.delay_s:
        raise ConfigError(
            f"FIFO queue {url} has no per-message delay (message {index}: {message.delay_s} s)"
        )
    # An identical job sent again within 5 minutes is dropped by SQS. One group per job
    # unless told otherwise: FIFO orders within a group, so separate groups let many
    # workers run jobs in parallel.
    dedup_id = message.dedup_id or fifo_id(message.body)
    entry["MessageDeduplicationId"] = dedup_id
    entry["MessageGroupId"] = message.group_id or dedup_id
    return entry


def send_messages(
    client: SQSClient,
    url: str,
    entries: Sequence[SendMessageBatchRequestEntryTypeDef],
    max_bytes: int,
) -> Iterator[Outcome]:
    """SendMessageBatch, in batches of up to 10 whose bodies add up to at most
    ``max_bytes``. Yields each batch's outcome, keyed by the entries' Ids."""
    for part in size_chunks(entries, max_bytes):
        yield run_batch(
            "SendMessageBatch",
            url,
            part,
            lambda e: client.send_message_batch(QueueUrl=url, Entries=e),
        )


def settle(
    leases: Sequence[str], ok: Mapping[str, object], failed: Mapping[str, str], result: BatchResult
) -> list[str]:
    """Copy a batch's outcome, keyed by index into ``leases``, into ``result``; returns
    the leases that succeeded."""
    done = [leases[int(entry_id)] for entry_id in ok]
    result.ok.extend(done)
    for entry_id, why in failed.items():
        result.failed[leases[int(entry_id)]] = why
    return done
