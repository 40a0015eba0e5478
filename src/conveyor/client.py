"""The library's front door: ``conveyor.connect()`` gives a :class:`Client` that submits jobs,
reads them, waits for them and cancels them. The ``conveyor`` command line is a thin layer
over it; nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.errors import BadInput, ConfigError, ConveyorError
from conveyor.jobs import Job
from conveyor.ledger import (
    JobNotFound,
    JobRecord,
    Ledger,
    LedgerNotFound,
    open_ledger,
)
from conveyor.queues import Queue, open_queue
from conveyor.settings import EXIT_TIMEOUT, Settings, settings_from_env
from conveyor.storage import Storage, check_job_id
from conveyor.submission import Item, OnSent, StopSignals, Submission, SubmitInterrupted
from conveyor.tasks import TaskRegistry, default_registry, import_tasks

#: ``wait`` polls the ledger first after this long, then backs off by ``_POLL_GROWTH`` up
#: to ``MAX_POLL_S``: quick for short jobs, a query every few seconds for long ones.
FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0
_POLL_GROWTH = 1.5
#: Open jobs a ``WaitTimeout`` message names (all of them are in ``open_jobs``).
_NAMED_OPEN = 10

__all__ = [
    "Client",
    "JobRecord",
    "SubmitInterrupted",
    "WaitTimeout",
    "connect",
    "open_configured_ledger",
    "open_configured_queue",
]


class WaitTimeout(ConveyorError, TimeoutError):
    """Jobs were still open when ``wait`` ran out of time."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, message: str, open_jobs: Sequence[str] = ()) -> None:
        super().__init__(message)
        #: The ids of the jobs not finished yet.
        self.open_jobs: list[str] = list(open_jobs)


def connect(
    storage: str | os.PathLike[str] | None = None,
    queue: str | None = None,
    **settings: Any,
) -> Client:
    """A client configured exactly as the ``conveyor`` command line is.

    Every keyword is a command-line flag spelt with underscores (``queue``, ``ledger``,
    ``endpoint_url``, ``visibility_timeout_s``, ``imports``...); what is not given comes
    from the same environment variables (``CONVEYOR_STORAGE``, ``CONVEYOR_QUEUE_URL`` or
    ``SQS_QUEUE_URL``, ``CONVEYOR_LEDGER_URL``...), then the same defaults. So a script and
    a ``conveyor worker`` started in the same shell use the same queue, storage and ledger.
    Nothing is opened until it is needed. Use it as a context manager, or ``close()`` it.

    >>> with conveyor.connect() as client:
    ...     job = client.submit("notes.txt", task="wordcount")
    ...     record, = client.wait([job.job_id], timeout_s=60)

    Raises:
        ConfigError: an unknown keyword, or a value (given or from the environment) that is
            not valid.
    """
    return Client(settings_from_env(storage=storage, queue=queue, **settings))


def open_configured_queue(settings: Settings, *, create: bool = True) -> Queue:
    """Open the configured queue (the embedded SQLite one in the storage root by default).

    Args:
        settings: the configuration.
        create: create the embedded queue if it is missing; False for read-only uses,
            which must never create anything.

    Raises:
        ConfigError: the URL names no backend, or the embedded queue's storage root is
            missing (for SQLite, the queue lives inside it).
        QueueNotFound: ``create`` is False and there is no SQLite queue file at the URL.
    """
    if settings.queue_url is None and not settings.storage.is_dir():
        raise ConfigError(
            f"storage root {settings.storage} does not exist: create it, or point "
            "--storage (CONVEYOR_STORAGE) at it"
        )
    return open_queue(settings.resolved_queue_url, settings, create=create)


def open_configured_ledger(settings: Settings, *, create: bool = True) -> Ledger:
    """Open the configured ledger (the embedded SQLite one by default).

    Args:
        settings: the configuration.
        create: create the ledger if missing; False for read-only uses.

    Raises:
        ConfigError: a bad URL, or an embedded ledger on a network filesystem.
        LedgerNotFound: ``create`` is False and there is no ledger yet.
        SchemaMismatch: the ledger was written by a newer conveyor, or needs a migrate.
    """
    return open_ledger(settings.resolved_ledger_url, create=create)


