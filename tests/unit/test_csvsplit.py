"""Split, shard and merge: the merged output is the whole-file output, byte for byte."""

from __future__ import annotations

import errno
import itertools
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor import csvsplit
from conveyor.csvsplit import Shard, merge_csv_parts, run_shard, split_csv
from conveyor.csvtask import OUTPUT_HEADER, transform_csv, transform_csv_range
from conveyor.errors import BadInput, StorageError
from conveyor.storage import TEMP_PREFIX
from tests.unit.test_csvtask import MODES

SEED = 20240601
HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()


# --- helpers -----------------------------------------------------------------------------------


def new_file(directory: Path, content: bytes | str) -> Path:
    path = directory / f"in{next(_counter)}.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def whole(path: Path, seed: int = SEED) -> bytes | str:
    """What ``conveyor run`` writes for ``path`` (the bytes), or its error message."""
    out = path.with_name(f"{path.name}.whole")
    try:
        transform_csv(path, out, seed)
    except BadInput as exc:
        return exc.message
    return out.read_bytes()


def split_run(
    path: Path,
    rows_per_shard: int,
    seed: int = SEED,
    *,
    split_block_bytes: int = csvsplit.SPLIT_BLOCK_BYTES,
    block_bytes: int = 1 << 20,
) -> bytes | str:
    """Split, run every shard, merge: the merged bytes, or the first failing shard's error."""
    directory = path.with_name(f"{path.name}.parts{next(_counter)}")
    directory.mkdir()
    parts = []
    try:
        for shard in split_csv(path, rows_per_shard, block_bytes=split_block_bytes):
            part = directory / f"part-{shard.index:05d}.csv"
            run_shard(path, part, seed, shard, block_bytes=block_bytes)
            parts.append(part)
    except BadInput as exc:
        return exc.message
    final = directory / "merged.csv"
    merge_csv_parts(parts, final)
    assert sorted(p.name for p in directory.iterdir()) == ["merged.csv"]
    return final.read_bytes()


def rows_text(count: int, newline: str = "\n", start: int = 0, *, quoted: bool = True) -> str:
    """``count`` data rows with quoted IDs (commas, doubled quotes) among plain ones."""
    rows = []
    for i in range(start, start + count):
        ident = f'"id,{i}"' if i % 7 == 3 else f'"say ""{i}"""' if i % 11 == 5 else f"id{i}"
        ident = ident if quoted else f"id{i}"
        rows.append(f"{ident},{i % 1000}.{i % 10}{newline}")
    return "".join(rows)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("split")


# --- byte-identical to the whole-file run ------------------------------------------------------


@pytest.mark.parametrize(("rows_per_shard", "rows"), [(1, 150), (7, 500), (1000, 25_000)])
def test_split_sizes_are_byte_identical(tmp_path: Path, rows_per_shard: int, rows: int) -> None:
    # Given a file of plain and quoted IDs
    path = new_file(tmp_path, "ID,Value\n" + rows_text(rows))
    expected = whole(path)
    assert isinstance(expected, bytes)
    assert expected.count(b"\n") == rows + 1
    # When it is split into shards of N rows, each run, and the parts merged
    shards = split_csv(path, rows_per_shard)
    # Then there are ceil(rows / N) shards and the merge is the whole-file output
    assert len(shards) == -(-rows // rows_per_shard)
    assert split_run(path, rows_per_shard) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("ID,Value\n1,2\n3,4\n5,6", id="last-line-without-newline"),
        pytest.param("ID,Value\r\n1,2\r\n3,4\r\n5,6\r\n", id="crlf"),
        pytest.param("ID,Value\r\n1,2\r\n3,4\r\n5,6", id="crlf-last-line-without-newline"),
        pytest.param('ID,Value\n"a,b",1\n"c ""d""",2\n"e",3\nf,4\n', id="quoted-no-line-breaks"),
        pytest.param('"ID","Value"\r\n"a,b",1\r\n"x","2"\r\n', id="quoted-header-crlf"),
        pytest.param('ID,Value\n"a\nb",1\n"c\r\nd",2\ne,3\n"f\n\ng",4\n', id="quoted-line-breaks"),
        pytest.param('ID,Value\na"b,1\nc""d,2\n"e"x,3\n4,4\n', id="quotes-csv-reads-loosely"),
        pytest.param("\ufeffID,Value\n\ufeffa,1\nb,2\n", id="bom"),
        pytest.param("ID,Value\n1,2\n3,4\n\n\r\n\n", id="trailing-blank-lines"),
    ],
)
@pytest.mark.parametrize("rows_per_shard", [1, 2, 3, 100])
@pytest.mark.parametrize("split_block_bytes", [1, 6, 1 << 20])
def test_edge_cases_are_byte_identical(
    tmp_path: Path, text: str, rows_per_shard: int, split_block_bytes: int
) -> None:
    path = new_file(tmp_path, text)
    expected = whole(path)
    assert isinstance(expected, bytes)
    got = split_run(path, rows_per_shard, split_block_bytes=split_block_bytes, block_bytes=5)
    assert got == expected


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pipeline_mode_gives_the_same_shards(tmp_path: Path, mode: str) -> None:
    # Given the ways test_csvtask runs the whole file (block sizes, threads, exact parser)
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


