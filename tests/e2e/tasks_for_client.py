"""Tasks the client's end-to-end tests load into real workers with ``--import``."""

from __future__ import annotations

import time
from pathlib import Path

import conveyor
from conveyor.task_context import TaskContext

#: Longest a held task waits for its release file.
HOLD_LIMIT_S = 60.0


@conveyor.task("mark")
def mark(ctx: TaskContext) -> dict[str, object]:
    """Leave ``<marker_dir>/<job_id>.ran``: the proof that the job ran."""
    (Path(str(ctx.params["marker_dir"])) / f"{ctx.job.job_id}.ran").touch()
    if ctx.write_path is not None:
        ctx.write_path.write_text("ran\n")
    return {"ran": True}


@conveyor.task("hold")
def hold(ctx: TaskContext) -> dict[str, object]:
    """Write a partial output, leave ``<marker_dir>/<job_id>.started``, then wait until
    ``<marker_dir>/<job_id>.release`` appears (a test cancels the job meanwhile)."""
    marker_dir = Path(str(ctx.params["marker_dir"]))
    if ctx.write_path is not None:
        ctx.write_path.write_text("partial output\n")
    (marker_dir / f"{ctx.job.job_id}.started").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not (marker_dir / f"{ctx.job.job_id}.release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        ctx.check_lease()
        time.sleep(0.02)
    return {"held": True}
