"""The task registry, the @task decorator, importing task modules, the built-in task."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

import conveyor
from conveyor import csvjob as csvtask
from conveyor.default_tasks import csv_process, default_registry, task
from conveyor.errors import BadInput, ConfigError, LeaseLost, UnknownTask
from conveyor.jobs import Job
from conveyor.task_context import TaskContext, TaskResult
from conveyor.task_registry import TaskRegistry
from conveyor.tasks import import_tasks


def context(tmp_path: Path, job: Job | None = None, **changes: object) -> TaskContext:
    job = job or Job(task="t", input="in.csv", output="out.csv", seed=99)
    fields: dict[str, object] = {
        "job": job,
        "input_path": tmp_path / "in.csv",
        "output_path": tmp_path / "out.csv",
        "write_path": tmp_path / ".conveyor-tmp-out.csv",
    }
    fields.update(changes)
    return TaskContext(**fields)  # type: ignore[arg-type]


@pytest.fixture
def forget_tasks() -> Iterator[list[str]]:
    """Names registered in the default registry by a test, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        default_registry().unregister(name)


# --- the registry -----------------------------------------------------------------------------


def noop(ctx: TaskContext) -> TaskResult:
    return {"ok": True}


def other(ctx: TaskContext) -> TaskResult:
    return None


def test_register_and_get() -> None:
    registry = TaskRegistry()
    registry.register("noop", noop)
    assert registry.get("noop") is noop
    assert "noop" in registry
    assert registry.names() == ["noop"]
    assert len(registry) == 1


def test_unknown_task_names_the_known_ones() -> None:
    registry = TaskRegistry()
    registry.register("b-task", noop)
    registry.register("a-task", other)
    with pytest.raises(UnknownTask, match=r"unknown task 'nope' \(registered: a-task, b-task\)"):
        registry.get("nope")
    with pytest.raises(UnknownTask) as info:
        registry.check("nope")
    assert info.value.permanent


def test_same_function_twice_is_fine_another_is_not() -> None:
    registry = TaskRegistry()
    registry.register("noop", noop)
    registry.register("noop", noop)
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register("noop", other)
    registry.unregister("noop")
    registry.register("noop", other)
    assert registry.get("noop") is other


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 129, "a/b"])
def test_bad_task_names(name: str) -> None:
    with pytest.raises(ConfigError, match="bad task name"):
        TaskRegistry().register(name, noop)


def test_decorator_returns_the_function_and_defaults_the_name() -> None:
    registry = TaskRegistry()

    @registry.task()
    def reverse_lines(ctx: TaskContext) -> TaskResult:
        return None

    @registry.task("named")
    def whatever(ctx: TaskContext) -> TaskResult:
        return {"n": 1}

    assert registry.get("reverse-lines") is reverse_lines
    assert registry.get("named") is whatever
    assert whatever(context(Path("/nonexistent"))) == {"n": 1}


def test_bare_decorator_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"@conveyor.task\('name'\)"):
        TaskRegistry().task(noop)  # type: ignore[arg-type]


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


# --- importing task modules -------------------------------------------------------------------

MODULE = """
import conveyor
from conveyor import csvjob as csvtask

@conveyor.task("{name}")
def run(ctx):
    return {{"from": __name__}}
"""


def test_import_by_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_tasks: list[str]
) -> None:
    forget_tasks.append("by-name")
    (tmp_path / "mytasks_by_name.py").write_text(MODULE.format(name="by-name"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mytasks_by_name", raising=False)
    assert import_tasks(["mytasks_by_name"]) == ["mytasks_by_name"]
    assert default_registry().get("by-name")(context(tmp_path)) == {"from": "mytasks_by_name"}
    monkeypatch.delitem(sys.modules, "mytasks_by_name")


def test_import_by_file_path_twice(tmp_path: Path, forget_tasks: list[str]) -> None:
    forget_tasks.append("by-path")
    path = tmp_path / "sub" / "tasks.py"
    path.parent.mkdir()
    path.write_text(MODULE.format(name="by-path"))
    try:
        [name] = import_tasks([str(path)])
        assert import_tasks([str(path)]) == [name]
        assert "by-path" in default_registry()
        assert name.startswith("conveyor_tasks_tasks_")
    finally:
        sys.modules.pop(name, None)


def test_two_files_with_the_same_name_do_not_clash(tmp_path: Path, forget_tasks: list[str]) -> None:
    forget_tasks.extend(["one", "two"])
    for sub, task_name in (("a", "one"), ("b", "two")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "tasks.py").write_text(MODULE.format(name=task_name))
    names = import_tasks([str(tmp_path / "a" / "tasks.py"), str(tmp_path / "b" / "tasks.py")])
    try:
        assert len(set(names)) == 2
        assert {"one", "two"} <= set(default_registry().names())
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_missing_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import task module 'no_such_module_xyz'"):
        import_tasks(["no_such_module_xyz"])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        import_tasks([str(tmp_path / "absent.py")])


def test_module_that_raises_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(
        ConfigError, match=r"'.*broken.py' failed while importing: RuntimeError: boom"
    ):
        import_tasks([str(path)])
    assert not any(name.startswith("conveyor_tasks_broken_") for name in sys.modules)


def test_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad_syntax.py"
    path.write_text("def (:\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        import_tasks([str(path)])


def test_duplicate_registration_in_a_module_is_reported(
    tmp_path: Path, forget_tasks: list[str]
) -> None:
    forget_tasks.append("clash")
    default_registry().register("clash", noop)
    path = tmp_path / "clashing.py"
    path.write_text(MODULE.format(name="clash"))
    with pytest.raises(ConfigError, match="registered twice"):
        import_tasks([str(path)])


# --- the context ------------------------------------------------------------------------------


def test_context_exposes_params_and_seed(tmp_path: Path) -> None:
    job = Job(task="t", output="o", params={"k": "v"}, seed=42)
    ctx = context(tmp_path, job)
    assert ctx.params == {"k": "v"}
    assert ctx.seed == 42
    ctx.check_lease()  # outside a worker there is no lease to lose


def test_check_lease_raises_once_the_lease_is_lost(tmp_path: Path) -> None:
    lost = False

    def check() -> None:
        if lost:
            raise LeaseLost("heartbeat failed")

    ctx = context(tmp_path, lease_check=check)
    ctx.check_lease()
    lost = True
    with pytest.raises(LeaseLost):
        ctx.check_lease()


# --- the built-in task ------------------------------------------------------------------------


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
