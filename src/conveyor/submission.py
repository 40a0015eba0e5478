"""Submitting jobs: every job checked before anything is copied or sent, then inputs copied,
messages sent and jobs recorded as queued, a batch at a time, and stopped cleanly.

:class:`Submission` is what ``Client.submit_many`` (and so ``conveyor submit``) runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.errors import BadInput, ConveyorError, Interrupted, MessageTooLarge
from conveyor.jobs import (
    CLAIM_THRESHOLD_BYTES,
    Job,
    JobState,
    encode_for_queue,
    new_job_id,
    new_seed,
)
from conveyor.ledger import Ledger, LedgerEvent
from conveyor.queues.base import MAX_BATCH, Outgoing, Queue
from conveyor.storage import Storage, check_relative_path

#: Jobs recorded in the ledger per call while submitting (one transaction each).
LEDGER_CHUNK = 1000
#: The keys an item of ``submit_many`` may have when it is a mapping.
ITEM_KEYS = frozenset({"input", "params", "seed", "output"})

#: What ``submit_many`` takes per job: an input path, None (parameters only), or a mapping
#: with any of ``input``, ``params``, ``seed`` and ``output``.
Item = str | os.PathLike[str] | Mapping[str, Any] | None
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


@dataclass(frozen=True)
class Planned:
    """A checked job, ready to send: its envelope, the name it was submitted as, and the
    local file to copy into the storage first (None when nothing is copied)."""

    job: Job
    source: str | None
    local: Path | None


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
    """The jobs of one ``submit_many``: planned (checked) first, then sent in batches.

    Args:
        storage: where inputs are copied to (or found, ``in_storage``).
        task: the task every job runs (checked by the caller).
        params: parameters every job gets; an item's own are merged over them.
        seed: every job's seed (default: a new random one per job).
        in_storage: the inputs are paths already under the storage root.
        group: the job group every job joins (created in the ledger before the submit).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        task: str,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        in_storage: bool = False,
        group: str | None = None,
    ) -> None:
        self.storage = storage
        self.group = group
        self.task = task
        self.params = dict(params or {})
        self.seed = seed
        self.in_storage = in_storage
        self._directories: dict[str, Path] = {}

    # --- checking --------------------------------------------------------------------------

    def plan(self, items: Iterable[Item]) -> list[Planned]:
        """Check every item and build its job; nothing is copied or sent.

        Raises:
            BadInput: an item is malformed, names a missing or unsafe file, has params
                that are not JSON, a bad seed, or an output that is its input or another
                job's; the message names the item.
        """
        items = list(items)
        planned: list[Planned] = []
        outputs: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                one = self._plan_one(item)
            except BadInput as exc:
                reason = exc.message.removeprefix("bad message: ")
                where = f"item {index} ({_shown(item)}): " if len(items) > 1 else ""
                raise type(exc)(f"{where}{reason}") from None
            output = one.job.output
            if output is not None:
                if output in outputs:
                    raise BadInput(
                        f"items {outputs[output]} and {index} both publish to {output}: "
                        "give each job its own output"
                    )
                outputs[output] = index
            planned.append(one)
        return planned

    def _plan_one(self, item: Item) -> Planned:
        fields = _item_fields(item)
        job_id = new_job_id()
        source, local, rel = self._input(fields.get("input"), job_id)
        params = self.params
        if fields.get("params") is not None:
            own = fields["params"]
            if not isinstance(own, Mapping):
                raise BadInput(f"params must be a mapping, not {type(own).__name__}")
            params = {**params, **own}
        seed = fields.get("seed", self.seed)
        output = fields.get("output")
        if output is not None:
            output = check_relative_path(os.fspath(output))
            if rel is not None:
                self._check_not_overwritten(output, rel)
        elif rel is not None:
            output = self.storage.default_output(job_id, rel)
        job = Job(
            job_id=job_id,
            task=self.task,
            input=rel,
            output=output,
            params=params,
            seed=new_seed() if seed is None else seed,
        )
        return Planned(job, source, local)

    def _input(self, value: object, job_id: str) -> tuple[str | None, Path | None, str | None]:
        """(source name, local file to copy, path under the storage) of an item's input."""
        if value is None:
            return None, None, None
        if not isinstance(value, str | os.PathLike):
            raise BadInput(f"input must be a path, not {type(value).__name__}")
        name = os.fspath(value)
        if self.in_storage:
            if os.path.isabs(name):
                rel = self.storage.relative(name)
                if rel is None:
                    raise BadInput(f"{name} is not under the storage root {self.storage.root}")
                name = rel
            return name, None, self._existing_input(name)
        local = Path(name)
        try:
            mode = local.stat().st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            raise BadInput(f"input file not found or not a regular file: {local}")
        rel = check_relative_path(f"inputs/{job_id}/{local.name}")
        return name, local, rel

    def _check_not_overwritten(self, output: str, rel: str) -> None:
        """Refuse an output that is the job's own input: the worker would overwrite the
        input it reads (``conveyor run`` refuses the same).

        Raises:
            BadInput: the output names the input file, directly or through a symlink.
        """
        same = output == rel
        if not same and self.in_storage:
            with contextlib.suppress(OSError, ValueError):
                same = os.path.samefile(self.storage.root / output, self.storage.root / rel)
        if same:
            raise BadInput(
                f"output {output} is the job's input {rel}: the job would overwrite its own "
                "input; choose another output path"
            )

    def _existing_input(self, name: str) -> str:
        """Check an input already in the storage: inside the root, a regular file.

        Large submits name many files of one directory, so each directory is resolved
        (symlinks and all) once; a file that is itself a symlink, or not a plain file, gets
        the full check. Workers check every path again before using it.

        Raises:
            UnsafePath: the path leaves the root. BadInput: no such regular file.
        """
        rel = check_relative_path(name)
        parent, _, base = rel.rpartition("/")
        directory = self._directories.get(parent)
        if directory is None and parent:
            directory = self._directories[parent] = self.storage.resolve(parent)
        try:
            mode = os.lstat((directory or self.storage.root) / base).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            self.storage.resolve_input(rel)  # a symlink, missing, or odd: the full check
        return rel

    # --- sending ---------------------------------------------------------------------------

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
        fifo = bool(getattr(queue, "fifo", False))
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


def _item_fields(item: Item) -> dict[str, Any]:
    """An item as a dict of the known keys.

    Raises:
        BadInput: it is a mapping with unknown keys, or not an item at all.
    """
    if item is None:
        return {}
    if isinstance(item, str | os.PathLike):
        return {"input": item}
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - ITEM_KEYS)
        if unknown:
            raise BadInput(
                f"unknown key(s) {', '.join(map(repr, unknown))}: an item has "
                f"{', '.join(sorted(ITEM_KEYS))}"
            )
        return dict(item)
    raise BadInput(
        f"an item is a path, None or a mapping of {', '.join(sorted(ITEM_KEYS))}, "
        f"not {type(item).__name__}"
    )


def _shown(item: object) -> str:
    if isinstance(item, Mapping):
        item = item.get("input", "no input")
    text = os.fspath(item) if isinstance(item, str | os.PathLike) else repr(item)
    return text if len(text) <= 80 else text[:77] + "..."
