"""``wait``, ``cancel`` and an interrupted ``submit_many`` with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conveyor.jobs import Job, JobState
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import run, run_json, wait_for, workers

TASKS = Path(__file__).with_name("tasks_for_client.py")


def test_wait_with_a_timeout_that_expires_exits_124_naming_the_open_jobs(
    ledger_env: QueueEnv,
) -> None:
    # Given two jobs without input, one of them finished, and no worker
    first, second = (
        run("submit", "--task=csv-process", "--param=n=1", env=ledger_env.env).stdout.strip()
        for _ in range(2)
    )
    with ledger_env.open_ledger() as ledger:
        ledger.record(first, JobState.SUCCEEDED, attempt=1)
    # When a user waits for both, half a second at most
    done = run("wait", first, second.lower(), "--timeout-s=0.5", env=ledger_env.env, check=False)
    # Then the wait gives up with exit code 124 and names the job still open, on one line
    assert done.returncode == 124, done.stderr
    assert done.stderr.strip() == (
        f"conveyor: error: 1 of 2 job(s) still open after 0.5 s: {second}"
    )


def test_a_cancelled_queued_job_never_runs(queue_env: QueueEnv) -> None:
    # Given two jobs that only carry parameters, one of them cancelled while queued
    markers = queue_env.work / "markers"
    markers.mkdir()
    args = ["submit", "--task=mark", f"--import={TASKS}", f"--param=marker_dir={markers}"]
    kept, dropped = (run(*args, env=queue_env.env).stdout.strip() for _ in range(2))
    cancelled = run("cancel", dropped[:16].lower(), "--reason=not needed", env=queue_env.env)
    assert cancelled.stdout.startswith(f"{dropped}  cancelled")
    # When a worker drains the queue
    run("worker", f"--import={TASKS}", "--until-empty", env=queue_env.env)
    # Then the cancelled job never ran, and the other did
    assert sorted(path.name for path in markers.iterdir()) == [f"{kept}.ran"]
    waited = run("wait", kept, dropped, "--json", env=queue_env.env, check=False)
    assert waited.returncode == 1  # one was cancelled
    states = {r["job_id"]: (r["state"], r["error"]) for r in run_json_text(waited.stdout)}
    assert states == {kept: ("succeeded", None), dropped: ("cancelled", "not needed")}
    stats = queue_env.stats()
    assert stats.visible + stats.in_flight + stats.delayed + stats.dead_lettered == 0
    # And cancelling it again is harmless, while cancelling the finished one is an error
    assert run("cancel", dropped, env=queue_env.env).returncode == 0
    refused = run("cancel", kept, env=queue_env.env, check=False)
    assert refused.returncode == 65
    assert refused.stderr.strip() == f"conveyor: error: job {kept} already succeeded: not cancelled"


def test_a_job_cancelled_while_it_runs_is_not_published(queue_env: QueueEnv) -> None:
    markers = queue_env.work / "markers"
    markers.mkdir()
    with workers(queue_env.env, queue_env.work) as start:
        worker = start(f"--import={TASKS}")
        # Given a job running in a worker, its output half written
        job_id = run(
            "submit", "--task=hold", f"--import={TASKS}", f"--param=marker_dir={markers}",
            "--output=results/held.txt", env=queue_env.env,
        ).stdout.strip()  # fmt: skip
        wait_for((markers / f"{job_id}.started").exists, what="the job to start")
        # When it is cancelled, then its task returns
        run("cancel", job_id, env=queue_env.env)
        (markers / f"{job_id}.release").touch()
        # Then the worker does not publish it, acks it, and the ledger says cancelled
        done = run("wait", job_id, "--timeout-s=30", env=queue_env.env, check=False)
        assert done.returncode == 1, done.stderr
        wait_for(
            lambda: any(e.get("action") == "cancelled" for e in worker.log_events()),
            what="the worker to log the cancel",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 75
    (event,) = [e for e in worker.log_events() if e.get("action") == "cancelled"]
    assert event["job_id"] == job_id
    assert event["reason"] == "not published: cancelled"
    assert queue_env.record(job_id)["state"] == "cancelled"
    assert queue_env.record(job_id)["result"] is None
    results = queue_env.storage / "results"
    assert list(results.iterdir()) == []  # no output, no temporary file
    stats = queue_env.stats()
    assert stats.visible + stats.in_flight + stats.delayed + stats.dead_lettered == 0


#: A script that submits many files through the API, printing a line per batch sent (and
#: pausing a little, so that a signal arrives part way).
SUBMITTER = textwrap.dedent(
    """
    import sys
    import time

    import conveyor
    from conveyor import SubmitInterrupted

    names = [line.strip() for line in open(sys.argv[1])]

    def on_sent(jobs):
        print("sent", len(jobs), flush=True)
        time.sleep(0.01)

    with conveyor.connect() as client:
        try:
            client.submit_many(names, task="csv-process", on_sent=on_sent)
        except SubmitInterrupted as exc:
            print("interrupted", len(exc.sent), flush=True)
            sys.exit(exc.exit_code)
    print("completed", flush=True)
    """
)


def test_sigint_during_submit_many_leaves_no_orphan_and_a_matching_ledger(
    ledger_env: QueueEnv,
) -> None:
    # Given 2,000 files to submit from a Python script
    sources = ledger_env.work / "sources"
    sources.mkdir()
    listing = ledger_env.work / "files.txt"
    names = []
    for index in range(2000):
        path = sources / f"f{index}.csv"
        path.write_text(f"ID,Value\n{index},1.5\n")
        names.append(str(path))
    listing.write_text("\n".join(names) + "\n")
    script = ledger_env.work / "submit_many.py"
    script.write_text(SUBMITTER)
    # When SIGINT arrives after 20 batches were sent
    process = subprocess.Popen(
        [sys.executable, str(script), str(listing)],
        env=ledger_env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        for _ in range(20):
            line = process.stdout.readline()
            assert line.startswith("sent 10"), line or process.communicate(timeout=60)[1]
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:  # a failed check must not leave the script running into later tests
        if process.poll() is None:
            process.kill()
            process.communicate()
    # Then the script stopped part way, with the exit code of an interrupted command
    assert process.returncode == 75, errors
    interrupted = [line for line in rest.splitlines() if line.startswith("interrupted")]
    assert len(interrupted) == 1, rest
    sent = int(interrupted[0].split()[1])
    assert 200 <= sent < 2000 and sent % 10 == 0
    # And the ledger, the queue and the copied inputs name exactly the same jobs
    with ledger_env.open_ledger() as ledger:
        assert ledger.counts()[JobState.QUEUED] == sent
        in_ledger = {record.job_id for record in ledger.jobs(JobState.QUEUED, limit=10_000)}
    in_queue: set[str] = set()
    with ledger_env.open_queue() as queue:
        while batch := queue.receive(10, 0, 600):
            in_queue.update(Job.from_json(message.body).job_id for message in batch)
    inputs = ledger_env.storage / "inputs"
    copied = {path.name for path in inputs.iterdir() if not path.name.startswith(".")}
    assert len(in_ledger) == sent
    assert in_queue == in_ledger
    assert copied == in_ledger
    # And no partial copy is left anywhere
    leftovers = [
        os.path.join(directory, name)
        for directory, _, files in os.walk(ledger_env.storage)
        for name in files
        if name.startswith(".conveyor-tmp")
    ]
    assert leftovers == []
    assert all(len(list((inputs / job_id).iterdir())) == 1 for job_id in in_ledger)


def run_json_text(text: str) -> list[dict[str, object]]:
    data = json.loads(text)
    assert isinstance(data, list)
    return data


def test_submit_without_files_queues_one_job_that_carries_only_parameters(
    local_env: QueueEnv,
) -> None:
    markers = local_env.work / "markers"
    markers.mkdir()

    (job,) = run_json(
        "submit", "--task=mark", f"--import={TASKS}", f"--param=marker_dir={markers}",
        env=local_env.env,
    )  # fmt: skip
    run("worker", f"--import={TASKS}", "--until-empty", env=local_env.env)

    assert (job["input"], job["output"]) == (None, None)
    assert (markers / f"{job['job_id']}.ran").exists()
    assert run("wait", job["job_id"], env=local_env.env).stdout.split()[1] == "succeeded"
