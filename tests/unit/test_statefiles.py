"""Owner-only state files and directories, whatever the umask (statefiles.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.atomic import atomic_output
from conveyor.statefiles import OWNER_ONLY, StateMode, create_state_file, state_mode
from conveyor.storage import (
    Storage,
)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    root = tmp_path / "root"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "a.csv").write_text("ID,Value\n1,2\n")
    (root / "_conveyor").mkdir()
    (root / "_conveyor" / "queue.db").write_text("state")
    return Storage(root)


# --- conveyor's own state files ------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_owner_only_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    storage = Storage(tmp_path / "root")

    claims = storage.make_state_dir("claims")
    database = create_state_file(storage.state_dir / "queue.db")
    with atomic_output(claims / "abc.json", state=OWNER_ONLY) as temp:
        temp.write_text("{}")

    assert mode(storage.state_dir) == mode(claims) == 0o700
    assert mode(database) == mode(claims / "abc.json") == 0o600
    assert mode(storage.root) == 0o755  # the root is the user's, as are outputs


def test_state_mode_may_admit_the_group(tmp_path: Path, open_umask: None) -> None:
    group = state_mode(group=True)
    storage = Storage(tmp_path / "root")

    ledger = storage.make_state_dir("ledger", mode=group)
    with atomic_output(ledger / "sub" / "x.json", state=group) as temp:
        temp.write_text("{}")

    assert (mode(ledger), mode(ledger / "sub"), mode(ledger / "sub" / "x.json")) == (
        0o770,
        0o770,
        0o660,
    )
    assert state_mode() == OWNER_ONLY == StateMode(0o600, 0o700)


def test_state_made_open_by_an_older_version_is_tightened(tmp_path: Path, open_umask: None) -> None:
    storage = Storage(tmp_path / "root")
    storage.state_dir.mkdir(parents=True)
    (storage.state_dir / "queue.db").write_text("")
    assert mode(storage.state_dir) == 0o755

    storage.make_state_dir()
    create_state_file(storage.state_dir / "queue.db")

    assert mode(storage.state_dir) == 0o700
    assert mode(storage.state_dir / "queue.db") == 0o600
    assert (storage.state_dir / "queue.db").read_text() == ""  # never truncated


def test_outputs_and_inputs_keep_the_users_umask(
    storage: Storage, tmp_path: Path, open_umask: None
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("ID,Value\n")
    rel = storage.ingest(source, "job1")
    with atomic_output(storage.root / "outputs" / "job1" / "out.csv") as temp:
        temp.write_text("x")

    assert mode(storage.root / rel) == 0o644
    assert mode(storage.root / "outputs" / "job1" / "out.csv") == 0o644
    assert mode(storage.root / "outputs") == 0o755
