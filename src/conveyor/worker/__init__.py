"""The worker: takes jobs off the queue and runs them with their leases kept alive, then
publishes, records and acks (``Worker``; the loop is in :mod:`conveyor.worker.loop`)."""

from conveyor.backoff import MAX_RETRY_DELAY_S, Backoff, ExponentialBackoff
from conveyor.worker.hooks import WorkerHook
from conveyor.worker.inflight import RoundResult
from conveyor.worker.loop import Worker
from conveyor.worker.placement import check_ledger_placement, network_filesystem_of
from conveyor.worker.prefetch import Pace

__all__ = [
    "MAX_RETRY_DELAY_S",
    "Backoff",
    "ExponentialBackoff",
    "Pace",
    "RoundResult",
    "Worker",
    "WorkerHook",
    "check_ledger_placement",
    "network_filesystem_of",
]
