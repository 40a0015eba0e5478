"""Sending a job group's completion job once the ledger made it due.

The ledger decides, in the transaction that ends a group's last job, that the group's
completion is due (exactly once); the message is sent outside that transaction, so whoever
wrote it sends it and marks it sent, and a worker that finds the queue empty also sends
the due completions nobody marked (their sender died in between). A completion sent twice
is harmless: its job id is fixed and a worker skips a job that already succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.errors import ConveyorError
from conveyor.jobs import CLAIM_THRESHOLD_BYTES, encode_for_queue
from conveyor.ledger import Completion, Ledger
from conveyor.queues.base import MAX_BATCH, Queue
from conveyor.queues.messages import Outgoing
from conveyor.storage import Storage

log = logging.getLogger("conveyor.worker")


def send_completions(
    queue: Queue, ledger: Ledger, storage: Storage, completions: Sequence[Completion]
) -> int:
    """Send these completions' jobs to the queue, then mark each sent; the number sent.

    Never raises for a queue or ledger error: the completion stays listed as due, and the
    next idle worker sends it (:func:`send_due_completions`).
    """
    sent = 0
    fifo = queue.fifo
    max_bytes = min(CLAIM_THRESHOLD_BYTES, queue.max_message_bytes)
    for start in range(0, len(completions), MAX_BATCH):
        batch = completions[start : start + MAX_BATCH]
        try:
            queue.send_batch(
                [
                    Outgoing(
                        encode_for_queue(one.job, storage, max_bytes),
                        dedup_id=one.job.dedup_id if fifo else None,
                    )
                    for one in batch
                ]
            )
            for one in batch:
                ledger.mark_completion_sent(one.group_id)
                log.info(
                    "group %s: completion %s sent",
                    one.group_id,
                    one.job_id,
                    extra={"action": "completion", "job_id": one.job_id},
                )
        except ConveyorError as exc:
            log.warning("cannot send group completions: %s", exc.message)
            return sent
        sent += len(batch)
    return sent


def send_due_completions(queue: Queue, ledger: Ledger, storage: Storage) -> int:
    """Send the completions the ledger lists as due and not sent; the number sent."""
    try:
        due = ledger.due_completions()
    except ConveyorError as exc:
        log.warning("cannot read due group completions: %s", exc.message)
        return 0
    return send_completions(queue, ledger, storage, due) if due else 0
