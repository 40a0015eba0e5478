"""The output: rows rendered with their ``ProcessedValue``, written in order, synced as it grows."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from conveyor.csvjob.exact import Rows
from conveyor.csvjob.factors import row_factors
from conveyor.errors import BadInput
from conveyor.statefiles import storage_error

#: The output's header line.
OUTPUT_HEADER = b"ID,Value,ProcessedValue\n"
#: Flush the output to disk in the background every so many bytes, so the final fsync of a
#: large output is short and the page cache never holds gigabytes of dirty pages.
SYNC_EVERY_BYTES = 32 << 20
#: polars writes floats as repr does, except below this magnitude (1e-05 -> "0.00001").
_REPR_BELOW = 1e-4


class Output:
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

    def __enter__(self) -> Output:
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


def format_products(products: npt.NDArray[np.float64]) -> pl.Series:
    """``ProcessedValue``: floats polars writes as repr would; strings where it would not."""
    column = pl.Series("ProcessedValue", products)
    tiny = (np.abs(products) < _REPR_BELOW) & (products != 0)
    if not tiny.any():
        return column
    where = np.flatnonzero(tiny)
    return column.cast(pl.String).scatter(where, [repr(float(v)) for v in products[where]])


def render(rows: Rows, seed: int, row_start: int) -> pl.DataFrame:
    """The output rows of ``rows``, the first of which is data row ``row_start``."""
    with np.errstate(over="ignore"):  # a huge Value times a factor > 1 is inf, as in Python
        products = rows.values * row_factors(seed, row_start, len(rows.values))
    return pl.DataFrame([rows.lines, format_products(products)])
