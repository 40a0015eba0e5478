"""The tutorial's CSV job: ``ID,Value`` in, ``ProcessedValue`` added, vectorised and streaming;
and one big CSV as many jobs (split into byte ranges, shards run anywhere, parts merged).

Modules: ``factors`` (the seeded row factor), ``source`` (the input file and its lines),
``exact`` (the csv-module parser), ``quoting`` (where records end), ``fast`` (the polars
path), ``output``, ``pipeline`` (``transform_csv``, ``process_csv``), ``split``, ``shard``,
``merge``. The names below are imported on first use: splitting loads no polars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    "FACTOR_MAX": "factors",
    "FACTOR_MIN": "factors",
    "row_factor": "factors",
    "row_factors": "factors",
    "MERGE_THREADS": "merge",
    "MergeStats": "merge",
    "merge_csv_parts": "merge",
    "remove_parts_dir": "merge",
    "OUTPUT_HEADER": "output",
    "DEFAULT_BLOCK_BYTES": "pipeline",
    "DEFAULT_WORKERS": "pipeline",
    "CsvStats": "pipeline",
    "process_csv": "pipeline",
    "transform_csv": "pipeline",
    "run_shard": "shard",
    "transform_csv_range": "shard",
    "HEADER": "source",
    "SPLIT_BLOCK_BYTES": "split",
    "Shard": "split",
    "iter_shards": "split",
    "split_csv": "split",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.csvjob' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"conveyor.csvjob.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
