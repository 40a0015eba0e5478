"""The storage side of crash recovery: crash hooks, leftover temporary files, and a temporary
file removed under a live writer (unit tests, no processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.atomic import atomic_output
from conveyor.errors import StorageError
from conveyor.tempfiles import TEMP_PREFIX, remove_temps


class Crash(BaseException):
    pass


def test_the_crash_hook_sees_each_step_in_order(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    seen: list[tuple[str, bool, bytes | None]] = []

    def hook(step: str, temp: Path) -> None:
        seen.append((step, temp.exists(), final.read_bytes() if final.exists() else None))

    with atomic_output(final, fault=hook) as temp:
        temp.write_bytes(b"data")

    assert seen == [
        ("mid_write", True, None),
        ("after_fsync", True, None),
        ("after_rename", False, b"data"),
    ]


def test_a_crash_before_the_rename_leaves_the_old_output_and_a_temp_file(
    tmp_path: Path,
) -> None:
    final = tmp_path / "out.csv"
    final.write_bytes(b"old")

    def crash_after_fsync(step: str, temp: Path) -> None:
        if step == "after_fsync":
            raise Crash

    with pytest.raises(Crash), atomic_output(final, fault=crash_after_fsync) as temp:
        temp.write_bytes(b"new")

    assert final.read_bytes() == b"old"
    # An exception cleans up; only a real crash (os._exit, kill -9) leaves the file behind,
    # which is what remove_temps is for.
    assert sorted(os.listdir(tmp_path)) == ["out.csv"]


def test_remove_temps_removes_only_the_leftovers_of_that_output(tmp_path: Path) -> None:
    final = tmp_path / "out.csv"
    mine = [
        tmp_path / f"{TEMP_PREFIX}0123456789ab-out.csv",
        tmp_path / f"{TEMP_PREFIX}ffffffffffff-out.csv",
    ]
    others = [
        tmp_path / f"{TEMP_PREFIX}0123456789ab-x-out.csv",  # the output "x-out.csv"
        tmp_path / f"{TEMP_PREFIX}0123456789ab-out.csv.bak",
        tmp_path / f"{TEMP_PREFIX}not-hex-chars-out.csv",
        tmp_path / "out.csv",
    ]
    for path in mine + others:
        path.write_bytes(b"partial")

    removed = remove_temps(final)

    assert sorted(removed) == sorted(mine)
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert remove_temps(tmp_path / "missing-dir" / "x") == []


def test_a_temp_file_removed_under_a_live_writer_fails_instead_of_publishing(
    tmp_path: Path,
) -> None:
    final = tmp_path / "out.csv"
    final.write_bytes(b"previous")

    removed = pytest.raises(StorageError, match="temporary file was removed")
    with removed, atomic_output(final) as temp:
        assert temp.exists() and temp.read_bytes() == b""  # created before the task
        with temp.open("wb") as out:
            out.write(b"half of it")
            remove_temps(final)  # a worker that found the previous attempt dead

    assert final.read_bytes() == b"previous"  # never an empty or partial publication
    assert sorted(os.listdir(tmp_path)) == ["out.csv"]
