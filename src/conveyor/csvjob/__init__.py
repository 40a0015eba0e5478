"""The tutorial's CSV job: ``ID,Value`` in, ``ProcessedValue`` added, vectorised and streaming;
and one big CSV as many jobs (split into byte ranges, shards run anywhere, parts merged).

Modules: ``factors`` (the seeded row factor), ``source`` (the input file and its lines),
``exact`` (the csv-module parser), ``quoting`` (where records end), ``fast`` (the polars
path), ``output``, ``pipeline`` (``transform_csv``, ``process_csv``), ``split``, ``shard``,
``merge``. The names below are imported on first use: splitting loads no polars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.lazy import lazy_exports

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

if TYPE_CHECKING:
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

_LAZY = {
    "FACTOR_MAX": "conveyor.csvjob.factors",
    "FACTOR_MIN": "conveyor.csvjob.factors",
    "row_factor": "conveyor.csvjob.factors",
    "row_factors": "conveyor.csvjob.factors",
    "MERGE_THREADS": "conveyor.csvjob.merge",
    "MergeStats": "conveyor.csvjob.merge",
    "merge_csv_parts": "conveyor.csvjob.merge",
    "remove_parts_dir": "conveyor.csvjob.merge",
    "OUTPUT_HEADER": "conveyor.csvjob.output",
    "DEFAULT_BLOCK_BYTES": "conveyor.csvjob.pipeline",
    "DEFAULT_WORKERS": "conveyor.csvjob.pipeline",
    "CsvStats": "conveyor.csvjob.pipeline",
    "process_csv": "conveyor.csvjob.pipeline",
    "transform_csv": "conveyor.csvjob.pipeline",
    "run_shard": "conveyor.csvjob.shard",
    "transform_csv_range": "conveyor.csvjob.shard",
    "HEADER": "conveyor.csvjob.source",
    "SPLIT_BLOCK_BYTES": "conveyor.csvjob.split",
    "Shard": "conveyor.csvjob.split",
    "iter_shards": "conveyor.csvjob.split",
    "split_csv": "conveyor.csvjob.split",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
