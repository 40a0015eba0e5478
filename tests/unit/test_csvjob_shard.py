"""Running a shard: its rows of the whole-file output, errors named by the file's real line."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conveyor.csvjob.output import OUTPUT_HEADER
from conveyor.csvjob.shard import run_shard, transform_csv_range
from conveyor.csvjob.split import split_csv
from conveyor.errors import BadInput
from tests.unit.csvjob_cases import (
    MODES,
    SEED,
    new_file,
    rows_text,
    split_run,
    whole,
)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pipeline_mode_gives_the_same_shards(tmp_path: Path, mode: str) -> None:
    # Given the ways tests run the whole file (block sizes, threads, exact parser)
    text = "ID,Value\r\n" + rows_text(300, "\r\n") + '"multi\nline",1e-7\r\nlast,1'
    path = new_file(tmp_path, text)
    expected = whole(path)
    assert isinstance(expected, bytes)
    # Then every shard, run that way, writes its rows of the whole-file output
    out = tmp_path / "shard.csv"
    pieces = []
    for shard in split_csv(path, 37, block_bytes=50):
        transform_csv_range(
            path,
            out,
            SEED,
            start_byte=shard.start_byte,
            end_byte=shard.end_byte,
            first_row=shard.first_row,
            first_line=shard.first_line,
            header=shard.index == 0,
            **MODES[mode],
        )
        pieces.append(out.read_bytes())
    assert b"".join(pieces) == expected


def test_bad_row_in_shard_17_of_40_names_the_files_line(tmp_path: Path) -> None:
    # Given 40 shards of 25 rows, and a row with three fields in shard 17
    rows = rows_text(1000).splitlines(keepends=True)
    bad_row = 17 * 25 + 12
    rows[bad_row] = "x,1,2\n"
    path = new_file(tmp_path, "ID,Value\n" + "".join(rows))
    shards = split_csv(path, 25)
    assert len(shards) == 40
    # When every shard runs
    failed = {}
    for shard in shards:
        try:
            run_shard(path, tmp_path / f"part{shard.index}", SEED, shard, block_bytes=64)
        except BadInput as exc:
            failed[shard.index] = exc.message
    # Then only shard 17 fails, naming the file's line (the header is line 1)
    line = bad_row + 2
    assert failed == {17: f"{path}:{line}: expected 2 fields (ID,Value), found 3"}
    assert whole(path) == failed[17]


def test_error_after_multiline_rows_names_the_files_line(tmp_path: Path) -> None:
    text = 'ID,Value\n"a\nb",1\n"c\nd",2\ne,3\nf,oops\n'
    path = new_file(tmp_path, text)
    assert split_run(path, 1) == f"{path}:7: Value 'oops' is not a finite number" == whole(path)


def test_range_output_is_those_rows_of_the_whole(tmp_path: Path) -> None:
    path = new_file(tmp_path, "ID,Value\n" + rows_text(30))
    expected = whole(path)
    assert isinstance(expected, bytes)
    lines = expected.splitlines(keepends=True)
    data = path.read_bytes()
    start = data.index(b"\nid9,") + 1
    end = data.index(b"\nid19,") + 1
    out = tmp_path / "range.csv"
    # When rows 9..18 are processed without, then with, the header
    stats = transform_csv_range(
        path, out, SEED, start_byte=start, end_byte=end, first_row=9, first_line=11, workers=0
    )
    assert out.read_bytes() == b"".join(lines[10:20])
    assert (stats.rows, stats.input_bytes, stats.output_bytes) == (
        10,
        end - start,
        out.stat().st_size,
    )
    transform_csv_range(
        path, out, SEED, start_byte=start, end_byte=end, first_row=9, first_line=11, header=True
    )
    assert out.read_bytes() == OUTPUT_HEADER + b"".join(lines[10:20])


@pytest.mark.parametrize(
    ("start", "end"),
    [(4, 9), (10, 13), (9, 12), (13, 10_000), (0, 0)],
    ids=["in-header", "mid-line-start", "mid-line-end", "past-end", "header-start"],
)
def test_range_must_be_whole_lines_after_the_header(tmp_path: Path, start: int, end: int) -> None:
    path = new_file(tmp_path, "ID,Value\n1,2\n3,4\n5,6\n")
    with pytest.raises(BadInput, match="are not whole lines after the header"):
        transform_csv_range(
            path, tmp_path / "o", SEED, start_byte=start, end_byte=end, first_row=0, first_line=2
        )


@pytest.mark.parametrize(
    ("start", "end", "row", "line"), [(-1, 13, 0, 2), (9, 3, 0, 2), (9, 13, -1, 2), (9, 13, 0, 1)]
)
def test_range_arguments_are_checked(
    tmp_path: Path, start: int, end: int, row: int, line: int
) -> None:
    path = new_file(tmp_path, "ID,Value\n1,2\n")
    with pytest.raises(ValueError, match="need 0 <= start_byte"):
        transform_csv_range(
            path,
            tmp_path / "o",
            SEED,
            start_byte=start,
            end_byte=end,
            first_row=row,
            first_line=line,
        )


def test_run_shard_stays_on_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a record of every thread started while a shard runs
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    path = new_file(tmp_path, "ID,Value\n" + rows_text(2000))
    [shard] = split_csv(path, 5000)
    run_shard(path, tmp_path / "part", SEED, shard, block_bytes=4096)
    # Then no parsing thread was started (polars' own pool is sized by POLARS_MAX_THREADS)
    assert not [name for name in started if name.startswith("conveyor-csv_")]
    run_shard(path, tmp_path / "part", SEED, shard, block_bytes=4096, workers=2)
    assert [name for name in started if name.startswith("conveyor-csv_")]
