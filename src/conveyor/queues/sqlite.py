"""SQLiteQueue: the embedded queue, one WAL-mode SQLite file shared by processes on one machine."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from conveyor.errors import (
    BadInput,
    ConfigError,
    LeaseLost,
    QueueError,
    QueueNotFound,
    TransientQueueError,
)
from conveyor.queues.base import (
    MAX_BATCH,
    MAX_LISTED_BODY_BYTES,
    BatchResult,
    DeadLetter,
    Outgoing,
    Queue,
    QueueStats,
    Received,
    Removed,
    check_outgoing,
    check_queue_config,
    check_receive,
    check_visibility_timeout_s,
    display_text,
    message_text,
)
from conveyor.queues.sqlite_path import (
    NETWORK_FILESYSTEMS,
    check_local_filesystem,
    filesystem_type,
    is_network_filesystem,
    path_from_url,
)
from conveyor.queues.sqlite_sql import (
    BURY,
    CLAIM,
    DEAD_LETTER_INDEXES,
    DEAD_LETTERS,
    DELETE,
    DELETE_LETTERS,
    EXPIRE,
    LETTERS_BEFORE,
    LETTERS_NEWEST,
    LETTERS_UNRECONCILED,
    MARK_RECONCILED,
    MESSAGES,
    MESSAGES_INDEX,
    MOVE_BACK,
    MOVE_BACK_RETURNING,
    PURGE_LETTERS,
    REPAIR_VISIBILITY,
    SCHEMA_VERSION,
    UNREADABLE_VISIBILITY,
    UPGRADE_FROM_1,
)
from conveyor.settings import Settings
from conveyor.sqlite_tx import is_busy, retry_busy, write_transaction

# Where the database may live is its own module; its names are part of this one's API.
__all__ = [
    "NETWORK_FILESYSTEMS",
    "SCHEMA_VERSION",
    "SQLiteQueue",
    "check_local_filesystem",
    "filesystem_type",
    "is_network_filesystem",
    "path_from_url",
]

T = TypeVar("T")

#: SQS's classic limit; the message envelope stays far below it (claim check).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
#: How long one statement waits for another process's write lock before retrying.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Whole-transaction attempts before a locked database becomes a TransientQueueError.
_ATTEMPTS = 4
#: Leases per statement in a batch call (SQLite allows 32,766 parameters per statement).
_CHUNK = 500
#: SQS keeps dead letters 14 days at most; so does the SQLite queue, by default.
DEFAULT_DEAD_LETTER_RETENTION_S = 14 * 86400.0
#: Seconds between two retention passes of one open queue (one also runs on open).
RETENTION_EVERY_S = 3600.0
#: Dead letters deleted per transaction by retention and purges (writers wait no longer).
_DELETE_BATCH = 1000
#: A long poll checks for changes after this pause, doubling up to the ceiling.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05


def _split_lease(lease: str) -> tuple[int, str] | None:
    """``"<row id>.<token>"`` into its parts, or None if it is not one of ours."""
    row_text, _, token = lease.partition(".")
    try:
        row_id = int(row_text)
    except ValueError:
        return None
    return (row_id, token) if token and str(row_id) == row_text else None  # one spelling


def _received(message_id: str, body: str, lease: str, count: int, sent_at: float) -> Received:
    """Build a :class:`Received` without the frozen dataclass's ``__init__``: that one sets
    each field through ``object.__setattr__`` and made up a fifth of a receive's CPU time.
    The result is an ordinary, equal instance."""
    received: Received = object.__new__(Received)
    received.__dict__.update(
        message_id=message_id, body=body, lease=lease, receive_count=count, sent_at=sent_at
    )
    return received


def _as_int(value: object) -> int:
    """A count as stored, whatever was stored (a hand-edited row may hold text)."""
    if type(value) is int:
        return value
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):
        return 0


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _letter(row: Sequence[object]) -> DeadLetter:
    """A dead letter from a row read with ``_LETTER_COLUMNS``."""
    row_id, message_id, body, count, reason, dead_at = row
    return DeadLetter(
        message_id=display_text(message_id),
        body=message_text(body),
        receive_count=_as_int(count),
        reason=None if reason is None else display_text(reason),
        dead_at=_as_float(dead_at),
        cursor=str(row_id),
    )


def _row_id(cursor: str | None) -> int | None:
    """The dead-letter row id in a cursor of this queue (None for a letter without one).

    Raises:
        BadInput: not a cursor of this queue.
    """
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise BadInput(f"bad dead-letter cursor {cursor[:40]!r}: use a listed letter's cursor")
    return int(cursor)


def _job_ids(heads: Sequence[object]) -> list[str]:
    """The job ids in (the first bytes of) message bodies; bodies without one left out."""
    from conveyor.jobs import job_id_of  # the envelope module, imported only when needed

    return [job_id for raw in heads if (job_id := job_id_of(message_text(raw))) is not None]


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
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._local_writes = 0  # data_version misses this connection's own commits
        self._retention_due = 0.0  # time.monotonic() of the next retention pass
        check_local_filesystem(self.path)
        if create:
            self._create_file()
        elif not self.path.is_file():
            raise QueueNotFound(f"no queue at {self.url}: nothing submitted yet, or a mistyped URL")
        self._conn: sqlite3.Connection | None = self._connect(busy_timeout_s, create)
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
        # An existing file only, when not creating: "rw" never creates the database. One
        # leading slash: "file://x" would name a host.
        path = "/" + str(self.path).lstrip("/")
        target = f"file:{quote(path)}?mode={'rwc' if create else 'rw'}"
        try:
            conn = sqlite3.connect(
                target,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the queue database {self.path}: {exc}") from exc
        try:
            mode = retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"the queue database {self.path} cannot use WAL mode (got {mode!r}): "
                    "put it on a local disk"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA journal_size_limit=67108864")
            # The default 2 MB page cache thrashes once the backlog's index outgrows it.
            conn.execute("PRAGMA cache_size=-65536")
            if self._schema_version(conn) != SCHEMA_VERSION:
                self._run(conn, self._migrate)
        except sqlite3.DatabaseError as exc:
            conn.close()
            name = getattr(exc, "sqlite_errorname", "") or ""
            if is_busy(exc) or name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
                raise self._error(exc) from exc  # transient: locked, full or failing disk
            raise ConfigError(f"{self.path} is not a usable queue database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

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

    def _write(
        self, work: Callable[[sqlite3.Connection], T], kind: str | None = None, entries: int = 1
    ) -> T:
        """Run ``work`` in a write transaction; count it as ``kind`` requests (SQS billing:
        one per batch of up to 10 entries)."""
        with self._lock:
            if kind is not None:
                self._counts[kind] += -(-entries // MAX_BATCH)
            return self._run(self._connection(), work)

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return work(self._connection())
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

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

    # Sending and receiving ---------------------------------------------------------------

    def send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        check_outgoing(messages, self.max_message_bytes)
        if not messages:
            return []
        now = time.time()
        rows = [(os.urandom(16).hex(), m.body, now, now + m.delay_s) for m in messages]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO messages (message_id, body, sent_at, visible_at) VALUES (?,?,?,?)",
                rows,
            )
            self._local_writes += 1

        self._write(insert, "send", len(rows))
        return [row[0] for row in rows]

    def receive(
        self, max_messages: int, wait_s: float, visibility_timeout_s: int | None = None
    ) -> list[Received]:
        """See :meth:`Queue.receive`. Waiting takes no database lock: it watches
        ``data_version`` and the earliest lease expiry, and claims again only when one moved."""
        check_receive(max_messages, wait_s)
        timeout_s = check_visibility_timeout_s(
            self.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        )
        deadline = time.monotonic() + wait_s
        self._maintain_if_due()
        kind: str | None = "receive"  # one long poll is one request
        while True:
            received = self._write(lambda conn: self._claim(conn, max_messages, timeout_s), kind)
            kind = None
            if received or time.monotonic() >= deadline:
                return received
            self._wait_for_change(deadline)

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
                count = stored_count if type(stored_count) is int else _as_int(stored_count)
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
                        sent_at if type(sent_at) is float else _as_float(sent_at),
                    )
                )
            if not dead:
                break
            marks = ",".join("?" * len(dead))
            reason = f"received {self.max_receive_count} times (max_receive_count)"
            conn.execute(BURY.format(ids=marks), (reason, now, *dead))
            conn.execute(DELETE.format(ids=marks), dead)
        return received

    def _wait_for_change(self, deadline: float) -> None:
        """Sleep until another writer committed, a message became visible, or the deadline."""

        def snapshot(conn: sqlite3.Connection) -> tuple[tuple[int, int], float | None]:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            due = conn.execute("SELECT min(visible_at) FROM messages").fetchone()[0]
            return (version, self._local_writes), due

        start, due = self._read(snapshot)
        pause_s = _POLL_FIRST_S
        while (remaining_s := deadline - time.monotonic()) > 0:
            time.sleep(min(pause_s, remaining_s))
            pause_s = min(pause_s * 2, _POLL_MAX_S)
            if due is not None and time.time() >= due:
                return
            if self._read(snapshot)[0] != start:
                return

    # Leases --------------------------------------------------------------------------------

    def _by_lease(
        self,
        kind: str,
        leases: Sequence[str],
        statement: str,
        params: Sequence[object],
        *,
        then: str | None = None,
        then_params: Sequence[object] = (),
    ) -> BatchResult:
        """Act on the messages these leases hold, in one transaction for the whole batch.

        ``statement`` (``... WHERE id IN ({ids}) AND lease IN ({tokens})``) yields the
        ``(id, lease)`` rows it acted on (or, with ``then``, the rows ``then`` acts on by
        id). A lease is ok only when its exact (id, token) pair came back, so a stale lease
        never touches a message that someone else received since.
        """
        result = BatchResult()
        if not leases:
            return result
        ids: list[int] = []
        tokens: list[str] = []
        for lease in leases:
            pair = _split_lease(lease)
            if pair is None:
                result.failed[lease] = "not a lease of this queue"
            else:
                ids.append(pair[0])
                tokens.append(pair[1])

        def run(conn: sqlite3.Connection) -> set[str]:
            done: set[str] = set()
            for start in range(0, len(ids), _CHUNK):  # SQLite caps a statement's parameters
                chunk_ids, chunk_tokens = (
                    ids[start : start + _CHUNK],
                    tokens[start : start + _CHUNK],
                )
                marks = ",".join("?" * len(chunk_ids))
                sql = statement.format(ids=marks, tokens=marks)
                rows = conn.execute(sql, (*params, *chunk_ids, *chunk_tokens)).fetchall()
                if then is not None and rows:
                    held = [row_id for row_id, _ in rows]
                    conn.execute(then.format(ids=",".join("?" * len(held))), (*then_params, *held))
                    self._local_writes += 1
                done.update(f"{row_id}.{token}" for row_id, token in rows)
            return done

        done = self._write(run, kind, len(leases))
        for lease in leases:
            if lease in done:
                result.ok.append(lease)
            elif lease not in result.failed:
                result.failed[lease] = "stale lease: the message was received again or deleted"
        return result

    def ack_batch(self, leases: Sequence[str]) -> BatchResult:
        return self._by_lease(
            "ack",
            leases,
            "DELETE FROM messages WHERE id IN ({ids}) AND lease IN ({tokens}) RETURNING id, lease",
            (),
        )

    def extend_batch(self, leases: Sequence[str], visibility_timeout_s: int) -> BatchResult:
        check_visibility_timeout_s(visibility_timeout_s)
        return self._by_lease(
            "extend",
            leases,
            "UPDATE messages SET visible_at = ? WHERE id IN ({ids}) AND lease IN ({tokens})"
            " RETURNING id, lease",
            (time.time() + visibility_timeout_s,),
        )

    def release_batch(self, leases: Sequence[str], delay_s: int = 0) -> BatchResult:
        check_visibility_timeout_s(delay_s)
        # A released message has no holder: its lease dies, and until the delay ends it
        # counts as delayed, not in flight. RETURNING would give the new (NULL) lease, so
        # the held leases are read first, in the same transaction.
        return self._by_lease(
            "release",
            leases,
            "SELECT id, lease FROM messages WHERE id IN ({ids}) AND lease IN ({tokens})",
            (),
            then="UPDATE messages SET visible_at = ?, lease = NULL WHERE id IN ({ids})",
            then_params=(time.time() + delay_s,),
        )

    def dead_letter(self, lease: str, reason: str) -> None:
        pair = _split_lease(lease)

        def move(conn: sqlite3.Connection) -> bool:
            if pair is None:
                return False
            moved = conn.execute(
                "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason,"
                " dead_at) SELECT message_id, body, sent_at, receive_count, ?, ?"
                " FROM messages WHERE id = ? AND lease = ?",
                (reason, time.time(), *pair),
            ).rowcount
            conn.execute("DELETE FROM messages WHERE id = ? AND lease = ?", pair)
            return moved == 1

        if not self._write(move, "dead_letter"):
            raise LeaseLost("lease lost: the message was received again or deleted")

    # Inspection and maintenance --------------------------------------------------------------

    def stats(self) -> QueueStats:
        now = time.time()
        row = self._read(
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
        return self._write(lambda conn: conn.execute("DELETE FROM messages").rowcount)

    def purge_jobs(self) -> Removed:
        """See :meth:`Queue.purge_jobs`: one transaction, read in chunks (a body's first
        :data:`MAX_LISTED_BODY_BYTES` only: the job id is at its start)."""

        def purge(conn: sqlite3.Connection) -> Removed:
            count, job_ids = 0, []
            while True:
                heads = conn.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages ORDER BY id LIMIT ?)"
                    " RETURNING substr(CAST(body AS BLOB), 1, ?)",
                    (_DELETE_BATCH, MAX_LISTED_BODY_BYTES),
                ).fetchall()
                count += len(heads)
                job_ids += _job_ids([head for (head,) in heads])
                if len(heads) < _DELETE_BATCH:
                    return Removed(count, job_ids)

        return self._write(purge)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Queue.dead_letters`: newest first."""
        return self.dead_letter_page(limit)

    def dead_letter_page(self, limit: int = 100, before: str | None = None) -> list[DeadLetter]:
        """See :meth:`Queue.dead_letter_page`: a walk down the primary key, newest first."""
        if limit <= 0:
            return []
        below = _row_id(before)
        sql: str = LETTERS_NEWEST
        params: tuple[int, ...] = (MAX_LISTED_BODY_BYTES, limit)
        if below is not None:
            sql, params = LETTERS_BEFORE, (MAX_LISTED_BODY_BYTES, below, limit)
        rows = self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_letter(row) for row in rows]

    def unreconciled_dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`Queue.unreconciled_dead_letters`: read through an index that holds
        only unreconciled letters, so the cost follows what is new, not the table's size."""
        if limit <= 0:
            return []
        rows = self._read(
            lambda conn: conn.execute(
                LETTERS_UNRECONCILED, (MAX_LISTED_BODY_BYTES, limit)
            ).fetchall()
        )
        return [_letter(row) for row in rows]

    def mark_reconciled(self, letters: Sequence[DeadLetter]) -> None:
        ids = [row_id for letter in letters if (row_id := _row_id(letter.cursor)) is not None]
        if not ids:
            return

        def mark(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                conn.execute(MARK_RECONCILED.format(ids=",".join("?" * len(chunk))), chunk)

        self._write(mark)

    def redrive(self, limit: int | None = None) -> int:
        return self._move_back(limit, want_ids=False).count

    def redrive_jobs(self, limit: int | None = None) -> Removed:
        """See :meth:`Queue.redrive_jobs`: the oldest dead letters first, in one
        transaction; bodies move inside the database, byte for byte."""
        return self._move_back(limit, want_ids=True)

    def _move_back(self, limit: int | None, *, want_ids: bool) -> Removed:
        count = -1 if limit is None else limit  # LIMIT -1: no limit
        template = MOVE_BACK_RETURNING if want_ids else MOVE_BACK

        def move(conn: sqlite3.Connection) -> Removed:
            ids = [
                row_id
                for (row_id,) in conn.execute(
                    "SELECT id FROM dead_letters ORDER BY id LIMIT ?", (count,)
                )
            ]
            moved, job_ids = 0, []
            now = time.time()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                params: tuple[object, ...] = (now, *chunk)
                if want_ids:
                    params += (MAX_LISTED_BODY_BYTES,)
                cursor = conn.execute(template.format(ids=marks), params)
                if want_ids:
                    heads = cursor.fetchall()
                    moved += len(heads)
                    job_ids += _job_ids([head for (head,) in heads])
                else:
                    moved += cursor.rowcount
                conn.execute(DELETE_LETTERS.format(ids=marks), chunk)
            self._local_writes += 1
            return Removed(moved, job_ids if want_ids else None)

        return self._write(move)

    def purge_dead_letters(self, older_than_s: float | None = None) -> int:
        """See :meth:`Queue.purge_dead_letters`: a thousand per transaction."""
        if older_than_s is not None and not older_than_s >= 0:
            raise ConfigError(f"bad age {older_than_s!r}: seconds >= 0")
        cutoff = None if older_than_s is None else time.time() - older_than_s
        return self._delete_dead_letters(cutoff)

    def _delete_dead_letters(self, cutoff: float | None) -> int:
        """Delete the dead letters that died before ``cutoff`` (all if None), in batches."""
        sql, params = (PURGE_LETTERS, ()) if cutoff is None else (EXPIRE, (cutoff,))
        deleted = 0
        while True:
            n = self._write(lambda conn: conn.execute(sql, (*params, _DELETE_BATCH)).rowcount)
            deleted += n
            if n < _DELETE_BATCH:
                return deleted

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

        def probe(conn: sqlite3.Connection) -> tuple[object, object]:
            expired = conn.execute(
                "SELECT 1 FROM dead_letters WHERE dead_at < ? LIMIT 1", (cutoff,)
            ).fetchone()
            return expired, conn.execute(UNREADABLE_VISIBILITY).fetchone()

        try:
            expired, unreadable = self._read(probe)
            if unreadable:
                self._write(lambda conn: conn.execute(REPAIR_VISIBILITY))
            if expired:
                self._delete_dead_letters(cutoff)
        except QueueError:
            # Busy or failing: this can wait (the next call tries again); a receive or an
            # open must not fail for it.
            self._retention_due = now

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
