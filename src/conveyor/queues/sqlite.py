"""SQLiteQueue: the embedded queue, one WAL-mode SQLite file shared by processes on one machine."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

from conveyor.errors import ConfigError, LeaseLost, QueueError, TransientQueueError
from conveyor.queues.base import (
    MAX_BATCH,
    BatchResult,
    DeadLetter,
    Outgoing,
    Queue,
    QueueStats,
    Received,
    check_outgoing,
    check_queue_config,
    check_receive,
    check_visibility_timeout_s,
)
from conveyor.settings import Settings

T = TypeVar("T")

SCHEMA_VERSION = 1
#: SQS's classic limit; the message envelope stays far below it (claim check).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
#: How long one statement waits for another process's write lock before retrying.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Whole-transaction attempts before a locked database becomes a TransientQueueError.
_ATTEMPTS = 4
#: Leases per statement in a batch call (SQLite allows 32,766 parameters per statement).
_CHUNK = 500
#: A long poll checks for changes after this pause, doubling up to the ceiling.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05

#: Filesystem types on which SQLite's locking is unsafe (network and cluster filesystems;
#: Amazon EFS mounts as nfs4).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.glusterfs",
        "fuse.ceph-fuse",
        "fuse.mountpoint-s3",
        "fuse.juicefs",
    }
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at REAL NOT NULL,
        visible_at REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        lease TEXT
    )""",
    # Receive takes the head of this index: O(log n) however long the backlog.
    "CREATE INDEX IF NOT EXISTS messages_by_visible_at ON messages (visible_at)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at REAL NOT NULL,
        receive_count INTEGER NOT NULL,
        reason TEXT,
        dead_at REAL NOT NULL
    )""",
)

# One statement leases up to N visible messages: a fresh random token per message.
_CLAIM = """
    UPDATE messages
    SET visible_at = ?, receive_count = receive_count + 1, lease = lower(hex(randomblob(16)))
    WHERE id IN (SELECT id FROM messages WHERE visible_at <= ? ORDER BY visible_at LIMIT ?)
    RETURNING id, message_id, body, lease, receive_count, sent_at
"""

# Messages received more than max_receive_count times go to the dead-letter table.
_BURY = """
    INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason, dead_at)
    SELECT message_id, body, sent_at, receive_count - 1, ?, ? FROM messages WHERE id IN ({ids})
"""
_DELETE = "DELETE FROM messages WHERE id IN ({ids})"


# --- where the database lives ----------------------------------------------------------------


def _unescape_mount_path(field: str) -> str:
    r"""Decode mountinfo's octal escapes (``\040`` for a space, ``\134`` for a backslash)."""
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str, mountinfo: str) -> str | None:
    """The type of the filesystem holding absolute ``path``, per ``/proc/self/mountinfo`` text.

    The mount whose mount point is the longest prefix of ``path`` wins; among mounts on the
    same point, the last one (it hides the earlier ones). Returns None if nothing matches.
    """
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-", 6)
            mount_point, fstype = _unescape_mount_path(fields[4]), fields[separator + 1]
        except (ValueError, IndexError):
            continue  # not a mount line
        root = mount_point.rstrip("/")
        under = path == mount_point or path.startswith(root + "/")
        if under and (best is None or len(root) >= best[0]):
            best = (len(root), fstype)
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    """Whether SQLite's file locking is unsafe on this filesystem type."""
    return fstype is not None and fstype.lower() in NETWORK_FILESYSTEMS


def _read_mountinfo() -> str | None:
    """This process's mount table (Linux), or None where there is none to read."""
    try:
        return Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def check_local_filesystem(path: Path, mountinfo: str | None = None) -> None:
    """Refuse a database path on a network filesystem, where SQLite's locks do not hold.

    ``path`` need not exist yet: its nearest existing ancestor is checked (symlinks
    resolved). Without a readable mount table (not Linux) the check passes.

    Raises:
        ConfigError: the path is on NFS, EFS, SMB/CIFS or a similar filesystem.
    """
    text = _read_mountinfo() if mountinfo is None else mountinfo
    if text is None:
        return
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(os.path.realpath(existing), text)
    if is_network_filesystem(fstype):
        raise ConfigError(
            f"the SQLite queue cannot live on {path} ({fstype}): SQLite's locking is unsafe "
            "on network filesystems; use an SQS queue there (--queue / CONVEYOR_QUEUE_URL) "
            "or put queue.db on a local disk"
        )


