"""Tasks the end-to-end tests load into real workers with ``--import``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import conveyor
from conveyor.task_context import TaskContext


@conveyor.task("slow-first")
def slow_first(ctx: TaskContext) -> dict[str, object]:
    """Leave a marker ``<marker_dir>/<job_id>.<pid>.started``; on the job's first run,
    sleep ``first_run_s`` (so a test can kill or stop the worker meanwhile); then write the
    pid of the process that finished it."""
    marker_dir = Path(str(ctx.params["marker_dir"]))
    marker = marker_dir / f"{ctx.job.job_id}.{os.getpid()}.started"
    marker.touch()
    runs = len(list(marker_dir.glob(f"{ctx.job.job_id}.*.started")))
    if runs == 1:
        deadline = time.monotonic() + float(str(ctx.params["first_run_s"]))
        while time.monotonic() < deadline:
            ctx.check_lease()
            time.sleep(0.05)
    ctx.write_path.write_text(f"finished by {os.getpid()}\n")
    return {"pid": os.getpid(), "runs": runs}


@conveyor.task("crash-worker")
def crash_worker(ctx: TaskContext) -> None:
    """A poison job: kills the worker process that runs it, every time."""
    os._exit(13)