class Client:
    """Submits jobs to the configured queue and reads them from the ledger.

    Safe to share between threads. The queue and the ledger are opened on first use (a
    client that only reads never creates a ledger or a queue) and closed by :meth:`close`.

    Args:
        settings: the configuration (``connect()`` builds it from keywords and the
            environment).
        registry: the tasks jobs may name (default: the process-wide registry, with the
            modules of ``settings.imports`` imported into it on the first submit).
        queue, ledger: use these, already open, instead of opening the configured ones
            (tests and tools); the caller closes them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: TaskRegistry | None = None,
        queue: Queue | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage)
        self._registry = registry
        self._queue = queue
        self._ledger = ledger
        self._owned: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    # --- submitting ------------------------------------------------------------------------

    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        output: str | None = None,
        in_storage: bool = False,
    ) -> Job:
        """Submit one job and return it (queued, and recorded in the ledger).

        Args:
            input: a local file (copied into the storage under ``inputs/<job_id>/``), a
                path already under the storage root (``in_storage=True``), or None for a
                job that carries only parameters.
            task: the registered task to run.
            params: the task's parameters (a JSON object).
            seed: the job's seed (default: a new random one, recorded).
            output: where the output is published, under the storage root (default:
                ``outputs/<job_id>/<input's name>``; a job without input publishes no
                file unless it is given).
            in_storage: ``input`` is already under the storage root.

        Raises:
            UnknownTask: the task is not registered (import its module: ``imports=``).
            BadInput: a missing or unsafe input, params that are not JSON, a bad seed, or
                an output that is the input.
            QueueError, StorageError: the input could not be copied or the job sent.
        """
        item = {"input": input, "output": output}
        (job,) = self.submit_many(
            [item], task=task, params=params, seed=seed, in_storage=in_storage
        )
        return job

    def submit_many(
        self,
        items: Iterable[Item],
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        in_storage: bool = False,
        on_sent: OnSent | None = None,
    ) -> list[Job]:
        """Submit many jobs, in batches, and return them in the order of ``items``.

        Each item is an input path, None (a job with parameters only), or a mapping with
        any of ``input``, ``params`` (merged over the shared ``params``), ``seed`` and
        ``output``. Every item is checked before anything is copied or sent. If sending
        fails part way, or SIGINT/SIGTERM arrives (it stops the submit before its next
        batch), the inputs copied for jobs not sent are removed and every job sent is in
        the ledger: the ledger never lacks a job that is in the queue, and no input is
        left without a job.

        Args:
            on_sent: called with each batch of jobs once sent (progress, printing ids).

        Raises:
            SubmitInterrupted: stopped by SIGINT/SIGTERM; ``exc.sent`` lists the jobs sent.
            UnknownTask, BadInput: see :meth:`submit` (nothing was copied or sent).
            QueueError, StorageError: copying or sending failed part way.
        """
        with StopSignals() as stop:
            registry = self._tasks()
            registry.check(task)
            submission = Submission(
                self.storage, task=task, params=params, seed=seed, in_storage=in_storage
            )
            planned = submission.plan(items)
            if not planned:
                return []
            if not in_storage:
                _make_root(self.storage)
            queue = self.queue
            ledger = self._open_ledger(create=True)
            return submission.send(queue, ledger, planned, on_sent=on_sent, stop=stop)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job's record: state, attempts, timings, error, output, result.

        ``job_id`` may be given in any case, or as any unique prefix of the id.

        Raises:
            JobNotFound: no such job. AmbiguousJobId: the prefix matches several jobs.
        """
        ledger = self._ledger_for_reading(job_id)
        record = ledger.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        return record

    def wait(
        self,
        job_ids: Iterable[str],
        timeout_s: float | None = None,
        *,
        poll_s: float = FIRST_POLL_S,
        max_poll_s: float = MAX_POLL_S,
    ) -> list[JobRecord]:
        """Wait until every job is terminal (succeeded, failed or cancelled); their records,
        in the order given.

        Each poll is one indexed query for the jobs still open, with a growing pause
        between polls (``poll_s`` up to ``max_poll_s``): never a scan of the ledger.

        Raises:
            WaitTimeout: (a ``TimeoutError``) jobs were still open after ``timeout_s``;
                ``exc.open_jobs`` lists them.
            JobNotFound, AmbiguousJobId: an id names no job, or several.
        """
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise BadInput(f"bad timeout {timeout_s!r}: seconds >= 0")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        records = self._resolve(list(job_ids))
        if not records:
            return []
        ids = list(records)
        ledger = self._ledger_for_reading(ids[0])
        still_open = [job_id for job_id, record in records.items() if not record.state.terminal]
        pause_s = poll_s
        while still_open:
            left_s = None if deadline is None else deadline - time.monotonic()
            if left_s is not None and left_s <= 0:
                raise _timeout(still_open, len(ids), timeout_s)
            time.sleep(pause_s if left_s is None else min(pause_s, left_s))
            pause_s = min(pause_s * _POLL_GROWTH, max_poll_s)
            still_open = ledger.open_jobs(still_open)
        finished = ledger.get_many(ids)
        missing = [job_id for job_id in ids if job_id not in finished]
        if missing:
            raise JobNotFound(f"job(s) {', '.join(missing)} left the ledger (pruned) while waited")
        return [finished[job_id] for job_id in ids]

    def cancel(self, job_id: str, *, reason: str | None = None) -> JobRecord:
        """Cancel a job that has not finished; return its record (state ``cancelled``).

        A queued or retrying job is never run: the worker that receives it acks it without
        running. A running job is not published: its worker removes the output it was
        writing and acks the message. Cancelling a job already cancelled changes nothing.

        Raises:
            JobNotFound: no such job. AmbiguousJobId: the prefix matches several jobs.
            JobFinished: the job already succeeded or failed.
        """
        ledger = self._ledger_for_reading(job_id)
        return ledger.cancel(job_id, reason=reason)

    # --- resources -------------------------------------------------------------------------

    @property
    def queue(self) -> Queue:
        """The configured queue, opened (created, if embedded) on first use."""
        with self._lock:
            self._check_open()
            if self._queue is None:
                self._queue = open_configured_queue(self.settings)
                self._owned.add("queue")
            return self._queue

    @property
    def ledger(self) -> Ledger:
        """The configured ledger, opened (created if missing) on first use."""
        return self._open_ledger(create=True)

    def close(self) -> None:
        """Store the queue requests of this client's submits in the ledger (``conveyor
        status`` counts them), then close the queue and the ledger it opened. Idempotent."""
        with self._lock:
            queue, ledger = self._queue, self._ledger
            owned, self._owned = self._owned, set()
            self._queue = self._ledger = None
            self._closed = True
        try:
            if queue is not None and ledger is not None and "queue" in owned:
                counts = queue.request_counts()
                if counts:
                    with contextlib.suppress(ConveyorError):
                        ledger.record_worker_stats(ledger.writer, counts)
        finally:
            if queue is not None and "queue" in owned:
                queue.close()
            if ledger is not None and "ledger" in owned:
                ledger.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(storage={str(self.settings.storage)!r})"

    # --- helpers ---------------------------------------------------------------------------

    def _tasks(self) -> TaskRegistry:
        if self._registry is None:
            import_tasks(self.settings.imports)
            self._registry = default_registry()
        return self._registry

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this conveyor client is closed: connect() again")

    def _open_ledger(self, *, create: bool) -> Ledger:
        """The ledger, opened once; read-only uses do not create it.

        Raises:
            LedgerNotFound: ``create`` is False and there is no ledger yet.
        """
        with self._lock:
            self._check_open()
            if self._ledger is None:
                self._ledger = open_configured_ledger(self.settings, create=create)
                self._owned.add("ledger")
            return self._ledger

    def _ledger_for_reading(self, job_id: str) -> Ledger:
        """The ledger, for a read or a cancel of ``job_id``.

        Raises:
            JobNotFound: there is no ledger yet (nothing was ever submitted there).
        """
        try:
            return self._open_ledger(create=False)
        except LedgerNotFound:
            raise JobNotFound(
                f"no job {job_id}: nothing submitted yet (no ledger at "
                f"{self.settings.storage if self.settings.ledger_url is None else 'the URL'})"
            ) from None

    def _resolve(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """The records of these ids (exact, any case, or unique prefixes), by full id, in
        the order given, repeats dropped: one query for the exact ids, one lookup per other.

        Raises:
            JobNotFound, AmbiguousJobId: an id names no job, or several.
            BadInput: a string that cannot be part of a job id.
        """
        if not job_ids:
            return {}
        for job_id in job_ids:
            check_job_id(job_id)
        ledger = self._ledger_for_reading(job_ids[0])
        exact = ledger.get_many(job_ids)
        records: dict[str, JobRecord] = {}
        for job_id in job_ids:
            record = exact.get(job_id)
            if record is None:
                record = ledger.get(job_id)
                if record is None:
                    raise JobNotFound(f"no job {job_id} in the ledger")
            records.setdefault(record.job_id, record)
        return records


def _timeout(still_open: list[str], total: int, timeout_s: float | None) -> WaitTimeout:
    named = ", ".join(still_open[:_NAMED_OPEN])
    more = f" and {len(still_open) - _NAMED_OPEN} more" if len(still_open) > _NAMED_OPEN else ""
    return WaitTimeout(
        f"{len(still_open)} of {total} job(s) still open after {timeout_s:g} s: {named}{more}",
        still_open,
    )


def _make_root(storage: Storage) -> None:
    """Create the storage root before copying inputs into it.

    Raises:
        ConfigError: it cannot be created (a read-only mount, a file in the way).
    """
    try:
        storage.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the storage root {storage.root}: {exc.strerror}") from exc
