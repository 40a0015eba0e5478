"""The SQLite transaction helpers shared by the embedded queue and ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.sqlite_tx import is_busy, retry_busy, write_transaction


def _flaky(failures: int, error: str) -> tuple[list[int], object]:
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise sqlite3.OperationalError(error)
        return "done"

    return calls, work


def test_retry_busy_retries_a_locked_database_until_it_answers() -> None:
    calls, work = _flaky(3, "database is locked")
    assert retry_busy(work, pause_s=0.001) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4


def test_retry_busy_gives_up_after_its_attempts_with_the_busy_error() -> None:
    calls, work = _flaky(10, "database is locked")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_busy(work, attempts=3, pause_s=0.001)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_retry_busy_does_not_retry_other_errors() -> None:
    calls, work = _flaky(1, "no such table: jobs")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_busy(work, pause_s=0.001)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_write_transaction_rolls_back_on_error_and_maps_it(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")

    def work(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        c.execute("INSERT INTO nowhere VALUES (1)")

    with pytest.raises(RuntimeError, match="mapped"):
        write_transaction(
            conn,
            work,
            attempts=2,
            pause_s=0.001,
            fail=lambda exc: RuntimeError(f"mapped: {exc}"),
            locked=lambda: RuntimeError("locked"),
        )
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert not conn.in_transaction
    assert is_busy(sqlite3.OperationalError("database is locked"))
    assert not is_busy(sqlite3.OperationalError("disk I/O error"))
