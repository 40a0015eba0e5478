"""Splitting: shards tile the rows on record starts; split runs are byte-identical to whole ones."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor.csvjob import split as csv_split
from conveyor.csvjob.output import OUTPUT_HEADER
from conveyor.csvjob.split import Shard, split_csv
from conveyor.errors import BadInput
from tests.unit.csvjob_cases import (
    new_file,
    rows_text,
    split_run,
    whole,
)

HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("csv")


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


def test_splitting_loads_no_polars(tmp_path: Path) -> None:
    # `conveyor submit --split-rows` splits in the submitting process: polars would cost it
    # more than the split pass itself. (A fresh interpreter: this one has polars loaded.)
    path = new_file(tmp_path, "ID,Value\n" + rows_text(50))
    code = (
        "import sys; from pathlib import Path; from conveyor.csvjob import split_csv; "
        "assert len(split_csv(Path(sys.argv[1]), 7)) == 8; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'polars'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"


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
    found = csv_split._newline_ends(data, ordinals)
    assert found.tolist() == line_ends[ordinals].tolist()


# --- properties -------------------------------------------------------------------------------


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
