"""``conveyor.client_groups``: a task that declares split and merge, submitted as a group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.client import Client
from conveyor.default_tasks import TASK_MERGE_TASK, task_merge
from conveyor.errors import BadInput, ConfigError
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry


def test_a_task_that_declares_split_and_merge_is_submitted_as_a_group(
    client: Client, registry: TaskRegistry, tmp_path: Path
) -> None:
    # Given a task that splits its input into pieces of two lines, and one that does not
    def halves(input_path: Path, rows: int) -> list[dict[str, Any]]:
        total = len(input_path.read_text().splitlines())
        return [{"first": first} for first in range(0, total, rows)]

    def merge(ctx: TaskContext, parts: list[Path]) -> dict[str, object]:
        return {"parts": len(parts)}

    @registry.task("lines", split=halves, merge=merge)
    def lines(ctx: TaskContext) -> None:
        return None

    registry.register(TASK_MERGE_TASK, task_merge)

    source = tmp_path / "five.txt"
    source.write_text("a\nb\nc\nd\ne\n")

    # When it is submitted with split_rows
    group = client.submit(source, task="lines", params={"x": 1}, split_rows=2)

    # Then one job per piece, each with its params over the job's, and a task-merge completion
    assert [job.params for job in group.jobs] == [{"x": 1, "first": n} for n in (0, 2, 4)]
    assert len({job.input for job in group.jobs}) == 1
    assert group.completion_job_id == f"{group.group_id}-merge"
    record = client.group(group.group_id)
    assert record.total == 3 and record.completion_job_id == group.completion_job_id

    # And a task without split is refused, and split needs merge
    with pytest.raises(BadInput, match="declare split"):
        client.submit(source, task="noop", split_rows=2)
    with pytest.raises(ConfigError, match="both split= and merge="):
        registry.task("half", split=halves)
