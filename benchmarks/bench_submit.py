"""Submitting from Python: parameters-only jobs through ``Client.submit_many`` (embedded
SQLite queue and ledger, every job recorded as queued), against huey's enqueue of a no-op
task (``SqliteHuey``, its defaults), and RQ's if it is installed and Redis answers.

Each system gets a fresh directory per run; the best of ``--repeat`` runs is reported,
wall-clock and per second of this process's CPU time. ``CONVEYOR_BENCH_SUBMIT_JOBS``
changes the job count (20,000 by default; 2,000 with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Jobs submitted per run.
DEFAULT_JOBS = 20_000
QUICK_JOBS = 2_000


@dataclass
class Result:
    """One run: jobs submitted, wall-clock and CPU seconds."""

    jobs: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.jobs / self.wall_s if self.wall_s else float("nan")

    @property
    def cpu_per_s(self) -> float:
        return self.jobs / self.cpu_s if self.cpu_s else float("nan")


def _timed(work: Callable[[], int]) -> Result:
    wall, cpu = time.perf_counter(), time.process_time()
    jobs = work()
    return Result(jobs, time.perf_counter() - wall, time.process_time() - cpu)


def bench_conveyor(directory: Path, jobs: int) -> Result:
    """``submit_many`` of ``jobs`` parameters-only jobs of a registered no-op task."""
    from conveyor.client import Client
    from conveyor.jobs import JobState
    from conveyor.settings import Settings
    from conveyor.task_context import TaskContext
    from conveyor.task_registry import TaskRegistry

    registry = TaskRegistry()

    @registry.task("noop")
    def noop(ctx: TaskContext) -> None:
        return None

    directory.mkdir(parents=True, exist_ok=True)
    items = [{"params": {"n": n}} for n in range(jobs)]
    with Client(Settings(storage=directory), registry=registry) as client:
        client.queue  # noqa: B018 - opened (and created) before the clock starts
        client.ledger  # noqa: B018
        result = _timed(lambda: len(client.submit_many(items, task="noop")))
        assert client.ledger.counts()[JobState.QUEUED] == jobs
    return result


def bench_huey(directory: Path, jobs: int) -> Result:
    """huey's ``SqliteHuey`` (its defaults): enqueue a no-op task, one call per job."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(directory / "huey.db"))

    @huey.task()  # type: ignore[misc]
    def noop(n: int) -> None:
        return None

    def enqueue() -> int:
        for n in range(jobs):
            noop(n)
        return jobs

    result = _timed(enqueue)
    assert huey.pending_count() == jobs
    return result


def bench_rq(directory: Path, jobs: int) -> Result | None:
    """RQ's ``Queue.enqueue`` of a no-op function, if RQ is installed and Redis answers."""
    try:
        from redis import Redis
        from rq import Queue
    except ImportError:
        return None
    connection = Redis()
    try:
        connection.ping()
    except Exception:
        return None
    queue = Queue(f"bench-{os.getpid()}", connection=connection)
    try:
        return _timed(lambda: sum(1 for n in range(jobs) if queue.enqueue(print, n)))
    finally:
        queue.delete(delete_jobs=True)


def measure(jobs: int, repeat: int) -> dict[str, Result | None]:
    """The best run of each system (None: not installed or no broker)."""
    best: dict[str, Result | None] = {}
    systems: dict[str, Callable[[Path, int], Result | None]] = {
        "conveyor submit_many": bench_conveyor,
        "huey enqueue (SqliteHuey)": _optional(bench_huey),
        "rq enqueue (Redis)": bench_rq,
    }
    for name, bench in systems.items():
        runs = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="conveyor-bench-submit-") as tmp:
                runs.append(bench(Path(tmp), jobs))
        done = [run for run in runs if run is not None]
        best[name] = max(done, key=lambda r: r.per_s) if done else None
    return best


def _optional(bench: Callable[[Path, int], Result]) -> Callable[[Path, int], Result | None]:
    def run(directory: Path, jobs: int) -> Result | None:
        try:
            return bench(directory, jobs)
        except ImportError:
            return None

    return run


def run(args: argparse.Namespace | None = None) -> list[Any]:
    """The benchmark runner's entry point: one table."""
    from benchmarks._table import Table

    quick = bool(getattr(args, "quick", False))
    repeat = int(getattr(args, "repeat", None) or 1)
    jobs = int(
        os.environ.get("CONVEYOR_BENCH_SUBMIT_JOBS") or (QUICK_JOBS if quick else DEFAULT_JOBS)
    )
    results = measure(jobs, repeat)
    rows = [
        [name, "not installed" if r is None else r.jobs, *_rates(r)] for name, r in results.items()
    ]
    conveyor, huey = results["conveyor submit_many"], results["huey enqueue (SqliteHuey)"]
    notes = [
        f"Best of {repeat} run(s), each in a fresh directory on the local disk.",
        "conveyor: one `submit_many` call; messages sent 10 per transaction, every job "
        "recorded as queued in the ledger (SQLite), ledger writes overlapping the sends.",
        "huey: one `enqueue` (task call) per job, SqliteHuey's defaults. RQ is measured "
        "when installed with a Redis server on localhost; Celery needs a broker as well "
        "and is not measured here.",
    ]
    if conveyor is not None and huey is not None:
        notes.append(f"conveyor / huey: {conveyor.per_s / huey.per_s:.1f}x")
    return [
        Table(
            title="Submitting parameters-only jobs from Python (jobs/s)",
            columns=["system", "jobs", "jobs/s", "jobs/s cpu"],
            rows=rows,
            notes=notes,
        )
    ]


def _rates(result: Result | None) -> list[str]:
    if result is None:
        return ["-", "-"]
    return [f"{result.per_s:,.0f}", f"{result.cpu_per_s:,.0f}"]
