"""``conveyor.task_registry``: the TaskRegistry and its decorator."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor
from conveyor.client import connect
from conveyor.default_tasks import default_registry
from conveyor.errors import ConfigError, UnknownTask
from conveyor.jobs import JobState
from conveyor.ledger import default_ledger_url
from conveyor.task_context import TaskContext, TaskResult
from conveyor.task_registry import Task, TaskRegistry
from tests.unit.task_helpers import context, noop


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


def test_a_task_submits_itself_through_a_client_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @conveyor.task("self-submitting")
    def self_submitting(ctx: TaskContext) -> dict[str, object]:
        return {"n": ctx.params["n"]}

    try:
        assert isinstance(self_submitting, Task)
        assert default_registry().get("self-submitting") is self_submitting
        assert self_submitting.__name__ == "self_submitting"
        monkeypatch.setenv("CONVEYOR_STORAGE", str(tmp_path / "from-env"))

        job = self_submitting.submit(params={"n": 3})

        assert job.task == "self-submitting"
        with connect() as client:
            assert client.get(job.job_id).state is JobState.QUEUED
            again = self_submitting.submit(params={"n": 4}, client=client)
            assert client.get(again.job_id).task == "self-submitting"
        assert (tmp_path / "from-env" / "_conveyor" / "queue.db").exists()
        assert default_ledger_url(tmp_path / "from-env").endswith("ledger.db")
    finally:
        default_registry().unregister("self-submitting")
