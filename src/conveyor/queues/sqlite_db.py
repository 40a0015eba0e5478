"""The SQLite queue's database file: created owner-only, opened in WAL mode, migrated, and
used through short write transactions retried while another process holds the lock."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from conveyor.errors import ConfigError, QueueError, QueueNotFound, TransientQueueError
from conveyor.queues.base import billed_requests
from conveyor.queues.messages import message_text
from conveyor.queues.sqlite_path import check_local_filesystem, path_from_url
from conveyor.queues.sqlite_sql import (
    DEAD_LETTER_INDEXES,
    DEAD_LETTERS,
    MESSAGES,
    MESSAGES_INDEX,
    SCHEMA_VERSION,
    UPGRADE_FROM_1,
)
from conveyor.sqlite_tx import is_busy, open_wal, write_transaction

T = TypeVar("T")

#: How long one statement waits for another process's write lock before retrying.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Whole-transaction attempts before a locked database becomes a TransientQueueError.
_ATTEMPTS = 4
#: Ids per statement in a batch call (SQLite allows 32,766 parameters per statement).
CHUNK = 500
#: Rows deleted per transaction by retention and purges (writers wait no longer).
DELETE_BATCH = 1000
#: A long poll checks for changes after this pause, doubling up to the ceiling.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05


def as_int(value: object) -> int:
    """A count as stored, whatever was stored (a hand-edited row may hold text)."""
    if type(value) is int:
        return value
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):
        return 0


def as_float(value: object) -> float:
    """A time as stored; 0.0 for anything that is not a number."""
    return float(value) if isinstance(value, int | float) else 0.0


def job_ids(heads: Sequence[object]) -> list[str]:
    """The job ids in (the first bytes of) message bodies; bodies without one left out."""
    from conveyor.jobs import job_id_of  # the envelope module, imported only when needed

    return [job_id for raw in heads if (job_id := job_id_of(message_text(raw))) is not None]


def delete_database(url: str) -> None:
    """Delete the SQLite queue at ``url``: its file with its ``-wal`` and ``-shm`` files.

    Raises:
        ConfigError: there is no queue there.
    """
    path = path_from_url(url)
    if not path.exists():
        raise ConfigError(f"no queue at {url}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class QueueDatabase:
    """One connection to the queue's file behind a lock, and the request counts of its
    callers. Thread-safe."""

    def __init__(self, path: Path, url: str, *, busy_timeout_s: float, create: bool) -> None:
        """Open the database at ``path``, creating it (and its directory) if ``create``.

        Raises:
            QueueNotFound: ``create`` is False and there is no database at ``path``.
            ConfigError: a path on a network filesystem, or a file that cannot be opened
                as a conveyor queue.
        """
        self.path = path
        self.url = url
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        #: Commits of this connection, which ``data_version`` does not count.
        self.local_writes = 0
        check_local_filesystem(self.path)
        if create:
            self._create_file()
        elif not self.path.is_file():
            raise QueueNotFound(f"no queue at {self.url}: nothing submitted yet, or a mistyped URL")
        self._conn: sqlite3.Connection | None = self._connect(busy_timeout_s, create)

    def _create_file(self) -> None:
        """Create the directory (0700) and an empty database file (0600) if missing, so
        that SQLite opens a file of the right mode (and gives its WAL files that mode)."""
        directory = self.path.parent
        try:
            if not directory.is_dir():
                directory.parent.mkdir(parents=True, exist_ok=True)
                directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot create {self.path}: {exc.strerror}") from exc
        os.close(fd)

    def _connect(self, busy_timeout_s: float, create: bool) -> sqlite3.Connection:
        return open_wal(
            self.path,
            "queue",
            timeout_s=busy_timeout_s,
            pragmas=[
                "PRAGMA journal_size_limit=67108864",
                # The default 2 MB page cache thrashes once the backlog's index outgrows it.
                "PRAGMA cache_size=-65536",
            ],
            fail=self._error,
            create=create,
            setup=self._check_schema,
        )

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """Refuse a newer schema; create or upgrade an older one."""
        if self._schema_version(conn) != SCHEMA_VERSION:
            self._run(conn, self._migrate)

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the queue database {self.path} has schema {version}, newer than this "
                f"conveyor's {SCHEMA_VERSION}: upgrade conveyor"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the tables (in a write transaction: several processes may race
        here, and the one that comes second finds the work done)."""
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            statements: tuple[str, ...] = (
                MESSAGES,
                MESSAGES_INDEX,
                DEAD_LETTERS,
                *DEAD_LETTER_INDEXES,
            )
        else:
            statements = UPGRADE_FROM_1
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # Transactions ------------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction, retrying it while the database is locked.

        A busy error rolls the whole transaction back, so retrying it is always safe.
        """
        return write_transaction(
            conn,
            work,
            attempts=_ATTEMPTS,
            pause_s=0.01,
            fail=self._error,
            locked=lambda: TransientQueueError(
                f"the queue database {self.path} stayed locked; retry"
            ),
        )

    def write(
        self, work: Callable[[sqlite3.Connection], T], kind: str | None = None, entries: int = 1
    ) -> T:
        """Run ``work`` in a write transaction; count it as ``kind`` requests (SQS billing:
        one per batch of up to 10 entries)."""
        with self._lock:
            if kind is not None:
                self._counts[kind] += billed_requests(entries)
            return self._run(self._connection(), work)

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` outside a write transaction (WAL: beside any writer)."""
        with self._lock:
            try:
                return work(self._connection())
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def wait_for_change(self, deadline: float) -> None:
        """Sleep until another writer committed, a message became visible, or the deadline.
        Takes no database lock: it watches ``data_version`` and the earliest visibility."""

        def snapshot(conn: sqlite3.Connection) -> tuple[tuple[int, int], float | None]:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            due = conn.execute("SELECT min(visible_at) FROM messages").fetchone()[0]
            return (version, self.local_writes), due

        start, due = self.read(snapshot)
        pause_s = _POLL_FIRST_S
        while (remaining_s := deadline - time.monotonic()) > 0:
            time.sleep(min(pause_s, remaining_s))
            pause_s = min(pause_s * 2, _POLL_MAX_S)
            if due is not None and time.time() >= due:
                return
            if self.read(snapshot)[0] != start:
                return

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueError(f"the queue {self.url} is closed")
        return self._conn

    def _error(self, exc: sqlite3.Error) -> QueueError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if is_busy(exc):
            return TransientQueueError(f"the queue database {self.path} is locked ({exc}); retry")
        if name.startswith("SQLITE_FULL"):
            return QueueError(f"the queue database {self.path} is full: free disk space")
        return QueueError(f"the queue database {self.path} failed: {exc}")

    def request_counts(self) -> dict[str, int]:
        """Requests by kind, as SQS would bill them."""
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
