"""One big CSV as many jobs: split it into shards of whole rows, run each, merge the outputs.

A shard is a byte range of the input (no copy is made), found by one fast pass that counts
line ends; :func:`run_shard` processes it (the first shard's output starts with the header)
and :func:`merge_csv_parts` concatenates the outputs into one file, byte-identical to
``conveyor run`` of the whole file with the same seed, and to its error on a bad row.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from conveyor.csvtask import (
    DEFAULT_BLOCK_BYTES,
    MAX_LINE_BYTES,
    CsvStats,
    _Lines,
    _open_input,
    _quoted_cut,
    _Source,
    transform_csv_range,
)
from conveyor.errors import BadInput, StorageError
from conveyor.storage import atomic_output, storage_error

__all__ = [
    "MERGE_THREADS",
    "SPLIT_BLOCK_BYTES",
    "MergeStats",
    "Shard",
    "iter_shards",
    "merge_csv_parts",
    "remove_parts_dir",
    "run_shard",
    "split_csv",
]

#: Bytes read at a time by the split pass (more when one line is longer).
SPLIT_BLOCK_BYTES = 8 << 20
#: Parts copied at once by a merge.
MERGE_THREADS = 2
#: After copying this much, the merge asks the kernel to start writing it to disk.
_FLUSH_BYTES = 32 << 20
_LF = ord("\n")
_QUOTE = ord('"')

_Offsets = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Shard:
    """Data rows ``first_row .. first_row + rows - 1`` of a CSV: bytes ``[start_byte, end_byte)``.

    ``first_row`` counts data rows from 0 (as :func:`conveyor.csvtask.row_factors` does) and
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


@dataclass(frozen=True)
class MergeStats:
    """What a merge did: parts concatenated, bytes written (0 when it had already run)."""

    parts: int
    output_bytes: int
    already_merged: bool


# --- splitting --------------------------------------------------------------------------------


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
    with _open_input(path) as (fd, info):
        source = _Source(fd, info.st_size, str(path))
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

    def __init__(self, source: _Source, rows_per_shard: int, block_bytes: int) -> None:
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

    None when the quotes are anything else (:func:`conveyor.csvtask._quoted_cut` decides, as
    the fast path does), or when no record ends in the block.
    """
    if _quoted_cut(block, at_end) is None:
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


def _csv_records(source: _Source, block: bytes, offset: int, line_no: int) -> _Records:
    """Records found by the csv module, as the exact parser reads them (quotes of any kind).

    The last record may run past the block. After a record the csv module refuses, which the
    shard holding it reports with the same message as a whole-file run, the rest of the
    block is cut at line ends.
    """
    lines = _Lines(source.read, offset, source.data_end, line_no, source.name)
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


# --- running a shard ----------------------------------------------------------------------------


def run_shard(
    input_path: Path,
    output_path: Path,
    seed: int,
    shard: Shard,
    *,
    workers: int = 0,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> CsvStats:
    """Process one shard into ``output_path``; the first shard's output starts with the header.

    ``workers=0`` (the default) keeps the job on the calling thread: the parallelism of a
    split job comes from running shards in separate processes or pods.
    """
    return transform_csv_range(
        input_path,
        output_path,
        seed,
        start_byte=shard.start_byte,
        end_byte=shard.end_byte,
        first_row=shard.first_row,
        first_line=shard.first_line,
        header=shard.index == 0,
        workers=workers,
        block_bytes=block_bytes,
    )


# --- merging -------------------------------------------------------------------------------------


def merge_csv_parts(
    parts: Sequence[Path],
    output: Path,
    *,
    before_publish: Callable[[], None] | None = None,
    threads: int = MERGE_THREADS,
) -> MergeStats:
    """Concatenate ``parts`` in order into ``output``, published atomically; then remove them.

    The first shard's part carries the header (:func:`run_shard`), so this is a plain byte
    copy, done by the kernel (``copy_file_range``) on ``threads`` threads, each part to its
    own offset, while the written pages are already being flushed to disk, so the final
    fsync is short. Safe to run again, as a retried or duplicated completion does: with every
    part present it merges again (the same bytes); when parts are missing but ``output``
    exists and is newer than every part left, the merge had been published, so only the
    rest of the parts is removed.

    Args:
        before_publish: called just before the rename (a worker checks its lease there).
        threads: parts copied at once (the copy is the kernel's; threads only issue it).

    Raises:
        StorageError: a part is missing and no merged output was published, or a file could
            not be read or written (StorageFull when the disk is full).
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    opened: list[int] = []
    try:
        for part in parts:
            opened.append(os.open(part, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError as exc:
        _close_all(opened)
        if not _already_merged(parts, output):
            raise StorageError(
                f"cannot merge into {output}: part {exc.filename} is missing and no merged "
                "output was published"
            ) from exc
        _remove(parts)
        return MergeStats(len(parts), 0, already_merged=True)
    except OSError as exc:
        _close_all(opened)
        raise storage_error(exc, f"cannot read {exc.filename}") from exc
    try:
        with atomic_output(output, before_publish) as temp:
            written = _concatenate(opened, temp, threads)
    finally:
        _close_all(opened)
    _remove(parts)
    return MergeStats(len(parts), written, already_merged=False)


def _concatenate(sources: Sequence[int], target: Path, threads: int) -> int:
    """Copy every source file to its place in ``target``; return the bytes written."""
    sizes = [os.fstat(fd).st_size for fd in sources]
    starts = list(itertools.accumulate(sizes, initial=0))
    out = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="conveyor-merge") as pool:
            copies = [
                pool.submit(_copy, fd, out, size, start)
                for fd, size, start in zip(sources, sizes, starts[:-1], strict=True)
            ]
            for copy in copies:
                copy.result()
        return starts[-1]
    finally:
        os.close(out)


def _copy(source: int, target: int, size: int, at: int) -> None:
    """Copy ``size`` bytes of ``source`` to offset ``at`` of ``target``, in the kernel if it can."""
    done = 0
    while done < size:
        count = min(size - done, _FLUSH_BYTES)
        try:
            copied = os.copy_file_range(source, target, count, done, at + done)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise
            copied = os.pwrite(target, os.pread(source, min(count, 1 << 20), done), at + done)
        if copied == 0:
            raise OSError(errno.EIO, f"a part shrank while it was copied ({done} of {size} bytes)")
        _start_writeback(target, at + done, copied)
        done += copied


#: copy_file_range's errors meaning "not between these two files" (read and write instead).
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of ``fd`` to disk now, without waiting (Linux: fadvise starts
    writeback of dirty pages before dropping clean ones), so the publisher's fsync is short."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _already_merged(parts: Sequence[Path], output: Path) -> bool:
    """Whether ``output`` was published from these parts: it exists and no part left is newer."""
    try:
        merged_ns = os.stat(output).st_mtime_ns
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, f"cannot read {output}") from exc
    for part in parts:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(part).st_mtime_ns > merged_ns:
                return False
    return True


def _remove(parts: Sequence[Path]) -> None:
    for part in parts:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(exc, f"cannot remove {part}") from exc


def remove_parts_dir(directory: Path) -> None:
    """Remove a merged group's part directory: the stale temporary files of killed shard
    attempts first (their writers are dead), then the directory if that left it empty.
    A directory still in use (a live writer's temporary file) stays."""
    from conveyor.storage import clean_stale_temps

    clean_stale_temps(directory, min_age_s=0)
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(directory)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
