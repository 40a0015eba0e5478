"""What every :class:`~conveyor.client.Client` call stands on: the configured queue, ledger
and task registry, opened on first use and closed together, and the one path every submit
takes to copy, send and record its jobs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Self

from conveyor.default_tasks import default_registry
from conveyor.errors import ConfigError, ConveyorError
from conveyor.jobs import Job
from conveyor.ledger import JobNotFound, Ledger, LedgerNotFound, open_ledger
from conveyor.queues import Queue, open_queue
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.submission import OnSent, StopSignals, Submission
from conveyor.submit_plan import Item, Planner
from conveyor.task_registry import TaskRegistry
from conveyor.tasks import import_tasks


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


class ClientBase:
    """The resources of a :class:`~conveyor.client.Client` (see there for the arguments).

    Safe to share between threads. The queue and the ledger are opened on first use (a
    client that only reads never creates a ledger or a queue) and closed by :meth:`close`.
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

    def __enter__(self) -> Self:
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

    # --- the one submit path ------------------------------------------------------------

    def _submit_many(
        self,
        items: Iterable[Item],
        *,
        task: str,
        params: Mapping[str, Any] | None,
        seed: int | None,
        in_storage: bool,
        on_sent: OnSent | None = None,
        group: str | None = None,
    ) -> list[Job]:
        """:meth:`submit_many`, the jobs joining ``group`` if given."""
        with StopSignals() as stop:
            registry = self._tasks()
            registry.check(task)
            planner = Planner(
                self.storage, task=task, params=params, seed=seed, in_storage=in_storage
            )
            planned = planner.plan(items)
            if not planned:
                return []
            if not in_storage:
                make_root(self.storage)
            queue = self.queue
            ledger = self._open_ledger(create=True)
            submission = Submission(self.storage, group=group)
            return submission.send(queue, ledger, planned, on_sent=on_sent, stop=stop)


def make_root(storage: Storage) -> None:
    """Create the storage root before copying inputs into it.

    Raises:
        ConfigError: it cannot be created (a read-only mount, a file in the way).
    """
    try:
        storage.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the storage root {storage.root}: {exc.strerror}") from exc
