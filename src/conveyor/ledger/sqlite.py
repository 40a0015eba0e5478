"""The embedded ledger: one SQLite file in WAL mode, beside the SQLite queue.

Safe for any number of processes on one machine; refused on NFS/EFS, where SQLite's locks
do not hold (use the PostgreSQL ledger there).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from conveyor.errors import ConfigError, StorageError, StorageFull
from conveyor.ledger import group_sql, job_sql, schema
from conveyor.ledger.checks import check_writer_id, new_writer_id
from conveyor.ledger.decode import decode_record
from conveyor.ledger.group_sql import Tx
from conveyor.ledger.records import JobRecord
from conveyor.ledger.schema import SCHEMA_VERSION
from conveyor.ledger.sql import SQLLedger
from conveyor.ledger.sqlite_batch import SQLiteTx, in_lists
from conveyor.queues.sqlite_path import check_local_filesystem, path_from_url
from conveyor.sqlite_tx import is_busy, open_wal, write_transaction

T = TypeVar("T")

#: How long a statement waits for another process's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_S = 15.0
#: Tries of a write transaction that found the database locked.
_ATTEMPTS = 3

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
        return open_wal(
            self.path,
            "ledger",
            timeout_s=self._busy_timeout_s,
            pragmas=[
                # A checkpoint (an fsync of the database) every 8,192 WAL pages rather than
                # 1,000: each worker transaction writes a dozen pages.
                "PRAGMA wal_autocheckpoint=8192",
                "PRAGMA journal_size_limit=67108864",
                "PRAGMA cache_size=-32768",
            ],
            fail=self._error,
        )

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
        return self._write(lambda conn: work(SQLiteTx(conn)))

    # --- reading ------------------------------------------------------------------------------

    def _get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        found: dict[str, JobRecord] = {}
        for marks, chunk in in_lists(job_ids):
            for row in self._query(f"{job_sql.SELECT_JOBS}IN ({marks})", chunk):
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


def _version(conn: sqlite3.Connection) -> int:
    """The schema version in the database (0 if it has none)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conveyor_meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(schema.READ_VERSION).fetchone()
    return 0 if row is None else int(row[0])
