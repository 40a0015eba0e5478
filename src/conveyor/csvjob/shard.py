"""Running one shard: the rows of a byte range, exactly as the whole-file run writes them."""

from __future__ import annotations

from pathlib import Path

from conveyor.csvjob.pipeline import DEFAULT_BLOCK_BYTES, DEFAULT_WORKERS, CsvStats, transform_span
from conveyor.csvjob.source import Span
from conveyor.csvjob.split import Shard


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
    is byte-identical to the whole file's. The range comes from :func:`split_csv`: whole
    records, after the header. ``first_row`` is the data row number of its first record
    (0-based, as :func:`row_factors` counts) and ``first_line`` the file's line number of it,
    so errors name the file's real line. The header is still read and checked; bytes past
    the file's last row are ignored.

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
    span = Span(start_byte, end_byte, first_row, first_line)
    return transform_span(
        input_path,
        output_path,
        seed,
        span,
        header=header,
        block_bytes=block_bytes,
        workers=workers,
        fast=fast,
    )


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
