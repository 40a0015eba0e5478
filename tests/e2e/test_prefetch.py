"""Prefetch on real worker processes: K long jobs on K workers run at once."""

from __future__ import annotations

import itertools

from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import TASKS_FILE, run, run_json

#: Seconds each job sleeps: long beside a worker's start-up and a receive.
JOB_S = 2.0
JOBS = 4


def test_two_worker_processes_run_two_long_jobs_at_once_from_the_start(
    local_env: QueueEnv,
) -> None:
    # Given four jobs of about 2 s each on the SQLite queue, submitted before any worker
    markers = local_env.work / "markers"
    markers.mkdir()
    sources = []
    for index in range(JOBS):
        source = local_env.work / f"in-{index}.txt"
        source.write_text("x\n")
        sources.append(source)
    jobs = run_json(
        "submit",
        "--task=slow-first",
        f"--import={TASKS_FILE}",
        f"--param=marker_dir={markers}",
        f"--param=first_run_s={JOB_S}",
        *sources,
        env=local_env.env,
    )
    # When two worker processes drain them (the default batch size of 10)
    run(
        "worker",
        f"--import={TASKS_FILE}",
        "--processes=2",
        "--until-empty",
        env=local_env.env,
    )
    # Then every job succeeded, at least two of them ran at the same time (a fresh worker
    # takes one message, not the whole backlog), and the jobs took clearly less time, from
    # the first start to the last finish, than one after another
    records = [local_env.record(str(job["job_id"])) for job in jobs]
    assert [record["state"] for record in records] == ["succeeded"] * JOBS
    spans = [(record["started_at"], record["finished_at"]) for record in records]
    overlapping = [
        (a, b) for a, b in itertools.combinations(spans, 2) if a[0] < b[1] and b[0] < a[1]
    ]
    assert overlapping, f"no two jobs ran at once: {sorted(spans)}"
    took_s = max(end for _, end in spans) - min(start for start, _ in spans)
    assert took_s < 0.9 * JOBS * JOB_S, f"took {took_s:.1f} s: {sorted(spans)}"
