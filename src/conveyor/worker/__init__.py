"""The worker: takes jobs off the queue and runs them with their leases kept alive, then
publishes, records and acks (``Worker``; the loop is in :mod:`conveyor.worker.loop`)."""

from conveyor.worker.hooks import WorkerHook
from conveyor.worker.inflight import RoundResult
from conveyor.worker.loop import Worker
from conveyor.worker.prefetch import Pace

__all__ = ["Pace", "RoundResult", "Worker", "WorkerHook"]
