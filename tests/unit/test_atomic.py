"""atomic_output(): a file published whole or not at all (atomic.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.atomic import atomic_output
from conveyor.errors import StorageError
from conveyor.tempfiles import TEMP_PREFIX

# --- atomic publication -----------------------------------------------------------------------


def test_atomic_output_publishes_whole_file(tmp_path: Path) -> None:
    final = tmp_path / "out" / "result.csv"
    with atomic_output(final) as temp:
        assert temp.parent == final.parent
        assert temp.name.startswith(TEMP_PREFIX)
        temp.write_text("complete")
        assert not final.exists()
    assert final.read_text() == "complete"
    assert os.listdir(final.parent) == ["result.csv"]


def test_atomic_output_leaves_final_untouched_on_error(tmp_path: Path) -> None:
    final = tmp_path / "result.csv"
    final.write_text("old")

    def lease_lost() -> None:
        raise StorageError("lease lost")

    with pytest.raises(StorageError, match="lease lost"), atomic_output(final, lease_lost) as temp:
        temp.write_text("new")
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.csv"]


def test_atomic_output_publishes_empty_file_when_task_wrote_nothing(tmp_path: Path) -> None:
    final = tmp_path / "empty.csv"
    with atomic_output(final):
        pass
    assert final.read_bytes() == b""


def test_an_interrupt_as_the_temporary_file_is_made_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a signal handler that raises (conveyor run's SIGTERM) just as os.open returns:
    # the file exists, its descriptor is not yet held by atomic_output
    real_open = os.open

    def open_then_interrupted(path: str, flags: int, mode: int = 0o777) -> int:
        real_open(path, flags, mode)
        raise KeyboardInterrupt

    monkeypatch.setattr("conveyor.atomic.os.open", open_then_interrupted)
    final = tmp_path / "result.csv"
    # When an output is begun
    with pytest.raises(KeyboardInterrupt), atomic_output(final):
        pass
    # Then no temporary file is left behind
    assert os.listdir(tmp_path) == []
