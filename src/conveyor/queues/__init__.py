"""Queue backends behind one contract; the URL's scheme picks the backend (open_queue,
create_queue, delete_queue)."""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.queues.admin import create_queue, delete_queue
from conveyor.queues.base import Queue
from conveyor.queues.messages import (
    BatchResult,
    DeadLetter,
    Outgoing,
    QueueStats,
    Received,
    Removed,
    message_text,
)
from conveyor.settings import Settings

__all__ = [
    "BatchResult",
    "DeadLetter",
    "Outgoing",
    "Queue",
    "QueueStats",
    "Received",
    "Removed",
    "create_queue",
    "delete_queue",
    "message_text",
    "open_queue",
]


def open_queue(url: str, settings: Settings | None = None, *, create: bool = True) -> Queue:
    """Open the queue at ``url``, importing its backend only when needed.

    - ``sqlite:///abs/path/queue.db`` (or ``sqlite://rel/path``): the embedded queue,
      created if missing unless ``create`` is False (read-only commands: a missing
      database is then :class:`~conveyor.errors.QueueNotFound`, and nothing is created).
    - ``https://sqs.<region>.amazonaws.com/<account>/<name>``, or any http(s) URL of an
      SQS-compatible server: Amazon SQS.
    - ``memory://name``: an in-process queue for unit tests.

    Raises:
        ConfigError: the URL names no known backend.
        QueueNotFound: ``create`` is False and there is no SQLite queue at ``url``.
    """
    settings = settings or Settings()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from conveyor.queues.sqlite import SQLiteQueue

        return SQLiteQueue.from_url(url, settings, create=create)
    if scheme in ("http", "https"):
        from conveyor.queues.sqs import SQSQueue

        return SQSQueue.from_url(url, settings)
    if scheme == "memory":
        from conveyor.queues.memory import MemoryQueue

        return MemoryQueue.from_url(url, settings)
    raise ConfigError(f"unknown queue URL {url!r}: use sqlite:///path/queue.db or an SQS queue URL")
