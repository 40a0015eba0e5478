"""The pipeline: one pass over a CSV (or a shard of it) in blocks, parsed on a thread pool,
written in order; ``transform_csv()`` and ``process_csv()`` run it."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ParamSpec, TypeVar

import polars as pl

from conveyor.atomic import atomic_output
from conveyor.csvjob.exact import parse_exact
from conveyor.csvjob.fast import parse_plain, parse_quoted
from conveyor.csvjob.output import OUTPUT_HEADER, Output, render
from conveyor.csvjob.quoting import fast_cut
from conveyor.csvjob.source import (
    Lines,
    Source,
    Span,
    check_input_exists,
    open_input,
    refuse_same_file,
)
from conveyor.job_ids import MAX_SEED, new_seed

#: Bytes read per block; each holds roughly 150,000 rows of the tutorial's shape.
DEFAULT_BLOCK_BYTES = 2 << 20
#: Threads that parse blocks while the calling thread reads the input and writes the output.
DEFAULT_WORKERS = 2
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class CsvStats:
    """What one run did: rows written, the seed used, sizes in bytes, wall seconds."""

    rows: int
    seed: int
    input_bytes: int
    output_bytes: int
    seconds: float


def transform_csv(
    input_path: Path,
    output_path: Path,
    seed: int,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int = DEFAULT_WORKERS,
    fast: bool = True,
) -> CsvStats:
    """Process ``input_path`` into ``output_path``, writing that path directly.

    ``ProcessedValue = float(Value) * factor``, each row's factor drawn from the seed and the
    row number alone (:func:`conveyor.csvjob.factors.row_factor`).

    Input rules (checked for every row; the first problem is reported as ``file:line: what``):
    UTF-8, an optional BOM, lines ending in LF or CRLF (the last line may lack one), blank
    lines only at the very end. Fields are parsed as Python's :mod:`csv` module does (excel
    dialect: quotes around a field are optional, ``""`` is a quote inside a quoted field) and
    may hold at most 131,072 characters. No NUL bytes, no CR inside an unquoted field. The
    first line is the header ``ID,Value``; every other line has exactly two fields. ``ID`` is
    any non-empty text. ``Value`` is a finite decimal number as Python's ``float()`` reads it,
    minus the extras: an optional sign, digits with an optional decimal point, an optional
    exponent (``12``, ``-3.5``, ``.5``, ``1e-3``, ``+7E+2``); no spaces, underscores, ``inf``
    or ``nan``, and nothing that overflows to infinity (``1e999``).

    Output: the header ``ID,Value,ProcessedValue``, LF line endings, ``ID`` and ``Value``
    exactly as read (quoted only when they hold a comma, a quote, CR or LF, like
    ``csv.QUOTE_MINIMAL``), and ``ProcessedValue`` as Python's ``repr`` writes the float (the
    shortest text that round-trips).

    The caller publishes the file (the worker renames it into place; :func:`process_csv` uses
    :func:`conveyor.storage.atomic_output`), which includes the final fsync; the output is
    flushed to disk in the background as it grows, so that fsync is short.

    Args:
        input_path: the CSV to read (see the input rules above).
        output_path: where to write; created or truncated.
        seed: 0 to ``MAX_SEED``; the same input and seed always give the same bytes.
        block_bytes: bytes read per block (a tuning knob; tests make it tiny).
        workers: threads that parse and format blocks (0: all in the calling thread).
        fast: False parses every record with the exact parser (slow; for cross-checks).

    Raises:
        BadInput: the input is missing, unreadable or malformed, or is the output itself.
        StorageError: the output could not be written (StorageFull when the disk is full).
    """
    return transform_span(
        input_path, output_path, seed, None, block_bytes=block_bytes, workers=workers, fast=fast
    )


def transform_span(
    input_path: Path,
    output_path: Path,
    seed: int,
    span: Span | None,
    *,
    header: bool = True,
    block_bytes: int,
    workers: int,
    fast: bool,
) -> CsvStats:
    """:func:`transform_csv` of the whole file (``span=None``) or of one shard."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}, not {seed}")
    if block_bytes < 1 or workers < 0:
        raise ValueError("block_bytes must be >= 1 and workers >= 0")
    started = time.perf_counter()
    name = str(input_path)
    with open_input(input_path) as (fd, info):
        source = Source(fd, info.st_size, name)
        if span is not None:
            source.narrow(span)
        first_row = 0 if span is None else span.first_row
        with Output(output_path, info) as out:
            if header:
                out.write(OUTPUT_HEADER)
            with _executor(workers) as pool:
                run = _Run(
                    source, seed, block_bytes=block_bytes, fast=fast, pool=pool, depth=workers + 1
                )
                rows = run.into(out, first_row)
            out.finish()
    read = info.st_size if span is None else source.data_end - source.data_start
    return CsvStats(rows, seed, read, out.written, time.perf_counter() - started)


