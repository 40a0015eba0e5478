"""Write transactions on SQLite, shared by the embedded queue and the embedded ledger."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether the error is SQLite's "database is locked/busy" (retrying can help)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


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
