"""Splitting a CSV into shards: byte ranges of whole records after the header, found by one
fast pass that counts line ends (no copy of the input, fields never parsed)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from conveyor.csvjob.quoting import quoted_cut
from conveyor.csvjob.source import MAX_LINE_BYTES, Lines, Source, open_input
from conveyor.errors import BadInput

#: Bytes read at a time by the split pass (more when one line is longer).
SPLIT_BLOCK_BYTES = 8 << 20
_LF = ord("\n")
_QUOTE = ord('"')

_Offsets = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Shard:
    """Data rows ``first_row .. first_row + rows - 1`` of a CSV: bytes ``[start_byte, end_byte)``.

    ``first_row`` counts data rows from 0 (as :func:`conveyor.csvjob.factors.row_factors` does) and
    ``first_line`` is the file's line number of that row, so the shard's errors name the
    file's real line. A file with a header and no rows has one shard of 0 rows.
    """

    index: int
    start_byte: int
    end_byte: int
    first_row: int
    first_line: int
    rows: int

    def to_params(self) -> dict[str, int]:
        """The shard as a JSON-ready dict (a job's params)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Shard:
        """The shard :meth:`to_params` described.

        Raises:
            BadInput: a field is missing or not a non-negative integer.
        """
        values: dict[str, int] = {}
        for name in cls.__dataclass_fields__:
            value = params.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadInput(f"shard params: {name} must be a non-negative integer")
            values[name] = value
        return cls(**values)


def split_csv(
    path: Path, rows_per_shard: int, *, block_bytes: int = SPLIT_BLOCK_BYTES
) -> list[Shard]:
    """The shards of ``path``, each of ``rows_per_shard`` data rows (the last may hold fewer).

    One pass over the file in large blocks, counting line ends; fields are never parsed, so a
    malformed row is found by the shard that holds it, which names its line. Shards start on
    record starts as the exact parser sees them: a quoted field may hold line feeds, and
    quotes that are not RFC 4180 quoting are followed with the csv module (slowly; rare). The
    header is read and checked here, so a file with a bad header fails before any job runs.

    Args:
        rows_per_shard: data rows per shard, at least 1.
        block_bytes: bytes read at a time (tests make it small).

    Raises:
        BadInput: the file is missing, unreadable, empty, or its header is wrong.
    """
    return list(iter_shards(path, rows_per_shard, block_bytes=block_bytes))


def iter_shards(
    path: Path, rows_per_shard: int, *, block_bytes: int = SPLIT_BLOCK_BYTES
) -> Iterator[Shard]:
    """:func:`split_csv` as an iterator: shards are yielded as the pass finds them."""
    if rows_per_shard < 1 or block_bytes < 1:
        raise ValueError("rows_per_shard and block_bytes must be >= 1")
    with open_input(path) as (fd, info):
        source = Source(fd, info.st_size, str(path))
        yield from _Splitter(source, rows_per_shard, block_bytes).shards()


#: Finds where records end: the offsets (in the block) just past the records numbered
#: ``indices`` (0-based in the block, ascending), and the line ends before each.
_Locate = Callable[[_Offsets], tuple[_Offsets, _Offsets]]


@dataclass
class _Records:
    """The records of one block: how many end in it, where to cut it, and a way to find ends."""

    count: int
    cut: int  # bytes of the block taken (whole records); the next block starts there
    cut_lines: int  # line ends in those bytes
    locate: _Locate


def _indexed(ends: _Offsets, lines: _Offsets) -> _Locate:
    """A locate function over ends and line counts that are already known."""
    return lambda indices: (ends[indices], lines[indices])


class _Splitter:
    """The split pass: blocks in, shard boundaries out."""

    def __init__(self, source: Source, rows_per_shard: int, block_bytes: int) -> None:
        self.source = source
        self.per_shard = rows_per_shard
        self.block_bytes = block_bytes
        self.index = 0
        self.start = source.data_start  # the open shard: where it starts, its first row and line
        self.first_row = 0
        self.first_line = source.first_line
        self.rows = 0  # rows in the open shard so far

    def shards(self) -> Iterator[Shard]:
        src = self.source
        offset, line_no, size = src.data_start, src.first_line, self.block_bytes
        while offset < src.data_end:
            block = src.read(offset, min(size, src.data_end - offset))
            at_end = offset + len(block) >= src.data_end
            if not at_end and size < MAX_LINE_BYTES and block.rfind(b"\n") < 0:
                size = min(2 * size, MAX_LINE_BYTES)  # a line longer than a block: read more
                continue
            size = self.block_bytes
            records = self._records(block, offset, line_no, at_end)
            yield from self._close_shards(records, offset, line_no)
            offset += records.cut
            line_no += records.cut_lines
        if self.rows or self.index == 0:
            yield self._shard(src.data_end, self.rows)

    def _records(self, block: bytes, offset: int, line_no: int, at_end: bool) -> _Records:
        if block.find(b'"') < 0:
            return _plain_records(block, at_end)
        quoted = _quoted_records(block, at_end)
        if quoted is not None:
            return quoted
        return _csv_records(self.source, block, offset, line_no)

    def _close_shards(self, records: _Records, offset: int, line_no: int) -> Iterator[Shard]:
        """Yield the shards that fill up in this block; leave the next one open."""
        first = self.per_shard - self.rows - 1
        indices = np.arange(first, records.count, self.per_shard, dtype=np.int64)
        taken = 0
        if len(indices):
            ends, lines = records.locate(indices)
            for i, end_in_block, lines_before in zip(indices, ends, lines, strict=True):
                end = offset + int(end_in_block)
                if end >= self.source.data_end:  # the file's last record: no shard follows
                    break
                yield self._shard(end, self.per_shard)
                self.start, self.first_row = end, self.first_row + self.per_shard
                self.first_line = line_no + int(lines_before)
                self.rows, taken = 0, int(i) + 1
        self.rows += records.count - taken

    def _shard(self, end: int, rows: int) -> Shard:
        shard = Shard(self.index, self.start, end, self.first_row, self.first_line, rows)
        self.index += 1
        return shard


def _plain_records(block: bytes, at_end: bool) -> _Records:
    """Records of a block without quotes: every line is one. Only counts, until asked."""
    cut = len(block) if at_end else block.rfind(b"\n") + 1
    if cut == 0:  # a line longer than MAX_LINE_BYTES: the shard's parser refuses it
        cut = len(block)
    data = np.frombuffer(block, np.uint8, cut)
    newlines = int(np.count_nonzero(data == _LF))

    def locate(indices: _Offsets) -> tuple[_Offsets, _Offsets]:
        ends = _newline_ends(data, indices[indices < newlines])
        last = np.full(len(indices) - len(ends), cut, dtype=np.int64)  # unterminated last line
        return np.concatenate([ends, last]), np.minimum(indices + 1, newlines)

    return _Records(newlines + (at_end and not block.endswith(b"\n")), cut, newlines, locate)


#: Bytes per chunk when looking for a few line ends: count chunk by chunk, search one.
_CHUNK = 1 << 16


def _newline_ends(data: npt.NDArray[np.uint8], ordinals: _Offsets) -> _Offsets:
    """Offsets just past the line feeds numbered ``ordinals`` (0-based, ascending) in data.

    Every ordinal must be below the number of line feeds in ``data``.
    """
    is_lf = data == _LF
    if len(ordinals) > 16:
        return np.flatnonzero(is_lf)[ordinals] + 1
    ends = np.empty(len(ordinals), dtype=np.int64)
    seen, start, j = 0, 0, 0
    while j < len(ordinals):
        chunk = is_lf[start : start + _CHUNK]
        count = int(np.count_nonzero(chunk))
        while j < len(ordinals) and ordinals[j] < seen + count:
            ends[j] = start + int(np.flatnonzero(chunk)[ordinals[j] - seen]) + 1
            j += 1
        seen += count
        start += _CHUNK
    return ends


def _quoted_records(block: bytes, at_end: bool) -> _Records | None:
    """Records of a block whose quotes are RFC 4180 quoting: line ends outside quotes.

    None when the quotes are anything else (:func:`conveyor.csvjob.quoting.quoted_cut` decides, as
    the fast path does), or when no record ends in the block.
    """
    if quoted_cut(block, at_end) is None:
        return None
    data = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(data == _QUOTE)
    newlines = np.flatnonzero(data == _LF)
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0] + 1
    if at_end and not block.endswith(b"\n"):
        ends = np.append(ends, len(block))
    cut = int(ends[-1])
    lines = np.searchsorted(newlines, ends).astype(np.int64)
    cut_lines = int(np.searchsorted(newlines, cut))
    return _Records(len(ends), cut, cut_lines, _indexed(ends.astype(np.int64), lines))