def process_csv(input_path: Path, output_path: Path, seed: int | None = None) -> CsvStats:
    """Process ``input_path`` into ``output_path`` atomically: all of it or nothing.

    The output is written to a temporary file beside ``output_path``, fsync'ed, then renamed
    over it; on any error (or an interrupt) the temporary file is removed and a previous
    ``output_path`` is left as it was. ``seed=None`` picks one with :func:`new_seed`; it is in
    the returned stats so the run can be reproduced.

    Raises:
        BadInput: the input is missing, unreadable or malformed, or is the output itself.
        StorageError: the output could not be written (StorageFull when the disk is full).
    """
    started = time.perf_counter()
    seed = new_seed() if seed is None else seed
    check_input_exists(input_path)
    refuse_same_file(input_path, output_path)
    with atomic_output(output_path) as temp:
        stats = transform_csv(input_path, temp, seed)
    return replace(stats, seconds=time.perf_counter() - started)


class _InlineExecutor(Executor):
    """Runs each task at once in the caller's thread (``workers=0``)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def _executor(workers: int) -> Iterator[Executor]:
    """A pool of ``workers`` threads; on the way out, queued blocks are dropped, not run."""
    if workers == 0:
        yield _InlineExecutor()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="conveyor-csv")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# Rows and physical lines before a block: each block learns its own from the one before.
_Position = tuple[int, int]


def _resolved(position: _Position) -> Future[_Position]:
    future: Future[_Position] = Future()
    future.set_result(position)
    return future


class _Run:
    """One pass over the input: blocks are parsed on the pool and written in order.

    The file is read in blocks of a few MiB that end on record boundaries. A block without
    NULs, stray CRs or a leading BOM, whose quotes (if any) are plain RFC 4180 quoting, is
    parsed by polars on the pool (``fast.py``), checked with vectorised tests, and rendered.
    Any other block, and any block that fails a check, goes through the exact parser
    (``exact.py``), which names the first bad line or returns the rows. Each block learns its
    first row and line number from the one before; memory holds only ``depth`` blocks.
    """

    def __init__(
        self,
        source: Source,
        seed: int,
        *,
        block_bytes: int,
        fast: bool,
        pool: Executor,
        depth: int,
    ) -> None:
        self.source = source
        self.seed = seed
        self.block_bytes = block_bytes
        self.fast = fast
        self.pool = pool
        self.depth = depth

    def into(self, out: Output, first_row: int = 0) -> int:
        """Write every row to ``out``, the first being data row ``first_row``; return how many."""
        src = self.source
        before = _resolved((first_row, src.first_line))
        pending: deque[Future[pl.DataFrame]] = deque()
        offset = src.data_start
        while offset < src.data_end:
            block = src.read(offset, min(self.block_bytes, src.data_end - offset))
            fast = fast_cut(block, offset + len(block) >= src.data_end) if self.fast else None
            after: Future[_Position]
            if fast is None:
                rows_before, line_no = before.result()
                lines = Lines(src.read, offset, src.data_end, line_no, src.name)
                rows = parse_exact(lines, offset + len(block), src.name)
                after = _resolved((rows_before + len(rows.values), line_no + rows.lines_used))
                pending.append(self.pool.submit(render, rows, self.seed, rows_before))
                offset = lines.offset
            else:
                cut, quoted = fast
                after = Future()
                block = block[:cut] if cut < len(block) else block
                task = self.pool.submit(self._fast, block, offset, quoted, before, after)
                pending.append(task)
                offset += cut
            before = after
            while len(pending) > self.depth:
                out.write_frame(pending.popleft().result())
        while pending:
            out.write_frame(pending.popleft().result())
        return before.result()[0] - first_row

    def _fast(
        self,
        block: bytes,
        offset: int,
        quoted: bool,
        before: Future[_Position],
        after: Future[_Position],
    ) -> pl.DataFrame:
        """Parse and render one block on the pool; tell the next block where it starts."""
        try:
            rows = parse_quoted(block) if quoted else parse_plain(block)
            rows_before, line_no = before.result()
            if rows is None:  # find the bad line, or take the rows the fast path refused
                lines = Lines(
                    _reader_of(block, offset),
                    offset,
                    offset + len(block),
                    line_no,
                    self.source.name,
                )
                rows = parse_exact(lines, offset + len(block), self.source.name)
            after.set_result((rows_before + len(rows.values), line_no + rows.lines_used))
        except BaseException as exc:
            after.set_exception(exc)
            raise
        return render(rows, self.seed, rows_before)


def _reader_of(block: bytes, base: int) -> Callable[[int, int], bytes]:
    """A ``read(offset, size)`` over a block held in memory that starts at file offset ``base``."""

    def read(offset: int, size: int) -> bytes:
        return block[offset - base : offset - base + size]

    return read
