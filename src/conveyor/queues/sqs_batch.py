"""SQS batch calls: chunking to SQS's limits, retrying or reporting failed entries, FIFO ids."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from conveyor.queues.base import MAX_BATCH
from conveyor.queues.sqs_client import call

E = TypeVar("E", bound=Mapping[str, Any])

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
) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
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
