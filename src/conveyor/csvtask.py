"""The tutorial's CSV job, vectorised and streaming: ``ID,Value`` in, ``ProcessedValue`` added.

``ProcessedValue = float(Value) * factor``, where each row's factor in [0.8, 1.2) comes from the
seed and the row number alone, so a retried job rewrites exactly the bytes the first attempt wrote.

Input rules (checked for every row; the first problem is reported as ``file:line: what``):

- UTF-8, an optional BOM, lines ending in LF or CRLF (the last line may lack one), blank lines
  only at the very end. Fields are parsed as Python's :mod:`csv` module does (excel dialect:
  quotes around a field are optional, ``""`` is a quote inside a quoted field) and may hold at
  most 131,072 characters. No NUL bytes, no CR inside an unquoted field.
- The first line is the header ``ID,Value``; every other line has exactly two fields.
- ``ID`` is any non-empty text. ``Value`` is a finite decimal number as Python's ``float()``
  reads it, minus the extras: an optional sign, digits with an optional decimal point, an
  optional exponent (``12``, ``-3.5``, ``.5``, ``1e-3``, ``+7E+2``); no spaces, underscores,
  ``inf`` or ``nan``, and nothing that overflows to infinity (``1e999``).

Output: the header ``ID,Value,ProcessedValue``, LF line endings, ``ID`` and ``Value`` exactly as
read (quoted only when they hold a comma, a quote, CR or LF, like ``csv.QUOTE_MINIMAL``), and
``ProcessedValue`` as Python's ``repr`` writes the float (the shortest text that round-trips).

The row factor: for data row ``i`` (0 for the first row after the header), ``k`` is the top 53
bits of output ``i`` of SplitMix64 seeded with ``seed`` (``mix64(seed + (i + 1) * GAMMA)``),
and ``factor = min(0.8 + 0.4 * (k / 2**53), 1.2 - ulp)`` in double precision (the clamp only
touches the one top value that rounds up to 1.2).

How it is fast: the file is read in blocks of a few MiB that end on record boundaries. A
block without NULs, stray CRs or a leading BOM, whose quotes (if any) are plain RFC 4180
quoting, is parsed by polars (Rust, several threads) on a worker thread, checked with vectorised
tests, and its ``ProcessedValue`` written by polars' CSV writer, which writes the digits repr
writes except for tiny magnitudes, patched with ``repr`` itself. Any other block, and any
block that fails a check, goes through the exact parser (the csv module, a record at a time),
which names the first bad line or returns the rows. Blocks are written in order straight to
the output; memory holds only a few blocks at a time.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import math
import os
import re
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from conveyor.errors import BadInput
from conveyor.storage import atomic_output, storage_error

__all__ = [
    "FACTOR_MAX",
    "FACTOR_MIN",
    "HEADER",
    "MAX_SEED",
    "CsvStats",
    "new_seed",
    "process_csv",
    "row_factor",
    "row_factors",
    "transform_csv",
    "transform_csv_range",
]

#: The input's header line, and the output's.
HEADER = "ID,Value"
OUTPUT_HEADER = b"ID,Value,ProcessedValue\n"
#: Seeds are 63-bit so they fit any signed 64-bit integer (SQLite, JSON readers, Kubernetes).
MAX_SEED = 2**63 - 1
#: Every factor is in [FACTOR_MIN, FACTOR_MAX]; FACTOR_MAX is the largest double below 1.2.
FACTOR_MIN = 0.8
FACTOR_MAX = math.nextafter(1.2, 0.0)
#: The csv module's default limit on one field, in characters; applied to every block.
FIELD_LIMIT = 131_072
#: A physical line longer than this is refused before it is held in memory.
MAX_LINE_BYTES = 4 << 20
#: Bytes read per block; each holds roughly 150,000 rows of the tutorial's shape.
DEFAULT_BLOCK_BYTES = 2 << 20
#: Threads that parse blocks while the calling thread reads the input and writes the output.
DEFAULT_WORKERS = 2
#: Flush the output to disk in the background every so many bytes, so the final fsync of a
#: large output is short and the page cache never holds gigabytes of dirty pages.
SYNC_EVERY_BYTES = 32 << 20

_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2**64 / golden ratio)
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = 2**64 - 1
_BOM = b"\xef\xbb\xbf"
#: polars writes floats as repr does, except below this magnitude (1e-05 -> "0.00001").
_REPR_BELOW = 1e-4
_VALUE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_P = ParamSpec("_P")
_T = TypeVar("_T")
_LINE_SCHEMA = {"line": pl.String}
_VALUE_SCHEMA = {"ID": pl.String, "Value": pl.Float64}
_TEXT_SCHEMA = {"ID": pl.String, "Value": pl.String}


@dataclass(frozen=True)
class CsvStats:
    """What one run did: rows written, the seed used, sizes in bytes, wall seconds."""

    rows: int
    seed: int
    input_bytes: int
    output_bytes: int
    seconds: float


def new_seed() -> int:
    """A fresh random seed, ``0 <= seed <= MAX_SEED``, from the OS's secure generator."""
    return secrets.randbits(63)


