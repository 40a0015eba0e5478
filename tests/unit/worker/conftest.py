"""The ``env`` fixture of the worker's unit tests (see helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.ledger import default_ledger_url, open_ledger
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.settings import Settings
from conveyor.stop import Shutdown
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from tests.unit.worker.helpers import VISIBILITY_S, Env, FixedBackoff, Recorder


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "storage"
    root.mkdir()
    clock = ManualClock()
    queue = MemoryQueue(visibility_timeout_s=VISIBILITY_S, max_receive_count=3, clock=clock)
    registry = TaskRegistry()
    settings = Settings(
        storage=root,
        visibility_timeout_s=VISIBILITY_S,
        max_receive_count=3,
        wait_s=0,
        batch_size=10,
        grace_s=5,
    )
    ledger = open_ledger(default_ledger_url(root))
    env = Env(
        root, clock, queue, registry, Recorder(), FixedBackoff(7), Shutdown(), settings, ledger
    )

    @registry.task("upper")
    def upper(ctx: TaskContext) -> dict[str, object]:
        assert ctx.input_path is not None
        env.calls.append(ctx.job.job_id)
        ctx.write_path.write_text(ctx.input_path.read_text().upper())
        return {"chars": len(ctx.input_path.read_text())}

    yield env
    ledger.close()
