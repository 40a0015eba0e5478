"""What the task tests share: a TaskContext in tmp_path, a task that does nothing."""

from __future__ import annotations

from pathlib import Path

from conveyor.jobs import Job
from conveyor.task_context import TaskContext, TaskResult


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


def noop(ctx: TaskContext) -> TaskResult:
    return {"ok": True}
