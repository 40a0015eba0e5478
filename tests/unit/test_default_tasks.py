"""``conveyor.default_tasks``: the default registry, ``@conveyor.task``, the built-in
csv-process task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

import conveyor
from conveyor import csvjob as csvtask
from conveyor.default_tasks import csv_process, default_registry, task
from conveyor.errors import BadInput
from conveyor.jobs import Job
from conveyor.task_context import TaskResult
from tests.unit.task_helpers import context


def test_default_registry_is_shared_and_has_the_builtin() -> None:
    assert default_registry() is default_registry()
    assert default_registry().get("csv-process") is csv_process


def test_package_decorator_registers_in_the_default_registry(forget_tasks: list[str]) -> None:
    forget_tasks.append("test-pkg-task")

    @conveyor.task("test-pkg-task")
    def pkg_task(ctx: conveyor.TaskContext) -> TaskResult:
        return None

    assert default_registry().get("test-pkg-task") is pkg_task
    assert conveyor.task is task
    assert conveyor.Job is Job


@dataclass
class FakeStats:
    rows: int
    seconds: float


class TupleStats(NamedTuple):
    rows: int


@pytest.fixture
def fake_csvtask(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """conveyor.csvtask.transform_csv replaced, recording its calls (the wiring, not the CSV)."""
    calls: list[tuple[object, ...]] = []

    def transform_csv(input_path: Path, output_path: Path, seed: int) -> FakeStats:
        calls.append((input_path, output_path, seed))
        return FakeStats(rows=3, seconds=0.5)

    monkeypatch.setattr(csvtask, "transform_csv", transform_csv)
    return calls


def test_csv_process_calls_transform_csv_with_the_write_path(
    tmp_path: Path, fake_csvtask: list[tuple[object, ...]]
) -> None:
    ctx = context(tmp_path)
    assert csv_process(ctx) == {"rows": 3, "seconds": 0.5}
    assert fake_csvtask == [(ctx.input_path, ctx.write_path, 99)]


def test_csv_process_needs_an_input_and_takes_no_params(
    tmp_path: Path, fake_csvtask: list[tuple[object, ...]]
) -> None:
    with pytest.raises(BadInput, match="needs an input"):
        csv_process(context(tmp_path, input_path=None))
    job = Job(task="csv-process", input="a.csv", output="b.csv", params={"x": 1})
    with pytest.raises(BadInput, match="takes no params; got x"):
        csv_process(context(tmp_path, job))
    assert fake_csvtask == []


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (TupleStats(rows=4), {"rows": 4}),
        ({"rows": 5}, {"rows": 5}),
        (6, {"value": 6}),
    ],
)
def test_csv_process_accepts_other_stats_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stats: object, expected: dict[str, object]
) -> None:
    monkeypatch.setattr(csvtask, "transform_csv", lambda *args: stats)
    assert csv_process(context(tmp_path)) == expected


def test_csv_process_runs_the_real_transform(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("ID,Value\n1,10\n2,20\n")
    ctx = context(tmp_path)
    result = csv_process(ctx)
    assert result["rows"] == 2
    assert result["seed"] == 99
    lines = ctx.write_path.read_text().splitlines()
    assert lines[0] == "ID,Value,ProcessedValue"
    assert len(lines) == 3
    assert csv_process(context(tmp_path, write_path=tmp_path / "again.csv"))["rows"] == 2
    assert (tmp_path / "again.csv").read_bytes() == ctx.write_path.read_bytes()  # seeded
