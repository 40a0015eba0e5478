"""Tasks the fault suite loads into real workers (``CONVEYOR_IMPORT``). Needs the repository
root on ``PYTHONPATH`` (the suite's worker environment sets it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import conveyor
from conveyor.task_context import TaskContext
from tests.faults.expect import CHUNK_BYTES, fault_copy_output, sha256


def _runs(ctx: TaskContext) -> int:
    """Leave a marker ``<marker_dir>/<job_id>.<pid>.started``; return how many runs of the
    job started so far, this one included (0 without a ``marker_dir`` param)."""
    if "marker_dir" not in ctx.params:
        return 0
    markers = Path(str(ctx.params["marker_dir"]))
    (markers / f"{ctx.job.job_id}.{os.getpid()}.{time.monotonic_ns()}.started").touch()
    return len(list(markers.glob(f"{ctx.job.job_id}.*.started")))


@conveyor.task("fault-copy")
def fault_copy(ctx: TaskContext) -> dict[str, object]:
    """Deterministic output, written in chunks (so a crash mid-write tears it). Params:
    ``sleep_s`` to take a while first on every run, ``first_run_s`` on the first run only
    (with ``marker_dir``); neither sleep checks the lease."""
    assert ctx.input_path is not None and ctx.write_path is not None
    runs = _runs(ctx)
    time.sleep(float(ctx.params.get("sleep_s", 0)))
    if runs == 1:
        time.sleep(float(ctx.params.get("first_run_s", 0)))
    data = fault_copy_output(ctx.input_path.read_bytes(), ctx.seed)
    with ctx.write_path.open("wb") as out:
        for start in range(0, len(data), CHUNK_BYTES):
            out.write(data[start : start + CHUNK_BYTES])
            out.flush()
    return {"sha256": sha256(data), "pid": os.getpid()}


@conveyor.task("fault-stamp")
def fault_stamp(ctx: TaskContext) -> dict[str, object]:
    """Writes the pid of the process that ran it. Sleeps ``first_run_s`` on the job's first
    run, ``later_run_s`` on the others, never checking its lease: a stubborn task, so a
    worker paused past its lease reaches the publish step with a stale lease."""
    assert ctx.write_path is not None
    first = _runs(ctx) == 1
    time.sleep(float(str(ctx.params["first_run_s" if first else "later_run_s"])))
    data = f"published by {os.getpid()}\n".encode()
    ctx.write_path.write_bytes(data)
    return {"sha256": sha256(data), "pid": os.getpid()}


@conveyor.task("poison-raise")
def poison_raise(ctx: TaskContext) -> None:
    """Fails on every attempt with an ordinary exception (a transient error, retried)."""
    raise RuntimeError("poison: this job always fails")


@conveyor.task("poison-exit")
def poison_exit(ctx: TaskContext) -> None:
    """Kills the worker process that runs it, on every attempt."""
    os._exit(13)


@conveyor.task("poison-memory")
def poison_memory(ctx: TaskContext) -> None:
    """Allocates ``bytes`` bytes at once: beyond the worker's address-space limit."""
    hog = bytearray(int(ctx.params["bytes"]))
    raise AssertionError(f"allocated {len(hog)} bytes: the memory limit is not in force")
