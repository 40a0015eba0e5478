"""The SQLite ledger's file: where it may live, and how it is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ConfigError, StorageError
from conveyor.ledger import open_ledger
from conveyor.sqlite_tx import open_wal

# --- where the SQLite ledger may live -------------------------------------------------------------


def test_the_sqlite_ledger_is_refused_on_nfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conveyor.queues.sqlite_path as queue_sqlite

    mounts = f"1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / {tmp_path} rw - nfs4 fs-1:/ rw\n"
    monkeypatch.setattr(queue_sqlite, "_read_mountinfo", lambda: mounts)

    with pytest.raises(ConfigError) as caught:
        open_ledger(f"sqlite://{tmp_path / 'state' / 'ledger.db'}")

    assert "CONVEYOR_LEDGER_URL" in caught.value.message
    assert caught.value.exit_code == 78


# --- opening the file ----------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"not a database, but long enough to have a header" * 4)

    with pytest.raises(ConfigError, match="is not a usable ledger database"):
        open_ledger(f"sqlite://{path}")


def test_open_wal_sets_the_pragmas_and_runs_the_setup(tmp_path: Path) -> None:
    seen: list[str] = []
    conn = open_wal(
        tmp_path / "x.db",
        "test",
        timeout_s=1.0,
        pragmas=["PRAGMA cache_size=-1024"],
        fail=StorageError,
        create=True,
        setup=lambda c: seen.append(c.execute("PRAGMA journal_mode").fetchone()[0]),
    )
    try:
        assert seen == ["wal"]
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -1024
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        conn.close()


def test_open_wal_opens_only_an_existing_file_unless_creating(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the test database"):
        open_wal(tmp_path / "missing.db", "test", timeout_s=1.0, pragmas=[], fail=StorageError)
    assert not (tmp_path / "missing.db").exists()
