"""Submitting jobs: the checked jobs' inputs copied, messages sent and jobs recorded as
queued, a batch at a time, and stopped cleanly by SIGINT/SIGTERM between batches.

``Client.submit_many`` (and so ``conveyor submit``) checks every job with
:class:`~conveyor.submit_plan.Planner`, then sends them with :class:`Submission`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.errors import ConveyorError, Interrupted, MessageTooLarge
from conveyor.jobs import CLAIM_THRESHOLD_BYTES, Job, JobState, encode_for_queue
from conveyor.ledger import Ledger, LedgerEvent
from conveyor.queues.base import MAX_BATCH, Queue
from conveyor.queues.messages import Outgoing
from conveyor.storage import Storage
from conveyor.submit_plan import Planned

#: Jobs recorded in the ledger per call while submitting (one transaction each).
LEDGER_CHUNK = 1000
#: Called with each batch of jobs once it is sent (and so will be in the ledger).
OnSent = Callable[[Sequence[Job]], None]


class SubmitInterrupted(Interrupted):
    """A submit was stopped by SIGINT or SIGTERM.

    The jobs sent before it (``sent``) are queued and in the ledger; nothing was copied
    for the others.
    """

    def __init__(self, message: str, sent: Sequence[Job] = ()) -> None:
        super().__init__(message)
        #: The jobs that were sent and recorded, in order.
        self.sent: list[Job] = list(sent)


class StopSignals:
    """SIGINT/SIGTERM during a submit: the submit stops before its next batch (at most one
    batch of copies and one send away), so that no batch is ever cut in the middle.

    ``with StopSignals() as stop:`` routes both signals here (on the main thread only, the
    one signals reach) and puts the previous handlers back at the end. If the block ends
    normally with a signal pending (it came after the last batch), the signal is then
    raised again, for the handler it was meant for.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        """Whether a signal came."""
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return "stop request" if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if kind is None and self.signum is not None and self._previous:
            signal.raise_signal(self.signum)


class Submission:
    """Sends the jobs of one ``submit_many`` once :class:`Planner` has checked them all:
    inputs copied, messages sent and jobs recorded as queued, in batches.

    Args:
        storage: where inputs are copied to.
        group: the job group every job joins (created in the ledger before the submit).
    """

    def __init__(self, storage: Storage, *, group: str | None = None) -> None:
        self.storage = storage
        self.group = group

    def send(
        self,
        queue: Queue,
        ledger: Ledger,
        planned: Sequence[Planned],
        *,
        on_sent: OnSent | None = None,
        stop: StopSignals | None = None,
    ) -> list[Job]:
        """Copy, send and record the planned jobs, a batch of 10 at a time.

        The ledger is written on a second thread, a chunk at a time, while the next
        batches are copied and sent: both are mostly system calls, so they overlap. On any
        way out (an error, SIGINT/SIGTERM) every job sent is recorded before this returns
        or raises, and the inputs copied for jobs not sent are removed. ``stop`` (entered
        by the caller) is checked before each batch. A batch whose send failed may have
        been sent in part: its jobs are recorded and cancelled, so that a message of theirs
        that did get through is acked without running.

        Raises:
            SubmitInterrupted: SIGINT or SIGTERM (its ``sent`` lists the jobs sent).
            QueueError, StorageError: sending or copying failed (a note says how many
                jobs were sent first).
        """
        max_bytes = min(CLAIM_THRESHOLD_BYTES, queue.max_message_bytes)
        fifo = queue.fifo
        record = _Recorder(ledger, self.group)
        stop = stop or StopSignals()  # not entered: never set, unless the caller's is
        try:
            with record:
                for start in range(0, len(planned), MAX_BATCH):
                    if stop.requested():
                        raise SubmitInterrupted(
                            f"{stop.signal_name}: submit stopped after {len(record.sent)} of "
                            f"{len(planned)} job(s); the others were not sent"
                        )
                    batch = planned[start : start + MAX_BATCH]
                    self._send_batch(queue, batch, max_bytes, fifo, record)
                    if on_sent is not None:
                        on_sent([one.job for one in batch])
        except SubmitInterrupted as exc:
            exc.sent = list(record.sent)
            raise
        except BaseException as exc:
            if isinstance(exc, ConveyorError):
                exc.add_note(f"{len(record.sent)} of {len(planned)} job(s) were sent first")
            raise
        return record.sent

    def _send_batch(
        self, queue: Queue, batch: Sequence[Planned], max_bytes: int, fifo: bool, record: _Recorder
    ) -> None:
        """Copy a batch's inputs, send its messages, hand its jobs to the recorder; if that
        fails, remove the inputs it copied (cancelling its jobs first if the send may have
        got through in part)."""
        copied: list[Planned] = []
        sending = False
        try:
            for one in batch:
                if one.local is not None:
                    copied.append(one)
                    self.storage.ingest(one.local, one.job.job_id)
            messages = [
                Outgoing(
                    encode_for_queue(one.job, self.storage, max_bytes),
                    dedup_id=one.job.dedup_id if fifo else None,
                )
                for one in batch
            ]
            sending = True
            queue.send_batch(messages)
        except BaseException as exc:
            if sending and not isinstance(exc, MessageTooLarge):
                record.cancelled(batch, exc)
            self._remove_inputs(copied)
            raise
        record.add(batch)

    def _remove_inputs(self, planned: Iterable[Planned]) -> None:
        """Remove the copies of these jobs' inputs (their ``inputs/<job_id>/``)."""
        for one in planned:
            if one.job.input is None:
                continue
            directory = self.storage.root / Path(one.job.input).parent
            shutil.rmtree(directory, ignore_errors=True)