def path_from_url(url: str) -> Path:
    """The file named by ``sqlite:///abs/path.db`` (or ``sqlite://rel/path.db``).

    Raises:
        ConfigError: not a sqlite URL, or it names no file.
    """
    prefix = "sqlite://"
    if not url.startswith(prefix) or not url[len(prefix) :].strip("/"):
        raise ConfigError(f"bad SQLite queue URL {url!r}: use sqlite:///absolute/path/queue.db")
    return Path(unquote(url[len(prefix) :])).expanduser()


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


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


# --- the queue -------------------------------------------------------------------------------


class SQLiteQueue(Queue):
    """A queue in one SQLite file, for any number of worker processes on one machine.

    WAL mode lets readers run beside the single writer; every write is a short
    ``BEGIN IMMEDIATE`` transaction, retried while another process holds the lock.
    ``synchronous=NORMAL`` under WAL survives any process crash (kill -9 included): a
    committed transaction is in the WAL file before the call returns. Only an OS crash or
    power loss can lose the last few transactions, and never corrupts the file; a worker
    crash, the failure that matters here, loses nothing.

    The instance is thread-safe (one connection behind a lock). FIFO dedup and group ids
    are ignored: this is a standard queue, at-least-once.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        visibility_timeout_s: int = 60,
        max_receive_count: int = 5,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        url: str | None = None,
    ) -> None:
        """Open (creating if needed) the queue database at ``path``.

        Raises:
            ConfigError: bad settings, a path on a network filesystem, or a file that
                cannot be opened as a conveyor queue.
        """
        check_queue_config(visibility_timeout_s, max_receive_count)
        self.path = Path(path).expanduser().absolute()
        self.url = url or f"sqlite:///{self.path}"
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receive_count = max_receive_count
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._local_writes = 0  # data_version misses this connection's own commits
        check_local_filesystem(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        self._conn: sqlite3.Connection | None = self._connect(busy_timeout_s)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> SQLiteQueue:
        """Open the queue at ``sqlite:///path``, configured from ``settings``."""
        return cls(
            path_from_url(url),
            visibility_timeout_s=settings.visibility_timeout_s,
            max_receive_count=settings.max_receive_count,
            url=url,
        )

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the queue database {self.path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
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
        """Create the tables (in a write transaction: several processes may race here)."""
        if self._schema_version(conn) == SCHEMA_VERSION:
            return
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # Transactions ------------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction, retrying it while the database is locked.

        A busy error rolls the whole transaction back, so retrying it is always safe.
        """
        pause_s = 0.01
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(pause_s)
                pause_s *= 4
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._error(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
        raise TransientQueueError(f"the queue database {self.path} stayed locked; retry")

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
        if _is_busy(exc):
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
                _CLAIM, (now + timeout_s, now, max_messages - len(received))
            ).fetchall()
            dead = [row[0] for row in rows if row[4] > self.max_receive_count]
            received.extend(
                _received(message_id, body, f"{row_id}.{token}", count, sent_at)
                for row_id, message_id, body, token, count, sent_at in rows
                if count <= self.max_receive_count
            )
            if not dead:
                break
            marks = ",".join("?" * len(dead))
            reason = f"received {self.max_receive_count} times (max_receive_count)"
            conn.execute(_BURY.format(ids=marks), (reason, now, *dead))
            conn.execute(_DELETE.format(ids=marks), dead)
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

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT message_id, body, receive_count, reason FROM dead_letters"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [DeadLetter(*row) for row in rows]

    def redrive(self, limit: int | None = None) -> int:
        count = -1 if limit is None else limit  # LIMIT -1: no limit

        def move(conn: sqlite3.Connection) -> int:
            moved = conn.execute(
                "INSERT INTO messages (message_id, body, sent_at, visible_at)"
                " SELECT message_id, body, sent_at, ? FROM dead_letters"
                " WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                (time.time(), count),
            ).rowcount
            conn.execute(
                "DELETE FROM dead_letters"
                " WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                (count,),
            )
            self._local_writes += 1
            return moved

        return self._write(move)

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