def _csv_records(source: Source, block: bytes, offset: int, line_no: int) -> _Records:
    """Records found by the csv module, as the exact parser reads them (quotes of any kind).

    The last record may run past the block. After a record the csv module refuses, which the
    shard holding it reports with the same message as a whole-file run, the rest of the
    block is cut at line ends.
    """
    lines = Lines(source.read, offset, source.data_end, line_no, source.name)
    reader = csv.reader(lines)
    ends: list[int] = []
    line_ends: list[int] = []
    while lines.offset < offset + len(block):
        try:
            next(reader)
        except StopIteration:
            break
        except (csv.Error, BadInput):
            if lines.offset - offset > (ends[-1] if ends else 0):  # the bad line is read
                ends.append(lines.offset - offset)
                line_ends.append(lines.line_no + 1 - line_no)
            if ends and ends[-1] >= len(block):
                break
            return _after_error(block, ends, line_ends)
        ends.append(lines.offset - offset)
        line_ends.append(lines.line_no + 1 - line_no)
    return _Records(
        len(ends),
        ends[-1] if ends else len(block),
        line_ends[-1] if line_ends else block.count(b"\n"),
        _indexed(np.array(ends, dtype=np.int64), np.array(line_ends, dtype=np.int64)),
    )


def _after_error(block: bytes, ends: list[int], line_ends: list[int]) -> _Records:
    """The records read up to an error, then every line end of the rest of the block."""
    at = ends[-1] if ends else 0
    tail = np.flatnonzero(np.frombuffer(block, np.uint8)[at:] == _LF) + (at + 1)
    before = block.count(b"\n", 0, at)
    all_ends = np.concatenate([np.array(ends, dtype=np.int64), tail.astype(np.int64)])
    all_lines = np.concatenate(
        [np.array(line_ends, dtype=np.int64), np.arange(1, len(tail) + 1) + before]
    ).astype(np.int64)
    cut = int(all_ends[-1]) if len(all_ends) else len(block)
    return _Records(len(all_ends), cut, block.count(b"\n", 0, cut), _indexed(all_ends, all_lines))
