"""SQLite for the embedded queue and ledger: WAL-mode connections, and write transactions
retried while another process holds the lock."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from conveyor.errors import ConfigError

T = TypeVar("T")


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether the error is SQLite's "database is locked/busy" (retrying can help)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def open_wal(
    path: Path,
    what: str,
    *,
    timeout_s: float,
    pragmas: Sequence[str],
    fail: Callable[[sqlite3.Error], Exception],
    create: bool = False,
    setup: Callable[[sqlite3.Connection], object] | None = None,
) -> sqlite3.Connection:
    """Open the database file at ``path`` (an absolute path) in WAL mode with
    ``synchronous=NORMAL`` (a committed transaction survives any process crash), then run
    ``pragmas`` and ``setup`` on it; the connection autocommits and may cross threads.

    Args:
        what: the database's name in errors ("ledger", "queue").
        fail: turns a transient error (locked, full or failing disk) into the caller's.
        create: create a missing file (else only an existing one is opened).

    Raises:
        ConfigError: the file cannot be opened, is not a database, or refuses WAL mode.
    """
    # "rw" never creates the database. One leading slash: "file://x" would name a host.
    target = f"file:{quote('/' + str(path).lstrip('/'))}?mode={'rwc' if create else 'rw'}"
    try:
        conn = sqlite3.connect(
            target, uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the {what} database {path}: {exc}") from exc
    try:
        mode = retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise ConfigError(
                f"the {what} database {path} cannot use WAL mode (got {mode!r}): "
                "put it on a local disk"
            )
        conn.execute("PRAGMA synchronous=NORMAL")
        for pragma in pragmas:
            conn.execute(pragma)
        if setup is not None:
            setup(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        name = getattr(exc, "sqlite_errorname", "") or ""
        if is_busy(exc) or name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
            raise fail(exc) from exc  # transient: locked, full or failing disk
        raise ConfigError(f"{path} is not a usable {what} database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def write_transaction(
    conn: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], T],
    *,
    attempts: int,
    pause_s: float,
    fail: Callable[[sqlite3.Error], Exception],
    locked: Callable[[], Exception],
) -> T:
    """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retried while the database is
    locked: a busy error rolls the whole transaction back, so a retry is always safe.

    Args:
        attempts: tries in all; the pause before each retry grows fourfold from ``pause_s``.
        fail: turns any other SQLite error into the caller's error (raised from it).
        locked: the error raised when the database stayed locked through every try.
    """
    for attempt in range(attempts):
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
        except sqlite3.Error as exc:
            if not is_busy(exc):
                raise fail(exc) from exc
    raise locked()


def retry_busy(work: Callable[[], T], *, attempts: int = 8, pause_s: float = 0.02) -> T:
    """Call ``work``, again while SQLite says the database is locked: switching to WAL
    mode while another process creates the same database fails at once with "database is
    locked", without waiting on the busy timeout. The last busy error is raised as is."""
    for attempt in range(attempts):
        try:
            return work()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts - 1:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
