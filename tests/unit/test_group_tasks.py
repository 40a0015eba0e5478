"""The split CSV's built-in tasks and the tolerance parsing of group submits."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.client_groups import tolerated_failures
from conveyor.csvjob import split_csv
from conveyor.default_tasks import csv_merge, csv_shard
from conveyor.errors import BadInput
from conveyor.jobs import Job
from conveyor.storage import Storage
from conveyor.task_context import TaskContext


@pytest.mark.parametrize(
    ("given", "total", "expected"),
    [(0, 10, 0), (3, 10, 3), ("3", 10, 3), ("10%", 40, 4), ("10%", 15, 1), ("100%", 7, 7)],
)
def test_tolerated_failures_are_a_count_or_a_percentage(
    given: int | str, total: int, expected: int
) -> None:
    assert tolerated_failures(given, total) == expected


@pytest.mark.parametrize("given", [-1, "-1", "x", "101%", "nan%", "%"])
def test_bad_tolerated_failures_are_refused(given: int | str) -> None:
    with pytest.raises(BadInput, match="bad tolerated failures"):
        tolerated_failures(given, 10)


def _shard_parts(root: Path, rows: int, per_shard: int) -> tuple[list[str], bytes]:
    """Run every shard of a file into its part; the parts and the whole file's output."""
    from conveyor.csvjob import transform_csv

    source = root / "in.csv"
    source.write_text("ID,Value\n" + "".join(f"{i},{i}.5\n" for i in range(rows)))
    whole = root / "whole.csv"
    transform_csv(source, whole, 9)
    parts = []
    for shard in split_csv(source, per_shard):
        part = f"out.csv.parts-g/{shard.index:06d}.csv"
        (root / part).parent.mkdir(exist_ok=True)
        job = Job(job_id=f"s{shard.index}", task="csv-shard", params=shard.to_params(), seed=9)
        csv_shard(TaskContext(job, source, root / part, root / part))
        parts.append(part)
    return parts, whole.read_bytes()


def _merge(root: Path, parts: list[str]) -> dict[str, object]:
    job = Job(
        job_id="g-merge", task="csv-merge", params={"output": "out.csv", "parts": parts}, seed=1
    )
    return csv_merge(TaskContext(job, None, None, None, storage=Storage(root)))


def test_the_merge_of_the_shards_is_the_whole_files_output_and_runs_twice_safely(
    tmp_path: Path,
) -> None:
    parts, expected = _shard_parts(tmp_path, 23, 5)
    assert _merge(tmp_path, parts)["already_merged"] is False
    assert (tmp_path / "out.csv").read_bytes() == expected
    assert not (tmp_path / "out.csv.parts-g").exists()
    # A duplicate completion finds the parts gone and the output published: nothing to do
    assert _merge(tmp_path, parts)["already_merged"] is True
    assert (tmp_path / "out.csv").read_bytes() == expected


def test_the_merge_skips_the_parts_of_tolerated_failed_shards(tmp_path: Path) -> None:
    parts, expected = _shard_parts(tmp_path, 6, 2)
    (tmp_path / parts[1]).unlink()  # that shard failed, tolerated
    _merge(tmp_path, parts)
    lines = expected.decode().splitlines()
    assert (tmp_path / "out.csv").read_text().splitlines() == [*lines[:3], *lines[5:]]


def test_the_merge_needs_the_storage_and_its_params(tmp_path: Path) -> None:
    job = Job(job_id="m", task="csv-merge", params={"output": "o.csv"}, seed=1)
    with pytest.raises(BadInput, match="runs only in a worker"):
        csv_merge(TaskContext(job, None, None, None))
    with pytest.raises(BadInput, match="needs params"):
        csv_merge(TaskContext(job, None, None, None, storage=Storage(tmp_path)))


def test_the_merge_keeps_the_header_when_the_first_shard_failed(tmp_path: Path) -> None:
    # Given a split whose first shard (the one whose part carries the header) failed, tolerated
    parts, expected = _shard_parts(tmp_path, 6, 2)
    (tmp_path / parts[0]).unlink()
    # When the completion merges the rest
    _merge(tmp_path, parts)
    # Then the output still starts with the header, followed by the other shards' rows
    lines = expected.decode().splitlines()
    assert (tmp_path / "out.csv").read_text().splitlines() == [lines[0], *lines[3:]]