@pytest.mark.parametrize("text", ["ID,Value\n", "ID,Value", "ID,Value\r\n\r\n\n"])
def test_header_only_is_one_empty_shard(tmp_path: Path, text: str) -> None:
    # Given a file with a header and no rows
    path = new_file(tmp_path, text)
    # Then it is one shard of no rows (every group has a job), whose output is the header
    [shard] = split_csv(path, 10)
    assert (shard.index, shard.rows, shard.first_row, shard.first_line) == (0, 0, 0, 2)
    assert shard.start_byte == shard.end_byte
    assert split_run(path, 10) == whole(path) == OUTPUT_HEADER


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("Id,Value\n1,2\n", "1: expected header 'ID,Value', found 'Id,Value'"),
        ("1,2\n3,4\n", "1: missing header"),
    ],
)
def test_bad_file_fails_at_split_as_run_does(tmp_path: Path, text: str, message: str) -> None:
    path = new_file(tmp_path, text)
    with pytest.raises(BadInput) as raised:
        split_csv(path, 5)
    assert raised.value.message == whole(path)
    assert raised.value.message.startswith(f"{path}:") and message in raised.value.message


def test_missing_file_fails_at_split(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        split_csv(tmp_path / "nope.csv", 5)


# --- the shards themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("split_block_bytes", [1, 7, 100, 1 << 20])
def test_shards_tile_the_rows(tmp_path: Path, newline: str, split_block_bytes: int) -> None:
    # Given 23 rows, two of which span two lines
    text = "ID,Value" + newline + rows_text(10, newline) + '"two\nlines",1' + newline
    text += rows_text(11, newline, start=10) + '"also\ntwo",2'
    path = new_file(tmp_path, text)
    data = path.read_bytes()
    # When it is split into shards of 5 rows
    shards = split_csv(path, 5, block_bytes=split_block_bytes)
    # Then they are contiguous, cover every row after the header, and say where they start
    assert [s.index for s in shards] == [0, 1, 2, 3, 4]
    assert [s.rows for s in shards] == [5, 5, 5, 5, 3]
    assert shards[0].start_byte == len("ID,Value" + newline)
    assert shards[-1].end_byte == len(data)
    for before, after in itertools.pairwise(shards):
        assert before.end_byte == after.start_byte
        assert after.first_row == before.first_row + before.rows
    for shard in shards:
        assert shard.first_line == data.count(b"\n", 0, shard.start_byte) + 1
    # A shard after a two-line row starts one line later than its row number says
    assert [s.first_line - s.first_row for s in shards] == [2, 2, 2, 3, 3]


@pytest.mark.parametrize("rows_per_shard", [1, 999, 4_999, 12_345, 30_000])
@pytest.mark.parametrize("split_block_bytes", [100_000, 1 << 20])
@pytest.mark.parametrize("quoted", [False, True])
def test_shards_start_on_the_right_lines(
    tmp_path: Path, rows_per_shard: int, split_block_bytes: int, quoted: bool
) -> None:
    # Given 30,000 one-line rows, so the Nth row starts after the Nth line feed
    path = new_file(tmp_path, "ID,Value\n" + rows_text(30_000, quoted=quoted))
    data = path.read_bytes()
    line_starts = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    # Then every shard starts where its first row starts
    shards = split_csv(path, rows_per_shard, block_bytes=split_block_bytes)
    assert len(shards) == -(-30_000 // rows_per_shard)
    for shard in shards:
        assert shard.start_byte == line_starts[shard.first_row]
        assert shard.first_row == shard.index * rows_per_shard
        assert shard.first_line == shard.first_row + 2
    assert sum(s.rows for s in shards) == 30_000


def test_big_rows_per_shard_gives_one_shard(tmp_path: Path) -> None:
    path = new_file(tmp_path, "ID,Value\n" + rows_text(50))
    size = path.stat().st_size  # the last shard ends before the final newline
    assert split_csv(path, 1_000_000) == [Shard(0, 9, size - 1, 0, 2, 50)]


def test_iter_shards_rejects_bad_sizes(tmp_path: Path) -> None:
    path = new_file(tmp_path, "ID,Value\n1,2\n")
    with pytest.raises(ValueError, match="rows_per_shard"):
        split_csv(path, 0)
    with pytest.raises(ValueError, match="block_bytes"):
        split_csv(path, 1, block_bytes=0)


def test_shard_params_round_trip() -> None:
    shard = Shard(3, 100, 200, 21, 25, 7)
    assert Shard.from_params(shard.to_params()) == shard
    assert shard.to_params() == {
        "index": 3,
        "start_byte": 100,
        "end_byte": 200,
        "first_row": 21,
        "first_line": 25,
        "rows": 7,
    }


@pytest.mark.parametrize("bad", [{"rows": -1}, {"rows": "7"}, {"rows": True}, {"rows": None}])
def test_shard_params_are_checked(bad: dict[str, object]) -> None:
    params: dict[str, object] = {**Shard(3, 100, 200, 21, 25, 7).to_params(), **bad}
    with pytest.raises(BadInput, match="shard params: rows must be a non-negative integer"):
        Shard.from_params(params)


# --- errors name the file's real line -----------------------------------------------------------


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


# --- transform_csv_range ----------------------------------------------------------------------


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


# --- merging -----------------------------------------------------------------------------------


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
    monkeypatch.setattr(csvsplit, "_FLUSH_BYTES", 1000)  # several copies per part
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


# --- properties ----------------------------------------------------------------------------------

_ident = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00\r\n"),
    min_size=1,
    max_size=6,
)
_value = st.sampled_from(["0", "1", "-2.5", ".5", "1e-3", "+7E+2", "123456.789", "1e-7"])


def _quote(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if any(c in field for c in ',"\n\r') else field


@st.composite
def valid_csvs(draw: st.DrawFn) -> str:
    """A valid input: quoting as needed, LF or CRLF, with or without a final newline."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    rows = draw(st.lists(st.tuples(_ident, _value), max_size=40))
    multiline = draw(st.booleans())
    breaks = ["\n" if multiline and len(ident) % 3 == 0 else "" for ident, _ in rows]
    lines = [
        f"{_quote(ident + br)},{value}" for (ident, value), br in zip(rows, breaks, strict=True)
    ]
    end = draw(st.sampled_from(["", newline, newline + newline]))
    return newline.join(["ID,Value", *lines]) + end


@HYPOTHESIS
@given(
    text=valid_csvs(),
    rows_per_shard=st.integers(1, 12),
    split_block_bytes=st.integers(1, 64),
    seed=st.integers(0, 2**63 - 1),
)
@example(text="ID,Value\n1,2", rows_per_shard=1, split_block_bytes=1, seed=0)
def test_random_csvs_split_byte_identical(
    scratch: Path, text: str, rows_per_shard: int, split_block_bytes: int, seed: int
) -> None:
    path = new_file(scratch, text)
    expected = whole(path, seed)
    assert isinstance(expected, bytes)
    got = split_run(path, rows_per_shard, seed, split_block_bytes=split_block_bytes, block_bytes=9)
    assert got == expected


_pieces = [b"a", b"1", b"2.5", b",", b'"', b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3\xa9"]
_pieces += [b" ", b"1e999", b'""', b"x,1\n", b'"q\nz",3\n', b"7,8\n", b"\n\n"]


@HYPOTHESIS
@given(
    head=st.sampled_from(
        [b"ID,Value\n", b"ID,Value\r\n", b'"ID","Value"\n', b"\xef\xbb\xbfID,Value\n"]
    ),
    body=st.lists(st.sampled_from(_pieces), max_size=30).map(b"".join),
    rows_per_shard=st.integers(1, 5),
    split_block_bytes=st.sampled_from([1, 2, 5, 13, 1 << 20]),
)
def test_any_input_splits_to_the_same_output_or_error(
    scratch: Path, head: bytes, body: bytes, rows_per_shard: int, split_block_bytes: int
) -> None:
    # The first shard that fails reports the whole-file run's error, word for word.
    path = new_file(scratch, head + body)
    got = split_run(path, rows_per_shard, split_block_bytes=split_block_bytes, block_bytes=7)
    assert got == whole(path)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 300_000),
    density=st.sampled_from([0.5, 0.05, 1e-3, 1e-4]),
    picks=st.integers(1, 20),
)
def test_line_feed_search_finds_the_nth(seed: int, size: int, density: float, picks: int) -> None:
    # The split's search for a few line ends (count per chunk, then one chunk) is exact.
    rng = np.random.default_rng(seed)
    data = np.where(rng.random(size) < density, ord("\n"), ord("a")).astype(np.uint8)
    line_ends = np.flatnonzero(data == ord("\n")) + 1
    if not len(line_ends):
        return
    ordinals = np.unique(rng.integers(0, len(line_ends), picks)).astype(np.int64)
    # The last line feed of a chunk is a case of its own
    chunk_ends = np.searchsorted(line_ends, np.arange(1, size // (1 << 16) + 1) << 16, "right") - 1
    ordinals = np.unique(np.concatenate([ordinals, chunk_ends[chunk_ends >= 0]]))[:16]
    found = csvsplit._newline_ends(data, ordinals)
    assert found.tolist() == line_ends[ordinals].tolist()
