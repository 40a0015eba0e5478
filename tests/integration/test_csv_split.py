"""A few million rows split into shards of a million: the merge is ``conveyor run``'s output."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conveyor.csvjob.merge import merge_csv_parts
from conveyor.csvjob.shard import run_shard
from conveyor.csvjob.split import Shard, split_csv

ROWS = 3_000_000
SEED = 987654321


def make_big_csv(path: Path, rows: int) -> None:
    """IDs ``r1..rN`` with a quoted ``"q,N"`` every 997th row, values with 0 to 3 decimals."""
    rng = np.random.default_rng(rows)
    index = np.arange(1, rows + 1)
    cents = rng.integers(-(10**6), 10**6, rows)
    frame = pl.DataFrame({"i": index, "v": cents}).select(
        pl.when(pl.col("i") % 997 == 0)
        .then(pl.format('"q,{}"', "i"))
        .otherwise(pl.format("r{}", "i"))
        .alias("ID"),
        (pl.col("v") / 100).cast(pl.String).alias("Value"),
    )
    with path.open("wb") as f:
        f.write(b"ID,Value\n")
        frame.write_csv(f, include_header=False, quote_style="never")


def digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run_shards_elsewhere(source: Path, directory: Path, shards: list[Shard]) -> list[Path]:
    """Run the shards in two other processes, last first: order and place do not matter."""
    jobs = [(source, directory / f"part-{s.index:03d}.csv", s) for s in reversed(shards)]
    with get_context("spawn").Pool(2) as pool:
        pool.starmap(_run_one, jobs)
    return sorted(directory.glob("part-*.csv"))


def _run_one(source: Path, part: Path, shard: Shard) -> None:
    run_shard(source, part, SEED, shard)


@pytest.mark.timeout(60)
def test_million_row_shards_match_conveyor_run(tmp_path: Path) -> None:
    # Given a CSV of three million rows and `conveyor run`'s output for it
    source = tmp_path / "big.csv"
    make_big_csv(source, ROWS)
    expected = tmp_path / "run.csv"
    subprocess.run(
        [sys.executable, "-m", "conveyor", "run", source, "-o", expected, "--seed", str(SEED)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # When it is split into shards of a million rows, run in two processes, and merged
    shards = split_csv(source, 1_000_000)
    assert [(s.first_row, s.rows) for s in shards] == [
        (0, 10**6),
        (10**6, 10**6),
        (2 * 10**6, 10**6),
    ]
    parts = run_shards_elsewhere(source, tmp_path, shards)
    final = tmp_path / "merged.csv"
    merge_csv_parts(parts, final)
    # Then the merged file is byte-identical, and only it and the two inputs are left
    assert final.stat().st_size == expected.stat().st_size
    assert digest(final) == digest(expected)
    assert sorted(os.listdir(tmp_path)) == ["big.csv", "merged.csv", "run.csv"]
