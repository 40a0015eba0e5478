"""Two copies of a split CSV's merge at the same moment (an SQS message delivered twice,
a completion sent again after a crash): both end well and the output is the one merge.

The ledger makes exactly one completion *job* per group; what this checks is that two
*runs* of it, in two processes racing on the same parts, cannot publish anything else,
fail, or leave a part or a temporary file behind.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from conveyor.csvjob.merge import merge_csv_parts, remove_parts_dir
from conveyor.csvjob.pipeline import transform_csv
from conveyor.csvjob.shard import run_shard
from conveyor.csvjob.split import split_csv

SEED = 20261206
ROWS = 200_000
ROUNDS = 6


def _make_input(path: Path) -> None:
    with path.open("w", newline="") as f:
        f.write("ID,Value\n")
        for index in range(1, ROWS + 1):
            f.write(f"r{index},{(index * 7919) % 100_000 / 100}\n")


def _merge(parts: list[Path], output: Path, barrier: Barrier) -> str:
    barrier.wait(timeout=30)
    stats = merge_csv_parts(parts, output)
    remove_parts_dir(parts[0].parent)
    return "already" if stats.already_merged else "merged"


def _make_parts(source: Path, directory: Path) -> list[Path]:
    directory.mkdir()
    parts = []
    for shard in split_csv(source, ROWS // 8):
        part = directory / f"part-{shard.index:03d}.csv"
        run_shard(source, part, SEED, shard)
        parts.append(part)
    return parts


@pytest.mark.timeout(120)
def test_two_merges_racing_publish_the_one_output_and_leave_nothing(tmp_path: Path) -> None:
    # Given a CSV, its whole-file output, and the parts of its split run
    source = tmp_path / "big.csv"
    _make_input(source)
    expected = tmp_path / "expected.csv"
    transform_csv(source, expected, SEED)
    context = get_context("spawn")
    outcomes: set[str] = set()
    with context.Pool(2) as pool, context.Manager() as manager:
        for round_ in range(ROUNDS):
            directory = tmp_path / f"parts-{round_}"
            parts = _make_parts(source, directory)
            output = tmp_path / f"out-{round_}.csv"
            barrier = manager.Barrier(2)
            # When two processes merge them at the same moment
            results = pool.starmap(_merge, [(parts, output, barrier)] * 2)
            outcomes.update(results)
            # Then both succeed, the output is the whole-file run's, byte for byte
            assert output.read_bytes() == expected.read_bytes()
            # And no part, part directory or temporary file is left
            assert not directory.exists()
            assert sorted(os.listdir(tmp_path)) == sorted(
                ["big.csv", "expected.csv", *(f"out-{r}.csv" for r in range(round_ + 1))]
            )
    assert "merged" in outcomes, outcomes
