"""SQLiteQueue: the embedded queue, one WAL-mode SQLite file shared by processes on one machine."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from conveyor.errors import ConfigError, LeaseLost, QueueError
from conveyor.queues.base import Queue, check_queue_config
from conveyor.queues.messages import (
    MAX_LISTED_BODY_BYTES,
    BatchResult,
    DeadLetter,
    Outgoing,
    QueueStats,
    Received,
    Removed,
    display_text,
    message_text,
)
from conveyor.queues.sqlite_db import (
    DEFAULT_BUSY_TIMEOUT_S,
    DELETE_BATCH,
    QueueDatabase,
    as_float,
    as_int,
    job_ids,
)
from conveyor.queues.sqlite_dlq import DEFAULT_DEAD_LETTER_RETENTION_S, DeadLetterTable
from conveyor.queues.sqlite_leases import bury, by_lease, release
from conveyor.queues.sqlite_path import path_from_url
from conveyor.queues.sqlite_sql import (
    ACK,
    BURY,
    CLAIM,
    DELETE,
    EXTEND,
    REPAIR_VISIBILITY,
    UNREADABLE_VISIBILITY,
)
from conveyor.settings import Settings

#: SQS's classic limit; the message envelope stays far below it (claim check).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
#: Seconds between two retention passes of one open queue (one also runs on open).
RETENTION_EVERY_S = 3600.0


def _received(message_id: str, body: str, lease: str, count: int, sent_at: float) -> Received:
    """Build a :class:`Received` without the frozen dataclass's ``__init__``: that one sets
    each field through ``object.__setattr__`` and made up a fifth of a receive's CPU time.
    The result is an ordinary, equal instance."""
    received: Received = object.__new__(Received)
    received.__dict__.update(
        message_id=message_id, body=body, lease=lease, receive_count=count, sent_at=sent_at
    )
    return received


# --- the queue -------------------------------------------------------------------------------


class SQLiteQueue(Queue):
    """A queue in one SQLite file, for any number of worker processes on one machine.

    WAL mode lets readers run beside the single writer; every write is a short
    ``BEGIN IMMEDIATE`` transaction, retried while another process holds the lock.
    ``synchronous=NORMAL`` under WAL survives any process crash (kill -9 included): a
    committed transaction is in the WAL file before the call returns. Only an OS crash or
    power loss can lose the last few transactions, and never corrupts the file; a worker
    crash, the failure that matters here, loses nothing.

    Whatever a row holds (text that is not UTF-8, a BLOB, a huge body, text in a number's
    column), reading it never fails: every column is read as bytes or cast, and bodies are
    decoded by :func:`~conveyor.queues.base.message_text`. Dead letters are kept
    ``dead_letter_retention_s`` (14 days by default, like SQS), and carry a ``reconciled``
    mark (:meth:`unreconciled_dead_letters`).

    The database file is created owner-only (0600; SQLite gives its -wal and -shm files the
    same mode), and its directory 0700 if this creates it: messages may carry parameters
    such as tokens.

    The instance is thread-safe (one connection behind a lock). FIFO dedup and group ids
    are ignored: this is a standard queue, at-least-once.
    """

    tracks_reconciliation = True

    def __init__(
        self,
        path: Path | str,
        *,
        visibility_timeout_s: int = 60,
        max_receive_count: int = 5,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        url: str | None = None,
        create: bool = True,
        dead_letter_retention_s: float = DEFAULT_DEAD_LETTER_RETENTION_S,
    ) -> None:
        """Open the queue database at ``path``, creating it if ``create``.

        Raises:
            QueueNotFound: ``create`` is False and there is no database at ``path``.
            ConfigError: bad settings, a path on a network filesystem, or a file that
                cannot be opened as a conveyor queue.
        """
        check_queue_config(visibility_timeout_s, max_receive_count)
        if not dead_letter_retention_s > 0:
            raise ConfigError(f"dead-letter retention {dead_letter_retention_s} s must be > 0")
        self.path = Path(path).expanduser().absolute()
        self.url = url or f"sqlite:///{self.path}"
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receive_count = max_receive_count
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self.dead_letter_retention_s = dead_letter_retention_s
        self._retention_due = 0.0  # time.monotonic() of the next retention pass
        self._db = QueueDatabase(self.path, self.url, busy_timeout_s=busy_timeout_s, create=create)
        self._letters = DeadLetterTable(self._db)
        self._maintain_if_due()

    @classmethod
    def from_url(cls, url: str, settings: Settings, *, create: bool = True) -> SQLiteQueue:
        """Open the queue at ``sqlite:///path``, configured from ``settings``."""
        return cls(
            path_from_url(url),
            visibility_timeout_s=settings.visibility_timeout_s,
            max_receive_count=settings.max_receive_count,
            url=url,
            create=create,
        )

    # Sending and receiving ---------------------------------------------------------------

    def _send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        now = time.time()
        rows = [(os.urandom(16).hex(), m.body, now, now + m.delay_s) for m in messages]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO messages (message_id, body, sent_at, visible_at) VALUES (?,?,?,?)",
                rows,
            )
            self._db.local_writes += 1

        self._db.write(insert, "send", len(rows))
        return [row[0] for row in rows]

    def _receive(self, max_messages: int, wait_s: float, timeout_s: int) -> list[Received]:
        """See :meth:`Queue.receive`. Waiting takes no database lock: it watches
        ``data_version`` and the earliest lease expiry, and claims again only when one moved."""
        deadline = time.monotonic() + wait_s
        self._maintain_if_due()
        kind: str | None = "receive"  # one long poll is one request
        while True:
            received = self._db.write(lambda conn: self._claim(conn, max_messages, timeout_s), kind)
            kind = None
            if received or time.monotonic() >= deadline:
                return received
            self._db.wait_for_change(deadline)

    def _claim(self, conn: sqlite3.Connection, max_messages: int, timeout_s: int) -> list[Received]:
        """Lease up to ``max_messages``; those past max_receive_count go to the DLQ instead."""
        now = time.time()
        received: list[Received] = []
        while len(received) < max_messages:
            rows = conn.execute(
                CLAIM, (now + timeout_s, now, max_messages - len(received))
            ).fetchall()
            dead: list[int] = []
            for row_id, message_id, body, token, stored_count, sent_at in rows:
                count = stored_count if type(stored_count) is int else as_int(stored_count)
                if count > self.max_receive_count:
                    dead.append(row_id)
                    continue
                received.append(
                    _received(
                        # Bytes, read as such so that no stored value fails to decode.
                        message_id.decode("utf-8", "replace")
                        if type(message_id) is bytes
                        else display_text(message_id),
                        body.decode("utf-8", "surrogateescape")
                        if type(body) is bytes
                        else message_text(body),
                        f"{row_id}.{token}",
                        count,
                        sent_at if type(sent_at) is float else as_float(sent_at),
                    )
                )
            if not dead:
                break
            marks = ",".join("?" * len(dead))
            reason = f"received {self.max_receive_count} times (max_receive_count)"
            conn.execute(BURY.format(ids=marks), (reason, now, *dead))
            conn.execute(DELETE.format(ids=marks), dead)
        return received

    # Leases --------------------------------------------------------------------------------

    def _ack_batch(self, leases: Sequence[str]) -> BatchResult:
        return by_lease(self._db, "ack", leases, ACK, ())

    def _extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        return by_lease(self._db, "extend", leases, EXTEND, (time.time() + visibility_timeout_s,))

    def _release_batch(self, leases: Sequence[str], delay_s: int) -> BatchResult:
        return release(self._db, leases, delay_s)

    def dead_letter(self, lease: str, reason: str) -> None:
        if not bury(self._db, lease, reason):
            raise LeaseLost("lease lost: the message was received again or deleted")

    # Inspection and maintenance --------------------------------------------------------------

    def stats(self) -> QueueStats:
        now = time.time()
        row = self._db.read(
            lambda conn: conn.execute(
                """SELECT
                    (SELECT count(*) FROM messages WHERE visible_at <= ?1),
                    (SELECT count(*) FROM messages WHERE visible_at > ?1 AND lease IS NOT NULL),
                    (SELECT count(*) FROM messages WHERE visible_at > ?1 AND lease IS NULL),
                    (SELECT count(*) FROM dead_letters)""",
                (now,),
            ).fetchone()
        )
        return QueueStats(*(int(n) for n in row))

    def purge(self) -> int:
        return self._db.write(lambda conn: conn.execute("DELETE FROM messages").rowcount)

    def purge_jobs(self) -> Removed:
        """See :meth:`Queue.purge_jobs`: one transaction, read in chunks (a body's first
        :data:`MAX_LISTED_BODY_BYTES` only: the job id is at its start)."""

        def purge(conn: sqlite3.Connection) -> Removed:
            count, found = 0, []
            while True:
                heads = conn.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages ORDER BY id LIMIT ?)"
                    " RETURNING substr(CAST(body AS BLOB), 1, ?)",
                    (DELETE_BATCH, MAX_LISTED_BODY_BYTES),
                ).fetchall()
                count += len(heads)
                found += job_ids([head for (head,) in heads])
                if len(heads) < DELETE_BATCH:
                    return Removed(count, found)

        return self._db.write(purge)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Queue.dead_letters`: newest first."""
        return self._letters.page(limit, None)

    def dead_letter_page(self, limit: int = 100, before: str | None = None) -> list[DeadLetter]:
        """See :meth:`Queue.dead_letter_page`: a walk down the primary key, newest first."""
        return self._letters.page(limit, before)

    def unreconciled_dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`Queue.unreconciled_dead_letters`: read through an index that holds
        only unreconciled letters, so the cost follows what is new, not the table's size."""
        return self._letters.unreconciled(limit)

    def mark_reconciled(self, letters: Sequence[DeadLetter]) -> None:
        self._letters.mark_reconciled(letters)

    def redrive(self, limit: int | None = None) -> int:
        return self._letters.move_back(limit, want_ids=False).count

    def redrive_jobs(self, limit: int | None = None) -> Removed:
        """See :meth:`Queue.redrive_jobs`: the oldest dead letters first, in one
        transaction; bodies move inside the database, byte for byte."""
        return self._letters.move_back(limit, want_ids=True)

    def _purge_dead_letters(self, older_than_s: float | None) -> int:
        """See :meth:`Queue.purge_dead_letters`: a thousand per transaction."""
        cutoff = None if older_than_s is None else time.time() - older_than_s
        return self._letters.delete(cutoff)

    def _maintain_if_due(self) -> None:
        """At most once per ``RETENTION_EVERY_S`` per open queue (and on open): delete
        the dead letters past their retention, and make visible any message whose
        visibility time is not a number (written by hand: it would never be received,
        and would keep ``--until-empty`` workers waiting for ever). Index probes only,
        unless there is something to do."""
        now = time.monotonic()
        if now < self._retention_due:
            return
        self._retention_due = now + RETENTION_EVERY_S
        cutoff = time.time() - self.dead_letter_retention_s

        def probe(conn: sqlite3.Connection) -> tuple[bool, object]:
            expired = DeadLetterTable.any_expired(conn, cutoff)
            return expired, conn.execute(UNREADABLE_VISIBILITY).fetchone()

        try:
            expired, unreadable = self._db.read(probe)
            if unreadable:
                self._db.write(lambda conn: conn.execute(REPAIR_VISIBILITY))
            if expired:
                self._letters.delete(cutoff)
        except QueueError:
            # Busy or failing: this can wait (the next call tries again); a receive or an
            # open must not fail for it.
            self._retention_due = now

    def request_counts(self) -> dict[str, int]:
        return self._db.request_counts()

    def close(self) -> None:
        self._db.close()