# --- the row factor -------------------------------------------------------------------------


def row_factors(seed: int, start: int, count: int) -> npt.NDArray[np.float64]:
    """The factors of data rows ``start .. start + count - 1`` (0-based) for ``seed``.

    Counter-based (SplitMix64 on the row number), so any slice of rows gets the same factors
    whatever the chunking; numpy's uint64 arithmetic wraps modulo 2**64 as SplitMix64 needs.
    """
    z = np.arange(start, start + count, dtype=np.uint64)
    z *= np.uint64(_GAMMA)
    z += np.uint64((seed + _GAMMA) & _MASK64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    z >>= np.uint64(11)
    factors = z.astype(np.float64)
    factors *= 2.0**-53
    factors *= 0.4
    factors += FACTOR_MIN
    np.minimum(factors, FACTOR_MAX, out=factors)
    return factors


def row_factor(seed: int, row: int) -> float:
    """The factor of one data row: the scalar twin of :func:`row_factors` (documentation, tests)."""
    z = (seed + (row + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    z ^= z >> 31
    return min(FACTOR_MIN + 0.4 * ((z >> 11) * 2.0**-53), FACTOR_MAX)


# --- the public entry points -------------------------------------------------------------------


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

    The caller publishes the file (the worker renames it into place; :func:`process_csv` uses
    :func:`conveyor.storage.atomic_output`), which includes the final fsync; the output is
    flushed to disk in the background as it grows, so that fsync is short.

    Args:
        input_path: the CSV to read (see the module docstring for what it may hold).
        output_path: where to write; created or truncated.
        seed: 0 to ``MAX_SEED``; the same input and seed always give the same bytes.
        block_bytes: bytes read per block (a tuning knob; tests make it tiny).
        workers: threads that parse and format blocks (0: all in the calling thread).
        fast: False parses every record with the exact parser (slow; for cross-checks).

    Raises:
        BadInput: the input is missing, unreadable or malformed, or is the output itself.
        StorageError: the output could not be written (StorageFull when the disk is full).
    """
    return _transform(
        input_path, output_path, seed, None, block_bytes=block_bytes, workers=workers, fast=fast
    )


def transform_csv_range(
    input_path: Path,
    output_path: Path,
    seed: int,
    *,
    start_byte: int,
    end_byte: int,
    first_row: int,
    first_line: int,
    header: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int = DEFAULT_WORKERS,
    fast: bool = True,
) -> CsvStats:
    """Process only the rows in bytes ``[start_byte, end_byte)`` of ``input_path`` (a shard).

    The output holds exactly the lines :func:`transform_csv` writes for those rows, so the
    header (``header=True``, for the first shard) followed by every shard's output in order
    is byte-identical to the whole file's. The range comes from
    :func:`conveyor.csvsplit.split_csv`: whole records, after the header. ``first_row`` is the
    data row number of its first record (0-based, as :func:`row_factors` counts) and
    ``first_line`` the file's line number of it, so errors name the file's real line. The
    header is still read and checked; bytes past the file's last row are ignored.

    Args:
        workers: threads that parse and format blocks; 0 runs everything in the calling
            thread, for a worker process that must stay on one core (polars' own thread pool
            is sized by ``POLARS_MAX_THREADS``, read when polars is first imported).

    Raises:
        BadInput: the input is missing, unreadable or malformed, or the range is not one of
            whole lines after its header (the file changed since it was split).
        StorageError: the output could not be written (StorageFull when the disk is full).
    """
    if not 0 <= start_byte <= end_byte or first_row < 0 or first_line < 2:
        raise ValueError(
            "need 0 <= start_byte <= end_byte, first_row >= 0 and first_line >= 2, not "
            f"{start_byte}, {end_byte}, {first_row}, {first_line}"
        )
    span = _Span(start_byte, end_byte, first_row, first_line)
    return _transform(
        input_path,
        output_path,
        seed,
        span,
        header=header,
        block_bytes=block_bytes,
        workers=workers,
        fast=fast,
    )


@dataclass(frozen=True)
class _Span:
    """The part of a file one shard processes (see :func:`transform_csv_range`)."""

    start: int
    end: int
    first_row: int
    first_line: int


def _transform(
    input_path: Path,
    output_path: Path,
    seed: int,
    span: _Span | None,
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
    with _open_input(input_path) as (fd, info):
        source = _Source(fd, info.st_size, name)
        if span is not None:
            source.narrow(span)
        first_row = 0 if span is None else span.first_row
        with _Output(output_path, info) as out:
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
    _check_input_exists(input_path)
    _refuse_same_file(input_path, output_path)
    with atomic_output(output_path) as temp:
        stats = transform_csv(input_path, temp, seed)
    return replace(stats, seconds=time.perf_counter() - started)


# --- input and output files ------------------------------------------------------------------


def _input_error(name: str, exc: OSError) -> BadInput:
    if isinstance(exc, FileNotFoundError):
        return BadInput(f"{name}: no such file")
    if isinstance(exc, PermissionError):
        return BadInput(f"{name}: permission denied")
    return BadInput(f"{name}: cannot read ({exc.strerror or exc})")


def _check_input_exists(input_path: Path) -> None:
    try:
        os.stat(input_path)
    except OSError as exc:
        raise _input_error(str(input_path), exc) from exc


def _refuse_same_file(input_path: Path, output_path: Path) -> None:
    with contextlib.suppress(OSError):
        if os.path.samefile(input_path, output_path):
            raise BadInput(f"{output_path}: the output would overwrite its own input")


@contextlib.contextmanager
def _open_input(input_path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """Open the input for reading; one clear BadInput when that is not possible."""
    name = str(input_path)
    try:
        # O_NONBLOCK: a FIFO is refused below instead of waiting for a writer.
        fd = os.open(input_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _input_error(name, exc) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadInput(f"{name}: is a directory, not a CSV file")
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{name}: not a regular file")
        yield fd, info
    finally:
        os.close(fd)


class _Output:
    """The output file: ordered writes, with a background fdatasync every SYNC_EVERY_BYTES."""

    def __init__(self, path: Path, input_info: os.stat_result) -> None:
        self.path = path
        self.written = 0
        self._synced = 0
        self._sync: Future[None] | None = None
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="conveyor-csv-sync")
        try:
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.stat(path), input_info):
                    raise BadInput(f"{path}: the output would overwrite its own input")
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            self._file = open(self.fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
        except OSError as exc:
            self._syncer.shutdown()
            raise storage_error(exc, f"cannot write {path}") from exc
        except BaseException:
            self._syncer.shutdown()
            raise

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self._syncer.shutdown(wait=True)
        self._file.close()
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        """Write all of ``data`` at the end of the file."""
        self._guard(lambda: self._file.write(data))

    def write_frame(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` as CSV rows; polars writes straight to the file descriptor."""
        # The lines are already quoted as needed, and numbers never need quotes.
        self._guard(lambda: frame.write_csv(self._file, include_header=False, quote_style="never"))

    def _guard(self, write: Callable[[], object]) -> None:
        try:
            write()
            self.written = os.lseek(self.fd, 0, os.SEEK_CUR)
        except (OSError, pl.exceptions.PolarsError) as exc:  # polars raises errno-less ones
            code = _errno_of(exc)
            error = OSError(code, os.strerror(code))
            raise storage_error(error, f"cannot write {self.path}") from exc
        if self.written - self._synced >= SYNC_EVERY_BYTES and (
            self._sync is None or self._sync.done()
        ):
            self._synced = self.written
            self._sync = self._syncer.submit(self._flush)

    def finish(self) -> None:
        """Wait for the background flush, so the publisher's fsync has little left to do."""
        if self._sync is not None:
            self._sync.result()

    def _flush(self) -> None:
        # Best effort: a failing disk fails the publisher's own fsync, which reports it.
        with contextlib.suppress(OSError):
            os.fdatasync(self.fd)


def _errno_of(exc: Exception) -> int:
    """The errno of an I/O error, also when polars only names it in its message."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    text = str(exc)
    found = re.search(r"\(os error (\d+)\)", text)
    if found:
        return int(found.group(1))
    for code in (errno.ENOSPC, errno.EDQUOT):
        if os.strerror(code) in text:
            return code
    return errno.EIO


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


# --- the file's layout and its exact parser -------------------------------------------------------


class _Source:
    """The input file: its name for messages, and where its header and data start and end."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd = fd
        self.size = size
        self.name = name
        #: Offset just past the last byte that is not CR or LF: trailing blank lines are ignored.
        self.data_end = self._content_end()
        start = len(_BOM) if self.read(0, len(_BOM)) == _BOM else 0
        if start >= self.data_end:
            raise BadInput(f"{name}: empty file")
        lines = _Lines(self.read, start, self.data_end, 1, name)
        try:
            header = next(csv.reader(lines), [])
        except csv.Error as exc:
            raise BadInput(f"{name}:{lines.line_no}: {_csv_problem(exc)}") from exc
        self._check_header(header)
        self.data_start = lines.offset
        #: Number of the first line after the header.
        self.first_line = lines.line_no + 1

    def narrow(self, span: _Span) -> None:
        """Keep only ``span``'s rows; BadInput unless it is whole lines after the header."""
        if not (
            self.data_start <= span.start
            and span.end <= self.size
            and self._starts_line(span.start)
            and (span.end >= self.data_end or self._starts_line(span.end))
        ):
            raise BadInput(
                f"{self.name}: bytes {span.start}..{span.end} are not whole lines after the "
                "header (has the file changed since it was split?)"
            )
        self.data_start = span.start
        self.data_end = max(span.start, min(span.end, self.data_end))
        self.first_line = span.first_line

    def _starts_line(self, offset: int) -> bool:
        return offset == self.data_start or self.read(offset - 1, 1) == b"\n"

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``."""
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise _input_error(self.name, exc) from exc

    def _content_end(self) -> int:
        end = self.size
        while end > 0:
            tail = self.read(max(0, end - 65536), min(end, 65536))
            stripped = tail.rstrip(b"\r\n")
            if stripped:
                return end - len(tail) + len(stripped)
            end -= len(tail)
        return 0

    def _check_header(self, fields: list[str]) -> None:
        if fields == ["ID", "Value"]:
            return
        found = _show(",".join(fields))
        if len(fields) == 2 and _VALUE.fullmatch(fields[1]):
            raise BadInput(
                f"{self.name}:1: missing header: the first line must be {HEADER!r}, "
                f"found the data row {found}"
            )
        raise BadInput(f"{self.name}:1: expected header {HEADER!r}, found {found}")


class _Lines:
    """Physical lines (ending in LF) of ``[offset, end)``, decoded, for :func:`csv.reader`.

    After each record the reader returns, ``offset`` is where the next record starts and
    ``line_no`` the number of the last line consumed.
    """

    def __init__(
        self, read: Callable[[int, int], bytes], offset: int, end: int, line_no: int, name: str
    ) -> None:
        self.offset = offset
        self.line_no = line_no - 1
        self._read = read
        self._end = end
        self._name = name
        self._buf = b""
        self._pos = 0  # index in _buf of the byte at `offset`

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.offset >= self._end:
            raise StopIteration
        newline = self._buf.find(b"\n", self._pos)
        while newline < 0 and self.offset + len(self._buf) - self._pos < self._end:
            if len(self._buf) - self._pos > MAX_LINE_BYTES:
                raise BadInput(f"{self._where(1)}: line longer than {MAX_LINE_BYTES} bytes")
            have = len(self._buf) - self._pos
            more = self._read(self.offset + have, min(1 << 20, self._end - self.offset - have))
            if not more:
                break
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
            newline = self._buf.find(b"\n", have)
        stop = min(
            newline + 1 if newline >= 0 else len(self._buf), self._pos + self._end - self.offset
        )
        raw = self._buf[self._pos : stop]
        if len(raw) > MAX_LINE_BYTES:
            raise BadInput(f"{self._where(1)}: line longer than {MAX_LINE_BYTES} bytes")
        self._pos = stop
        self.offset += len(raw)
        self.line_no += 1
        return self._decode(raw)

    def _decode(self, raw: bytes) -> str:
        if b"\0" in raw:
            raise BadInput(f"{self._where(0)}: contains a NUL byte")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{self._where(0)}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                f"at column {exc.start + 1})"
            ) from exc

    def _where(self, ahead: int) -> str:
        return f"{self._name}:{self.line_no + ahead}"


def _show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _quote(field: str) -> str:
    """A field as csv.QUOTE_MINIMAL writes it (CR also quoted: it would break the line)."""
    if _NEEDS_QUOTES.search(field):
        return '"' + field.replace('"', '""') + '"'
    return field


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if text.startswith("field larger than field limit"):
        return f"a field is longer than {FIELD_LIMIT} characters"
    if text.startswith("new-line character seen in unquoted field"):
        return "carriage return (CR) inside an unquoted field; lines must end in LF or CRLF"
    return text


@dataclass
class _Rows:
    """Rows ready to render: output lines ``ID,Value`` (quoted as needed) and parsed values."""

    lines: pl.Series
    values: npt.NDArray[np.float64]
    lines_used: int  # physical lines the rows took


def _parse_exact(lines: _Lines, stop: int, name: str) -> _Rows:
    """Parse records from ``lines`` until one ends at or after byte ``stop``.

    Raises:
        BadInput: the first malformed record, with its line number.
    """
    reader = csv.reader(lines)
    first_line = lines.line_no + 1
    out: list[str] = []
    values: list[float] = []
    while lines.offset < stop:
        line_no = lines.line_no + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise BadInput(f"{name}:{lines.line_no}: {_csv_problem(exc)}") from exc
        ident, value = _check_record(fields, name, line_no)
        out.append(_quote(ident) + "," + value)
        values.append(float(value))
    return _Rows(
        pl.Series("line", out, dtype=pl.String),
        np.array(values, dtype=np.float64),
        lines.line_no + 1 - first_line,
    )


def _check_record(fields: list[str], name: str, line_no: int) -> tuple[str, str]:
    """The record's ID and Value text, or BadInput saying what is wrong with it."""
    where = f"{name}:{line_no}"
    if len(fields) != 2:
        if not fields:
            raise BadInput(f"{where}: blank line (blank lines may only end the file)")
        raise BadInput(f"{where}: expected 2 fields (ID,Value), found {len(fields)}")
    ident, value = fields
    if not ident:
        raise BadInput(f"{where}: empty ID")
    if not value:
        raise BadInput(f"{where}: empty Value")
    if not _VALUE.fullmatch(value) or not math.isfinite(float(value)):
        raise BadInput(f"{where}: Value {_show(value)} is not a finite number")
    return ident, value


# --- the fast path ------------------------------------------------------------------------------


def _fast_cut(block: bytes, at_end: bool) -> tuple[int, bool] | None:
    """How much of ``block`` the fast path can take, and whether it holds quotes.

    Returns ``(cut, quoted)``: the first ``cut`` bytes are whole records. None sends the block
    to the exact parser: a NUL (the fast path's line separator), a BOM (polars would drop one
    that starts a block), a CR that does not end a line, or quotes that polars could read
    differently from the csv module.
    """
    if block.startswith(_BOM) or block.find(b"\0") >= 0:
        return None
    if block.find(b'"') >= 0:
        return _quoted_cut(block, at_end)
    cut = len(block) if at_end else block.rfind(b"\n") + 1
    if cut == 0:
        return None
    if block.find(b"\r", 0, cut) >= 0 and block.count(b"\r", 0, cut) != block.count(
        b"\r\n", 0, cut
    ):
        return None
    return cut, False


def _quoted_cut(block: bytes, at_end: bool) -> tuple[int, bool] | None:
    """The cut of a block with quotes, if they are all RFC 4180 quoting.

    Quotes then toggle "inside a quoted field" one by one, so a line feed after an even number
    of quotes ends a record. On such text the csv module and polars agree; anything else (a
    quote inside an unquoted field, text after a closing quote, a CR inside quotes) is left to
    the exact parser, which reads it as the csv module does.
    """
    data = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if at_end:
        cut = len(block) if len(quotes) % 2 == 0 else 0
    else:
        newlines = np.flatnonzero(data == ord("\n"))
        outside = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        cut = int(outside[-1]) + 1 if len(outside) else 0
    if cut == 0:
        return None
    quotes = quotes[: np.searchsorted(quotes, cut)]
    opening, closing = quotes[0::2], quotes[1::2]
    # An opening quote starts a field, or doubles the closing quote just before it.
    before = data[np.maximum(opening - 1, 0)]
    if not np.all(
        (opening == 0) | (before == ord(",")) | (before == ord("\n")) | (before == ord('"'))
    ):
        return None
    # A closing quote ends a field, or is doubled by the opening quote just after it.
    after = data[np.minimum(closing + 1, len(block) - 1)]
    ends = (after == ord(",")) | (after == ord("\n")) | (after == ord("\r")) | (after == ord('"'))
    if not np.all(ends | (closing == len(block) - 1)):
        return None
    # Every CR ends a line (CRLF), outside quotes.
    returns = np.flatnonzero(data[:cut] == ord("\r"))
    if len(returns) and (
        returns[-1] + 1 >= len(block)
        or not np.all(data[returns + 1] == ord("\n"))
        or np.any(np.searchsorted(quotes, returns) % 2)
    ):
        return None
    return cut, True


def _parse_plain(block: bytes) -> _Rows | None:
    """Parse a quote-free block with polars; None when any row breaks a rule."""
    try:
        lines = pl.read_csv(
            block, has_header=False, schema=_LINE_SCHEMA, separator="\0", quote_char=None
        ).to_series()
        values = pl.read_csv(
            block, has_header=False, schema=_VALUE_SCHEMA, quote_char=None, columns=[1]
        ).to_series()
    except pl.exceptions.PolarsError:  # more than two fields, bad UTF-8, a non-number
        return None
    if len(lines) != len(values) or lines.null_count() or values.null_count():
        return None  # blank lines, a missing Value
    if np.count_nonzero(np.frombuffer(block, np.uint8) == ord(",")) != len(lines):
        return None  # every line has a comma (else its Value is missing): one has more
    array = values.to_numpy()
    if (
        lines.str.starts_with(",").any()
        or (lines.str.len_bytes() > FIELD_LIMIT).any()
        or not np.isfinite(array).all()
    ):
        return None
    # polars' number parser skips leading spaces and tabs, which the rule refuses.
    if (block.find(b" ") >= 0 or block.find(b"\t") >= 0) and lines.str.contains(",[ \t]").any():
        return None
    return _Rows(lines, array, len(lines))


def _parse_quoted(block: bytes) -> _Rows | None:
    """Parse a block of RFC 4180 records with polars; None when any row breaks a rule."""
    try:
        frame = pl.read_csv(block, has_header=False, schema=_TEXT_SCHEMA, quote_char='"')
    except pl.exceptions.PolarsError:  # more than two fields, bad UTF-8
        return None
    ident, value = frame.get_column("ID"), frame.get_column("Value")
    numbers = value.cast(pl.Float64, strict=False)  # strict syntax: no spaces, as the rule says
    if ident.null_count() or numbers.null_count():
        return None  # blank lines, missing or empty fields, a non-number
    array = numbers.to_numpy()
    if (
        (ident == "").any()
        or (ident.str.len_chars() > FIELD_LIMIT).any()
        or (value.str.len_chars() > FIELD_LIMIT).any()
        or not np.isfinite(array).all()
    ):
        return None
    needs_quotes = pl.col("ID").str.contains(r'[,"\r\n]')
    quoted = pl.lit('"') + pl.col("ID").str.replace_all('"', '""', literal=True) + pl.lit('"')
    lines = frame.select(
        pl.concat_str(
            [pl.when(needs_quotes).then(quoted).otherwise(pl.col("ID")), pl.col("Value")],
            separator=",",
        ).alias("line")
    ).to_series()
    used = block.count(b"\n") + (not block.endswith(b"\n"))
    return _Rows(lines, array, used)


def _format_products(products: npt.NDArray[np.float64]) -> pl.Series:
    """``ProcessedValue``: floats polars writes as repr would; strings where it would not."""
    column = pl.Series("ProcessedValue", products)
    tiny = (np.abs(products) < _REPR_BELOW) & (products != 0)
    if not tiny.any():
        return column
    where = np.flatnonzero(tiny)
    return column.cast(pl.String).scatter(where, [repr(float(v)) for v in products[where]])


def _render(rows: _Rows, seed: int, row_start: int) -> pl.DataFrame:
    """The output rows of ``rows``, the first of which is data row ``row_start``."""
    with np.errstate(over="ignore"):  # a huge Value times a factor > 1 is inf, as in Python
        products = rows.values * row_factors(seed, row_start, len(rows.values))
    return pl.DataFrame([rows.lines, _format_products(products)])


# Rows and physical lines before a block: each block learns its own from the one before.
_Position = tuple[int, int]


def _resolved(position: _Position) -> Future[_Position]:
    future: Future[_Position] = Future()
    future.set_result(position)
    return future


class _Run:
    """One pass over the input: blocks are parsed on the pool and written in order."""

    def __init__(
        self,
        source: _Source,
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

    def into(self, out: _Output, first_row: int = 0) -> int:
        """Write every row to ``out``, the first being data row ``first_row``; return how many."""
        src = self.source
        before = _resolved((first_row, src.first_line))
        pending: deque[Future[pl.DataFrame]] = deque()
        offset = src.data_start
        while offset < src.data_end:
            block = src.read(offset, min(self.block_bytes, src.data_end - offset))
            fast = _fast_cut(block, offset + len(block) >= src.data_end) if self.fast else None
            after: Future[_Position]
            if fast is None:
                rows_before, line_no = before.result()
                lines = _Lines(src.read, offset, src.data_end, line_no, src.name)
                rows = _parse_exact(lines, offset + len(block), src.name)
                after = _resolved((rows_before + len(rows.values), line_no + rows.lines_used))
                pending.append(self.pool.submit(_render, rows, self.seed, rows_before))
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
            rows = _parse_quoted(block) if quoted else _parse_plain(block)
            rows_before, line_no = before.result()
            if rows is None:  # find the bad line, or take the rows the fast path refused
                lines = _Lines(
                    _reader_of(block, offset),
                    offset,
                    offset + len(block),
                    line_no,
                    self.source.name,
                )
                rows = _parse_exact(lines, offset + len(block), self.source.name)
            after.set_result((rows_before + len(rows.values), line_no + rows.lines_used))
        except BaseException as exc:
            after.set_exception(exc)
            raise
        return _render(rows, self.seed, rows_before)


def _reader_of(block: bytes, base: int) -> Callable[[int, int], bytes]:
    """A ``read(offset, size)`` over a block held in memory that starts at file offset ``base``."""

    def read(offset: int, size: int) -> bytes:
        return block[offset - base : offset - base + size]

    return read
