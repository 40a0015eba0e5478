"""create_queue() and delete_queue() for every backend: the name or URL picks it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.settings import Settings


def _as_sqlite_url(name: str) -> str | None:
    """``sqlite:///...`` for a SQLite URL or a ``.db`` path; None for an SQS queue name."""
    if urlsplit(name).scheme == "sqlite":
        return name
    if name.endswith(".db"):
        return f"sqlite:///{Path(name).resolve()}"
    return None


def create_queue(
    name: str,
    *,
    fifo: bool = False,
    max_receive_count: int | None = None,
    visibility_timeout_s: int | None = None,
    settings: Settings,
) -> str:
    """Create a queue with its dead-letter queue and return its URL.

    ``name`` is an SQS queue name (see :func:`conveyor.queues.sqs_admin.create_queue`), or
    a ``sqlite:///path/queue.db`` URL (or a path ending in ``.db``) for the embedded queue,
    whose database is created. The limits default to ``settings``'.

    Raises:
        ValueError: ``fifo`` for a SQLite queue (which is first-in first-out anyway).
        ConfigError: bad name or limits; on SQS, a queue of that name with other attributes.
        AccessDenied, TransientQueueError: from SQS.
    """
    sqlite_url = _as_sqlite_url(name)
    if sqlite_url is None:
        from conveyor.queues.sqs_admin import create_queue as create_sqs_queue  # boto3

        return create_sqs_queue(
            name,
            fifo=fifo,
            max_receive_count=max_receive_count,
            visibility_timeout_s=visibility_timeout_s,
            settings=settings,
        )
    if fifo:
        raise ValueError("--fifo is for SQS queues; the SQLite queue is first-in first-out")
    from conveyor.queues.sqlite import SQLiteQueue

    if max_receive_count is not None:
        settings = settings.with_(max_receive_count=max_receive_count)
    if visibility_timeout_s is not None:
        settings = settings.with_(visibility_timeout_s=visibility_timeout_s)
    SQLiteQueue.from_url(sqlite_url, settings).close()
    return sqlite_url


def delete_queue(url: str, settings: Settings) -> list[str]:
    """Delete the queue at ``url`` with its messages, and its dead-letter queue where it
    has one of its own.

    Returns:
        The URLs deleted, the queue first.

    Raises:
        ConfigError: no queue there, or not a URL of a queue that can be deleted.
        QueueNotFound: (SQS) the queue does not exist.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from conveyor.queues.sqlite_db import delete_database

        delete_database(url)
        return [url]
    if scheme in ("http", "https"):
        from conveyor.queues.sqs_admin import delete_queue as delete_sqs_queue  # boto3

        return delete_sqs_queue(url, settings)
    raise ConfigError(f"cannot delete a queue at {url!r}")
