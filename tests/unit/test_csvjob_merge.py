"""Merging: parts concatenated and removed, published atomically, safe to run again."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conveyor.csvjob import merge as csv_merge
from conveyor.csvjob.merge import merge_csv_parts
from conveyor.errors import StorageError
from conveyor.tempfiles import TEMP_PREFIX


def make_parts(directory: Path, contents: list[bytes]) -> list[Path]:
    parts = []
    for i, content in enumerate(contents):
        part = directory / f"part-{i}.csv"
        part.write_bytes(content)
        parts.append(part)
    return parts


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_merge_concatenates_and_removes_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    monkeypatch.setattr(csv_merge, "_FLUSH_BYTES", 1000)  # several copies per part
    contents = [b"H\na\n", b"", b"b\nc\n", b"d\n" * 100_000, b"e\n" * 999, b"f\n" * 5000]
    parts = make_parts(tmp_path, contents)
    final = tmp_path / "out" / "final.csv"
    stats = merge_csv_parts(parts, final, threads=threads)
    assert final.read_bytes() == b"".join(contents)
    assert (stats.parts, stats.output_bytes, stats.already_merged) == (6, 212_006, False)
    assert not any(p.exists() for p in parts)
    assert not [p for p in final.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_merge_needs_a_thread(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        merge_csv_parts([], tmp_path / "final.csv", threads=0)


def test_merge_again_after_success_is_a_no_op(tmp_path: Path) -> None:
    parts = make_parts(tmp_path, [b"H\n", b"a\n"])
    final = tmp_path / "final.csv"
    merge_csv_parts(parts, final)
    again = merge_csv_parts(parts, final)
    assert again.already_merged and again.output_bytes == 0
    assert final.read_bytes() == b"H\na\n"


def test_merge_after_a_crash_between_removals_finishes(tmp_path: Path) -> None:
    # Given a merge that published its output, then died after removing one part
    parts = make_parts(tmp_path, [b"H\n", b"a\n", b"b\n"])
    final = tmp_path / "final.csv"
    final.write_bytes(b"H\na\nb\n")
    parts[0].unlink()
    # When it runs again, it removes the rest and leaves the output alone
    assert merge_csv_parts(parts, final).already_merged
    assert final.read_bytes() == b"H\na\nb\n"
    assert not any(p.exists() for p in parts)


def test_merge_after_a_crash_before_removals_merges_again(tmp_path: Path) -> None:
    parts = make_parts(tmp_path, [b"H\n", b"a\n"])
    final = tmp_path / "final.csv"
    final.write_bytes(b"stale")
    stats = merge_csv_parts(parts, final)
    assert not stats.already_merged
    assert final.read_bytes() == b"H\na\n"


def test_merge_with_a_lost_part_fails(tmp_path: Path) -> None:
    parts = make_parts(tmp_path, [b"H\n", b"a\n", b"b\n"])
    parts[1].unlink()
    final = tmp_path / "final.csv"
    with pytest.raises(StorageError, match=r"part .*part-1.csv is missing"):
        merge_csv_parts(parts, final)
    assert not final.exists()
    assert parts[0].exists() and parts[2].exists()


def test_merge_with_a_lost_part_and_an_older_output_fails(tmp_path: Path) -> None:
    # Given an output from an earlier run, older than the parts of this one
    final = tmp_path / "final.csv"
    final.write_bytes(b"old")
    os.utime(final, ns=(1_000_000_000, 1_000_000_000))
    parts = make_parts(tmp_path, [b"H\n", b"a\n"])
    parts[0].unlink()
    # Then a lost part is not taken for a finished merge
    with pytest.raises(StorageError, match="is missing"):
        merge_csv_parts(parts, final)
    assert final.read_bytes() == b"old"


def test_merge_publishes_nothing_when_aborted(tmp_path: Path) -> None:
    parts = make_parts(tmp_path, [b"H\n", b"a\n"])
    final = tmp_path / "final.csv"

    def lease_lost() -> None:
        raise StorageError("lease lost")

    with pytest.raises(StorageError, match="lease lost"):
        merge_csv_parts(parts, final, before_publish=lease_lost)
    assert not final.exists()
    assert all(p.exists() for p in parts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0.csv", "part-1.csv"]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP])
def test_merge_falls_back_to_read_and_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    contents = [b"H\n", b"x" * 3_000_000 + b"\n", b"y\n"]
    merge_csv_parts(make_parts(tmp_path, contents), tmp_path / "final.csv")
    assert (tmp_path / "final.csv").read_bytes() == b"".join(contents)


def test_merge_reports_other_copy_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    parts = make_parts(tmp_path, [b"H\n", b"a\n"])
    with pytest.raises(StorageError, match=r"final\.csv"):
        merge_csv_parts(parts, tmp_path / "final.csv")
    assert all(p.exists() for p in parts)
    assert not (tmp_path / "final.csv").exists()
