"""The embedded ledger: one SQLite file in WAL mode, beside the SQLite queue.

Safe for any number of processes on one machine; refused on NFS/EFS, where SQLite's locks
do not hold (use the PostgreSQL ledger there).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

from conveyor.errors import ConfigError, StorageError, StorageFull
from conveyor.jobs import JobState
from conveyor.ledger import group_sql, schema
from conveyor.ledger.base import (
    SCHEMA_VERSION,
    EventRow,
    JobRecord,
    check_writer_id,
    new_writer_id,
)
from conveyor.ledger.group_sql import Touch, Tx
from conveyor.ledger.sql import SQLLedger, decode_record
from conveyor.queues.sqlite_path import check_local_filesystem, path_from_url
from conveyor.sqlite_tx import is_busy, retry_busy, write_transaction

T = TypeVar("T")

#: How long a statement waits for another process's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_S = 15.0
#: Tries of a write transaction that found the database locked.
_ATTEMPTS = 3
#: Ids per ``IN (...)`` list (SQLite caps the number of parameters of one statement).
_IDS_PER_QUERY = 500

# Connections a forked child inherited: never used or closed there (closing could touch
# the parent's locks), only kept from the garbage collector.
_ABANDONED: list[sqlite3.Connection] = []


def _ledger_path(url: str) -> Path:
    """The file of a ``sqlite:///abs/path`` ledger URL.

    Raises:
        ConfigError: the URL names no file.
    """
    try:
        return path_from_url(url)
    except ConfigError:
        raise ConfigError(
            f"bad SQLite ledger URL {url!r}: use sqlite:///absolute/path/ledger.db"
        ) from None


def _check_local(path: Path) -> None:
    """Refuse a ledger file on a network filesystem (the queue's check, the ledger's words).

    Raises:
        ConfigError: the path is on NFS, EFS, SMB/CIFS or similar.
    """
    try:
        check_local_filesystem(path)
    except ConfigError:
        raise ConfigError(
            f"the SQLite ledger cannot live on {path}: SQLite's locking is unsafe on network "
            "filesystems; set CONVEYOR_LEDGER_URL (--ledger) to a postgresql:// URL"
        ) from None


def _create_file(path: Path) -> None:
    """Create the database file readable by its owner only; SQLite gives its ``-wal`` and
    ``-shm`` files the same mode. A missing directory is made ``0700``."""
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {path.parent}: {exc.strerror}") from exc
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create the ledger database {path}: {exc.strerror}") from exc
    os.close(fd)


class SQLiteLedger(SQLLedger):
    """The ledger in one SQLite file, for every process on one machine.

    WAL mode lets readers run beside the one writer; each write is a short ``BEGIN
    IMMEDIATE`` transaction, retried while another process holds the lock.
    ``synchronous=NORMAL`` survives any process crash (a committed transaction is in the
    WAL when the call returns); only an OS crash may lose the last few.

    Thread-safe: one connection behind a lock. A forked child opens its own connection.
    """

    _DUE_SQL = group_sql.SQLITE_DUE

    def __init__(
        self,
        path: Path | str,
        *,
        url: str | None = None,
        create: bool = True,
        writer: str | None = None,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        check_schema: bool = True,
    ) -> None:
        """Open the ledger file at ``path`` (creating it and its schema if ``create``).

        ``check_schema=False`` opens an older schema too (for ``conveyor ledger migrate``).

        Raises:
            ConfigError: the path is on a network filesystem or is not a usable database.
            LedgerNotFound: ``create`` is False and there is no ledger there.
            SchemaMismatch: the schema is newer than this code's, or needs a migrate.
        """
        # sqlite:////abs/path (four slashes) names /abs/path too, not the POSIX //abs/path.
        self.path = Path("/" + str(Path(path).expanduser().absolute()).lstrip("/"))
        self.url = url or f"sqlite:///{self.path}"
        self.writer = new_writer_id() if writer is None else check_writer_id(writer)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        _check_local(self.path)
        if create:
            _create_file(self.path)
        elif not self.path.is_file():
            raise schema.not_found(self.url)
        self._conn: sqlite3.Connection | None = self._connect()
        try:
            self._open_schema(create=create, check=check_schema)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        create: bool = True,
        writer: str | None = None,
        check_schema: bool = True,
    ) -> SQLiteLedger:
        """Open the ledger at ``sqlite:///abs/path`` (see :meth:`__init__`)."""
        return cls(
            _ledger_path(url), url=url, create=create, writer=writer, check_schema=check_schema
        )

    # --- connections and transactions -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the ledger database {self.path}: {exc}") from exc
        try:
            mode = retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"the ledger database {self.path} cannot use WAL mode (got {mode!r}): "
                    "put it on a local disk"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint (an fsync of the database) every 8,192 WAL pages rather than
            # 1,000: each worker transaction writes a dozen pages.
            conn.execute("PRAGMA wal_autocheckpoint=8192")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("PRAGMA cache_size=-32768")
        except sqlite3.DatabaseError as exc:
            conn.close()
            name = getattr(exc, "sqlite_errorname", "") or ""
            if is_busy(exc) or name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
                raise self._error(exc) from exc  # transient: locked, full or failing disk
            raise ConfigError(f"{self.path} is not a usable ledger database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_schema(self, *, create: bool, check: bool) -> None:
        version = self.schema_version()
        if version == 0 and not create:
            raise schema.not_found(self.url)
        schema.check_version(version, self.url, upgrading=not check)
        if version == 0:
            self.migrate()

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process (a forked child opens its own). Under the lock."""
        if self._pid != os.getpid():
            if self._conn is not None:
                _ABANDONED.append(self._conn)
                self._conn = self._connect()
            self._pid = os.getpid()
        if self._conn is None:
            raise StorageError(f"the ledger {self.url} is closed")
        return self._conn

    def _locked(self) -> threading.Lock:
        if self._pid != os.getpid():
            self._lock = threading.Lock()  # another thread may have held it at the fork
        return self._lock

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction, retried while the database is locked (a
        busy error rolls the whole transaction back, so a retry is always safe)."""
        with self._locked():
            return write_transaction(
                self._connection(),
                work,
                attempts=_ATTEMPTS,
                pause_s=0.02,
                fail=self._error,
                locked=lambda: StorageError(
                    f"the ledger database {self.path} stayed locked; retry"
                ),
            )

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._locked():
            conn = self._connection()
            try:
                return work(conn)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(lambda conn: conn.execute(sql, params).fetchall())

    def _error(self, exc: sqlite3.Error) -> StorageError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_FULL"):
            return StorageFull(f"the ledger database {self.path} is full: free disk space")
        if is_busy(exc):
            return StorageError(f"the ledger database {self.path} is locked ({exc}); retry")
        return StorageError(f"the ledger database {self.path} failed: {exc}")

    # --- writing ------------------------------------------------------------------------------

    def _transaction(self, work: Callable[[Tx], T]) -> T:
        return self._write(lambda conn: work(_SQLiteTx(conn)))

    def _record_worker_stats(self, writer: str, counts: dict[str, int], at: float) -> None:
        rows = [(writer, kind, n, at) for kind, n in counts.items()]

        def replace(conn: sqlite3.Connection) -> None:
            conn.execute(schema.DELETE_WORKER_STATS, (writer,))
            conn.executemany(schema.INSERT_WORKER_STAT, rows)

        self._write(replace)

    def _prune_writers(self, cutoff: float) -> None:
        self._write(lambda conn: conn.execute(schema.PRUNE_WRITERS, (cutoff,)))

    # --- reading ------------------------------------------------------------------------------

    def _get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        found: dict[str, JobRecord] = {}
        for start in range(0, len(job_ids), _IDS_PER_QUERY):
            chunk = job_ids[start : start + _IDS_PER_QUERY]
            sql = f"{schema.SELECT_JOBS}IN ({','.join('?' * len(chunk))})"
            for row in self._query(sql, chunk):
                record = decode_record(row)
                found[record.job_id] = record
        return found

    # --- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        return self._read(_version)

    def migrate(self) -> tuple[int, int]:
        def upgrade(conn: sqlite3.Connection) -> tuple[int, int]:
            before = _version(conn)  # again, under the write lock: others may race here
            schema.check_version(before, self.url, upgrading=True)
            for step in schema.SQLITE_STEPS[before:]:
                for statement in step:
                    conn.execute(statement)
            if before != SCHEMA_VERSION:
                conn.execute(schema.WRITE_VERSION, (str(SCHEMA_VERSION),))
            return before, SCHEMA_VERSION

        return self._write(upgrade)

    def close(self) -> None:
        with self._locked():
            conn, self._conn = self._conn, None
            if conn is not None:
                if self._pid == os.getpid():
                    conn.close()
                else:
                    _ABANDONED.append(conn)


# --- one batch of events: the upserts decide, and the counts and history follow ------------

_SNAPSHOT = (
    "SELECT job_id, state, task, rank, attempts, worker, group_id, completes "
    "FROM conveyor_jobs WHERE job_id IN ({marks})"
)
_TIMES = "SELECT job_id, started_at, finished_at FROM conveyor_jobs WHERE job_id IN ({marks})"
_BUMP = (
    "INSERT INTO conveyor_counts (task, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (task, state) DO UPDATE SET n = n + excluded.n"
)


class _Seen(NamedTuple):
    """What a batch needs to know of a job: its state, what its history rows carry, and
    the group it counts in."""

    state: str
    task: str | None
    rank: int
    attempts: int
    worker: str | None
    group: str | None = None
    completes: int = 0

    @property
    def counted_in(self) -> str | None:
        """The group whose counts include this job (not a group's completion job)."""
        return None if self.completes else self.group


class _SQLiteTx:
    """A write transaction on the connection (the database is locked: no row locks)."""

    lock = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def apply(self, rows: Sequence[EventRow]) -> dict[str, Touch]:
        return _apply(self._conn, rows)

    def lock_group(self, group_id: str) -> None:
        """Nothing to do: the transaction holds the database's write lock."""


def _snapshot(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, _Seen]:
    seen: dict[str, _Seen] = {}
    for start in range(0, len(job_ids), _IDS_PER_QUERY):
        chunk = job_ids[start : start + _IDS_PER_QUERY]
        sql = _SNAPSHOT.format(marks=",".join("?" * len(chunk)))
        for job_id, *fields in conn.execute(sql, chunk):
            seen[job_id] = _Seen(*fields)
    return seen


def _apply(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> dict[str, Touch]:
    """Apply a batch inside a write transaction; return the groups whose jobs it changed.

    The upserts decide every job's row. Triggers would do the rest but make each upsert
    three times slower here, so the counts (and the groups' counts) are adjusted from the
    batch's jobs as read before and after (exact: the transaction holds the write lock),
    and the history rows follow the same rank rule over the batch (:func:`_history`).
    """
    job_ids = list(dict.fromkeys(row.job_id for row in rows))
    params = [
        schema.redrive_params(row.job_id, row.at, row.worker)
        if row.redrive
        else schema.event_params(row)
        for row in rows
    ]
    before = _snapshot(conn, job_ids)
    moves = _history(before, rows, params)
    start = 0
    for redrive, group in schema.runs(rows):
        end = start + len(group)
        conn.executemany(schema.REDRIVE if redrive else schema.UPSERT, params[start:end])
        start = end
    after = _snapshot(conn, job_ids)
    delta: Counter[tuple[str, str]] = Counter()
    for seen, sign in ((before, -1), (after, 1)):
        for job in seen.values():
            delta[(job.task or "", job.state)] += sign
    conn.executemany(_BUMP, [(task, state, n) for (task, state), n in delta.items() if n])
    conn.executemany(schema.INSERT_TRANSITION, moves)
    return _count_groups(conn, before, after)


def _count_groups(
    conn: sqlite3.Connection, before: dict[str, _Seen], after: dict[str, _Seen]
) -> dict[str, Touch]:
    """Move the batch's grouped jobs in their groups' counts; the groups touched (any
    change may decide: the database is locked, deciding costs no wait).

    A job without a group costs one comparison here. A job joining its group (or entering
    a state in it) passes its start and finish times to the group's first start and last
    finish.
    """
    touched: dict[str, Touch] = {}
    delta: dict[str, list[int]] = {}
    entering: dict[str, str] = {}
    for job_id, new in after.items():
        old = before.get(job_id)
        if new.group is None and (old is None or old.group is None):
            continue
        if old is not None and (old.state, old.group, old.completes) == (
            new.state,
            new.group,
            new.completes,
        ):
            continue
        if new.group is not None:
            touch = Touch.COMPLETION if new.completes else Touch.COUNTED | Touch.DECISIVE
            touched[new.group] = touched.get(new.group, Touch(0)) | touch
        for seen, sign in ((old, -1), (new, 1)):
            if seen is not None and seen.counted_in is not None:
                counts = delta.setdefault(seen.counted_in, [0] * len(group_sql.STATES))
                counts[_STATE_INDEX[seen.state]] += sign
        if new.counted_in is not None:
            entering[job_id] = new.counted_in
    if not delta:
        return touched
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for job_id, (started, finished) in _times(conn, list(entering)).items():
        group = entering[job_id]
        if started is not None and (group not in first or started < first[group]):
            first[group] = started
        if finished is not None and (group not in last or finished > last[group]):
            last[group] = finished
    for group, counts in sorted(delta.items()):
        conn.execute(group_sql.BUMP, (group, *counts, first.get(group), last.get(group)))
    return touched


_STATE_INDEX = {state.value: n for n, state in enumerate(group_sql.STATES)}


def _times(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """(started_at, finished_at) of these jobs."""
    found: dict[str, tuple[Any, Any]] = {}
    for start in range(0, len(job_ids), _IDS_PER_QUERY):
        chunk = job_ids[start : start + _IDS_PER_QUERY]
        for job_id, started, finished in conn.execute(
            _TIMES.format(marks=",".join("?" * len(chunk))), chunk
        ):
            found[job_id] = (started, finished)
    return found


def _history(
    before: dict[str, _Seen], rows: Sequence[EventRow], params: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The history rows of a batch: one per event that moved its job (a larger rank, or a
    redrive of a failed job), as the upsert's rules leave the job after it."""
    jobs = dict(before)
    moves: list[tuple[Any, ...]] = []
    for row, param in zip(rows, params, strict=True):
        old = jobs.get(row.job_id)
        if row.redrive:
            if old is None or old.state != JobState.FAILED.value:
                continue
            new, error = _Seen(JobState.QUEUED.value, old.task, 0, 0, row.worker), None
        elif old is None:
            new = _Seen(row.state.value, row.task, row.rank, row.attempt, row.worker)
            error = param[14]
        else:
            win = row.rank > old.rank
            new = _Seen(
                row.state.value if win else old.state,
                _coalesce(row.task, old.task) if win else _coalesce(old.task, row.task),
                max(row.rank, old.rank),
                max(row.attempt, old.attempts),
                _coalesce(row.worker, old.worker) if win else _coalesce(old.worker, row.worker),
            )
            jobs[row.job_id] = new
            if not win:
                continue
            error = param[14]
        jobs[row.job_id] = new
        moves.append((row.job_id, new.state, new.attempts, row.at, new.worker, error))
    return moves


def _coalesce(first: str | None, second: str | None) -> str | None:
    return second if first is None else first


def _version(conn: sqlite3.Connection) -> int:
    """The schema version in the database (0 if it has none)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conveyor_meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(schema.READ_VERSION).fetchone()
    return 0 if row is None else int(row[0])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
