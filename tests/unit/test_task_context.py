"""``conveyor.task_context``: what a task sees of its job (params, seed, the lease check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import LeaseLost
from conveyor.jobs import Job
from tests.unit.task_helpers import context


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
