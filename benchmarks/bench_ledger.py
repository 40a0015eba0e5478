"""The job ledger at scale: write N jobs x 3 events (queued at submit; running and succeeded
or failed in workers), then time a cold summary, an incremental one, and get() of one job.

Each event is one line appended to the writer's log for the job's shard (64 shards, logs
kept open; a batch is one write per shard); get() reads its shard's logs only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.jobs import JobState, new_job_id
from conveyor.ledger import Ledger, LedgerEvent

#: Submitters send (and record) jobs in batches like SQS's SendMessageBatch.
SUBMIT_BATCH = 10
#: Jobs that fail, so the summary has failures to list.
FAIL_EVERY = 100
GET_SAMPLES = 1000


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _write(root: Path, ids: list[str]) -> dict[str, float]:
    """Write the events as a submitter and two workers would; seconds per phase."""
    with Ledger(root, writer="submitter") as submitter:
        submit_s, _ = _timed(
            lambda: [
                submitter.record_many(
                    [
                        LedgerEvent(job_id, JobState.QUEUED, task="noop", output=f"o/{job_id}")
                        for job_id in ids[i : i + SUBMIT_BATCH]
                    ]
                )
                for i in range(0, len(ids), SUBMIT_BATCH)
            ]
        )
    workers = [Ledger(root, writer=f"worker{n}") for n in range(2)]
    half = len(ids) // 2

    def work_one_by_one() -> None:
        """The first half: one record() per event."""
        for n, job_id in enumerate(ids[:half]):
            worker = workers[n % 2]
            worker.record(job_id, JobState.RUNNING, attempt=1, worker=worker.writer)
            if n % FAIL_EVERY == 0:
                worker.record(job_id, JobState.FAILED, attempt=1, error=f"bad row {n}")
            else:
                worker.record(job_id, JobState.SUCCEEDED, attempt=1, result={"rows": n})

    def work_as_a_worker() -> None:
        """The second half as ``Worker`` writes: a job's success with the next one's start."""
        done: list[list[LedgerEvent]] = [[], []]
        for n, job_id in enumerate(ids[half:], start=half):
            worker = workers[n % 2]
            running = LedgerEvent(job_id, JobState.RUNNING, attempt=1, worker=worker.writer)
            worker.record_many([*done[n % 2], running])
            if n % FAIL_EVERY == 0:
                end = LedgerEvent(job_id, JobState.FAILED, attempt=1, error=f"bad row {n}")
            else:
                end = LedgerEvent(job_id, JobState.SUCCEEDED, attempt=1, result={"rows": n})
            done[n % 2] = [end]
        for worker, events in zip(workers, done, strict=True):
            worker.record_many(events)

    work_s, _ = _timed(work_one_by_one)
    batched_s, _ = _timed(work_as_a_worker)
    for worker in workers:
        worker.record_worker_stats(worker.writer, {"ReceiveMessage": len(ids) // 20})
        worker.close()
    return {
        "submit_s": submit_s,
        "work_s": work_s,
        "work_events": 2 * half,
        "batched_s": batched_s,
        "batched_events": 2 * (len(ids) - half),
    }


def _disk_usage(directory: Path) -> tuple[int, int]:
    files = size = 0
    for parent, _, names in os.walk(directory):
        files += len(names)
        size += sum(os.lstat(os.path.join(parent, name)).st_blocks * 512 for name in names)
    return files, size


def measure(jobs: int, root: Path) -> dict[str, Any]:
    """Write ``jobs`` jobs under ``root`` and time the reads; returns the numbers."""
    ids = [new_job_id() for _ in range(jobs)]
    writes = _write(root, ids)
    events = jobs * 3
    reader = Ledger(root)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cold_s, summary = _timed(reader.summary)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert summary.total == jobs, summary.total
    assert summary.counts[JobState.FAILED] == len(range(0, jobs, FAIL_EVERY))
    warm_s, _ = _timed(reader.summary)
    with Ledger(root, writer="late") as late:
        for job_id in ids[:1000]:
            late.record(job_id, JobState.RUNNING, attempt=2)
    incremental_s, _ = _timed(reader.summary)
    listing_s, failed = _timed(lambda: reader.jobs(JobState.FAILED, limit=100))
    assert len(failed) == min(100, len(range(0, jobs, FAIL_EVERY)))
    sample = random.sample(ids, min(GET_SAMPLES, jobs))
    get_times = []
    fresh = Ledger(root)
    for job_id in sample:
        seconds, record = _timed(lambda job_id=job_id: fresh.get(job_id))
        assert record is not None
        get_times.append(seconds)
    get_times.sort()
    files, size = _disk_usage(reader.directory)
    return {
        "jobs": jobs,
        "events": events,
        "submit_us_per_event": writes["submit_s"] / jobs * 1e6,
        "worker_us_per_event": writes["work_s"] / max(1, writes["work_events"]) * 1e6,
        "worker_batched_us_per_event": (
            writes["batched_s"] / max(1, writes["batched_events"]) * 1e6
        ),
        "summary_cold_s": cold_s,
        "summary_warm_s": warm_s,
        "summary_after_1000_events_s": incremental_s,
        "jobs_failed_listing_s": listing_s,
        "get_median_us": statistics.median(get_times) * 1e6,
        "get_p99_us": get_times[int(len(get_times) * 0.99) - 1] * 1e6,
        "summary_rss_growth_mb": (rss_after - rss_before) / 1024,
        "ledger_files": files,
        "ledger_mb": size / 1e6,
    }


def run(args: argparse.Namespace | None = None) -> list[Any]:
    """The benchmark runner's entry point: one table of the ledger's numbers."""
    from benchmarks._table import Table

    quick = bool(getattr(args, "quick", False))
    jobs = int(getattr(args, "ledger_jobs", None) or (2_000 if quick else 100_000))
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-ledger-"))
    try:
        numbers = measure(jobs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ["submit: record queued (batches of 10)", f"{numbers['submit_us_per_event']:.0f} µs/event"],
        ["worker: record running, succeeded", f"{numbers['worker_us_per_event']:.0f} µs/event"],
        [
            "worker, as Worker writes (2 events a call)",
            f"{numbers['worker_batched_us_per_event']:.0f} µs/event",
        ],
        [f"summary, cold ({numbers['events']:,} events)", f"{numbers['summary_cold_s']:.2f} s"],
        ["summary again, nothing new", f"{numbers['summary_warm_s']:.3f} s"],
        ["summary again after 1,000 new events", f"{numbers['summary_after_1000_events_s']:.3f} s"],
        ["jobs(failed, limit=100)", f"{numbers['jobs_failed_listing_s']:.3f} s"],
        ["get(job_id), median", f"{numbers['get_median_us']:.0f} µs"],
        ["get(job_id), p99", f"{numbers['get_p99_us']:.0f} µs"],
        ["summary memory (RSS growth)", f"{numbers['summary_rss_growth_mb']:.0f} MB"],
        ["ledger on disk", f"{numbers['ledger_files']:,} files, {numbers['ledger_mb']:.0f} MB"],
    ]
    notes = [
        "Each event: one line appended to the writer's open log for the job's shard (64); a"
        " batch is one write per shard; no fsync per event (a sync every 5 s).",
        "get() lists its shard and reads its writers' logs there (a 64th of the events).",
        "The summary folds every log; the same instance then reads only new lines.",
    ]
    title = f"Job ledger: {jobs:,} jobs x 3 events, under {tempfile.gettempdir()}"
    return [Table(title=title, columns=["what", "cost"], rows=rows, notes=notes)]


def main() -> None:
    """Run standalone: ``python -m benchmarks.bench_ledger [--jobs N] [--dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-ledger-", dir=args.dir))
    try:
        print(json.dumps(measure(args.jobs, root), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