class _Recorder:
    """Records sent jobs as queued: a chunk at a time on a second thread, the rest at the
    end (even when leaving on an error: every job sent must be in the ledger)."""

    def __init__(self, ledger: Ledger, group: str | None = None) -> None:
        self.ledger = ledger
        self.group = group
        self.sent: list[Job] = []
        self._events: list[LedgerEvent] = []
        self._recorded = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def __enter__(self) -> _Recorder:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        return self

    def add(self, batch: Sequence[Planned]) -> None:
        """Note a sent batch; start recording once a chunk has gathered."""
        self.sent.extend(one.job for one in batch)
        self._events.extend(_queued(batch, self.group))
        if len(self.sent) - self._recorded >= LEDGER_CHUNK:
            self._wait()  # one chunk in flight at most; raises its error
            assert self._pool is not None
            self._pending = self._pool.submit(self._record, self._recorded, len(self.sent))
            self._recorded = len(self.sent)

    def cancelled(self, batch: Sequence[Planned], error: BaseException) -> None:
        """Record a batch whose send failed part way as queued, then cancelled (best
        effort: the error being raised matters more)."""
        reason = f"submit failed while sending: {error}"[:500]
        with contextlib.suppress(ConveyorError):
            self.ledger.record_many(_queued(batch, self.group))
            for one in batch:
                self.ledger.cancel(one.job.job_id, reason=reason)

    def __exit__(self, *exc: object) -> None:
        """Record whatever was sent and not yet recorded, then stop the thread."""
        try:
            self._wait()
            self._record(self._recorded, len(self.sent))
            self._recorded = len(self.sent)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _record(self, start: int, end: int) -> None:
        if end > start:
            self.ledger.record_many(self._events[start:end])


def _queued(batch: Iterable[Planned], group: str | None = None) -> list[LedgerEvent]:
    """``queued`` events for sent jobs, at their submit time, with the names given."""
    return [
        LedgerEvent.for_job(
            one.job, JobState.QUEUED, at=one.job.submitted_at, source=one.source, group=group
        )
        for one in batch
    ]
