"""The tutorial's CSV job: ``ID,Value`` in, ``ProcessedValue`` added, vectorised and streaming;
and one big CSV as many jobs (split into byte ranges, shards run anywhere, parts merged).

Modules: ``factors`` (the seeded row factor), ``source`` (the input file), ``exact`` (the
csv-module parser), ``fast`` (the polars path), ``output``, ``pipeline`` (``transform_csv``,
``process_csv``), ``split``, ``shard``, ``merge``. Importing this loads numpy and polars.
"""

from conveyor.csvjob.factors import FACTOR_MAX, FACTOR_MIN, row_factor, row_factors
from conveyor.csvjob.merge import MERGE_THREADS, MergeStats, merge_csv_parts, remove_parts_dir
from conveyor.csvjob.output import OUTPUT_HEADER
from conveyor.csvjob.pipeline import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_WORKERS,
    CsvStats,
    process_csv,
    transform_csv,
)
from conveyor.csvjob.shard import run_shard, transform_csv_range
from conveyor.csvjob.source import HEADER
from conveyor.csvjob.split import SPLIT_BLOCK_BYTES, Shard, iter_shards, split_csv

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_WORKERS",
    "FACTOR_MAX",
    "FACTOR_MIN",
    "HEADER",
    "MERGE_THREADS",
    "OUTPUT_HEADER",
    "SPLIT_BLOCK_BYTES",
    "CsvStats",
    "MergeStats",
    "Shard",
    "iter_shards",
    "merge_csv_parts",
    "process_csv",
    "remove_parts_dir",
    "row_factor",
    "row_factors",
    "run_shard",
    "split_csv",
    "transform_csv",
    "transform_csv_range",
]
