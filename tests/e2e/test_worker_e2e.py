"""Real worker processes: many jobs, SIGKILL, SIGTERM, poison jobs, bad input, bad paths."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from conveyor.queues.messages import Outgoing
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import (
    TASKS_FILE,
    WorkerProcess,
    pid_alive,
    run,
    run_json,
    wait_for,
    workers,
    write_csv,
)

EX_INTERRUPTED = 75
EXAMPLE_TASK = Path(__file__).parents[2] / "examples" / "wordcount_task.py"


def submit_slow_first(queue_env: QueueEnv, first_run_s: float) -> tuple[str, Path]:
    """Submit one ``slow-first`` job; return its id and the directory of its run markers."""
    markers = queue_env.work / "markers"
    markers.mkdir(exist_ok=True)
    source = queue_env.work / "in.txt"
    source.write_text("x\n")
    (job,) = run_json(
        "submit",
        "--task=slow-first",
        f"--import={TASKS_FILE}",
        f"--param=marker_dir={markers}",
        f"--param=first_run_s={first_run_s}",
        source,
        env=queue_env.env,
    )
    return str(job["job_id"]), markers


def test_jobs_on_two_worker_processes_match_conveyor_run(queue_env: QueueEnv) -> None:
    inputs = [write_csv(queue_env.work / f"part-{i}.csv", 300, start=i * 300) for i in range(4)]
    jobs = run_json("submit", *inputs, env=queue_env.env)

    done = run("worker", "--processes=2", "--until-empty", "--batch-size=1", env=queue_env.env)

    assert done.returncode == 0
    assert queue_env.counts()["succeeded"] == 4
    assert queue_env.stats().pending == 0
    for job, source in zip(jobs, inputs, strict=True):
        published = queue_env.storage / job["output"]
        reference = queue_env.work / f"reference-{source.name}"
        run("run", source, "--output", reference, "--seed", str(job["seed"]), env=queue_env.env)
        assert published.read_bytes() == reference.read_bytes()
        assert queue_env.record(job["job_id"])["result"]


def test_job_of_a_killed_worker_completes_on_another_after_the_visibility_timeout(
    queue_env: QueueEnv,
) -> None:
    env = queue_env.with_env(CONVEYOR_VISIBILITY_TIMEOUT_S="2", CONVEYOR_IMPORT=str(TASKS_FILE))
    job_id, markers = submit_slow_first(queue_env, first_run_s=60)
    with workers(env, queue_env.work) as start:
        first = start()
        wait_for(lambda: list(markers.glob("*.started")), what="the job to start")

        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait()
        second = start("--until-empty")

        assert second.wait() == 0
    took_s = time.monotonic() - killed_at
    record = queue_env.record(job_id)
    assert record["state"] == "succeeded"
    assert record["attempts"] == 2
    assert str(second.pid) in str(record["worker"])
    assert 1.0 <= took_s < 20, took_s  # waited for the lease to expire, not much longer
    output = queue_env.storage / str(record["output"])
    assert output.read_text() == f"finished by {second.pid}\n"


def test_sigterm_lets_a_short_job_finish_then_exits_75(queue_env: QueueEnv) -> None:
    env = queue_env.with_env(CONVEYOR_GRACE_S="20", CONVEYOR_IMPORT=str(TASKS_FILE))
    job_id, markers = submit_slow_first(queue_env, first_run_s=1.5)
    with workers(env, queue_env.work) as start:
        worker = start()
        wait_for(lambda: list(markers.glob("*.started")), what="the job to start")

        worker.signal(signal.SIGTERM)

        assert worker.wait() == EX_INTERRUPTED
    assert queue_env.record(job_id)["state"] == "succeeded"
    assert queue_env.stats().pending == 0  # acked
    actions = [line.get("action") for line in worker.log_events()]
    assert actions.index("shutdown") < actions.index("succeeded")


def test_a_second_signal_exits_at_once(local_env: QueueEnv) -> None:
    env = local_env.with_env(CONVEYOR_GRACE_S="60", CONVEYOR_IMPORT=str(TASKS_FILE))
    job_id, markers = submit_slow_first(local_env, first_run_s=60)
    with workers(env, local_env.work) as start:
        worker = start()
        wait_for(lambda: list(markers.glob("*.started")), what="the job to start")
        worker.signal(signal.SIGINT)
        wait_for(
            lambda: "shutdown" in [line.get("action") for line in worker.log_events()],
            what="the first signal to be noticed",
        )
        signalled_at = time.monotonic()

        worker.signal(signal.SIGINT)

        assert worker.wait() == EX_INTERRUPTED
    assert time.monotonic() - signalled_at < 10  # not the 60 s grace, nor the 60 s job
    assert local_env.record(job_id)["state"] == "running"


def test_supervisor_forwards_sigterm_to_its_worker_processes(local_env: QueueEnv) -> None:
    env = local_env.with_env(CONVEYOR_GRACE_S="20", CONVEYOR_IMPORT=str(TASKS_FILE))
    job_id, markers = submit_slow_first(local_env, first_run_s=1.5)
    with workers(env, local_env.work) as start:
        supervisor = start("--processes=2")
        started = wait_for(lambda: list(markers.glob("*.started")), what="the job to start")
        child_pids = wait_for(lambda: _worker_pids(supervisor), what="two workers")

        supervisor.signal(signal.SIGTERM)

        assert supervisor.wait() == EX_INTERRUPTED
    assert local_env.record(job_id)["state"] == "succeeded"
    assert started[0].name.split(".")[1] in {str(pid) for pid in child_pids}
    assert not any(pid_alive(pid) for pid in child_pids)


def _worker_pids(worker: WorkerProcess) -> list[int] | None:
    """The pids of the worker processes a supervisor started, once both logged."""
    pids = [
        int(str(line["worker"]).rsplit("-", 1)[1])
        for line in worker.log_events()
        if line.get("action") == "start" and "worker" in line
    ]
    return pids if len(pids) == 2 else None


def test_sigterm_releases_a_long_job_for_another_worker_at_once(queue_env: QueueEnv) -> None:
    env = queue_env.with_env(
        CONVEYOR_GRACE_S="0.5",
        CONVEYOR_VISIBILITY_TIMEOUT_S="60",
        CONVEYOR_IMPORT=str(TASKS_FILE),
    )
    job_id, markers = submit_slow_first(queue_env, first_run_s=60)
    with workers(env, queue_env.work) as start:
        first = start()
        wait_for(lambda: list(markers.glob("*.started")), what="the job to start")

        first.signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        assert first.wait() == EX_INTERRUPTED
        stopped_s = time.monotonic() - signalled_at
        second = start("--until-empty")
        assert second.wait() == 0
    took_s = time.monotonic() - signalled_at
    assert stopped_s < 10
    assert took_s < 30  # far less than the 60 s visibility timeout: released, not expired
    record = queue_env.record(job_id)
    assert record["state"] == "succeeded"
    assert record["attempts"] == 2
    assert "released" in [line.get("action") for line in first.log_events()]


def test_poison_job_that_kills_workers_ends_in_the_dead_letter_queue(
    queue_env: QueueEnv,
) -> None:
    env = queue_env.with_env(CONVEYOR_VISIBILITY_TIMEOUT_S="1", CONVEYOR_IMPORT=str(TASKS_FILE))
    good = run_json("submit", write_csv(queue_env.work / "good.csv", 10), env=env)
    (poison,) = run_json(
        "submit", "--task=crash-worker", write_csv(queue_env.work / "p.csv", 1), env=env
    )

    codes = []
    for _ in range(8):  # each crash costs one receive; the queue gives up after 3
        codes.append(run("worker", "--until-empty", "--batch-size=1", env=env, check=False))
        if codes[-1].returncode == 0:
            break

    assert [c.returncode for c in codes] == [13, 13, 13, 0], [c.stderr for c in codes]
    letters = queue_env.dead_letters()
    assert list(letters) == [poison["job_id"]]
    if queue_env.backend == "sqs":
        # SQS counts every look at the dead-letter queue as a receive, and the worker looks
        # once to record the dead job in the ledger.
        assert letters[poison["job_id"]].receive_count >= 3
    else:
        assert letters[poison["job_id"]].receive_count == 3
    assert queue_env.record(good[0]["job_id"])["state"] == "succeeded"
    dead = queue_env.record(poison["job_id"])
    assert dead["state"] == "failed" and "dead-lettered after" in dead["error"]


def test_malformed_csv_fails_with_its_line_number_while_the_others_succeed(
    queue_env: QueueEnv,
) -> None:
    inputs = [write_csv(queue_env.work / f"ok-{i}.csv", 50) for i in range(3)]
    bad = queue_env.work / "bad.csv"
    bad.write_text("ID,Value\n1,1.5\n2,2.5\n3,three\n4,4.5\n")
    jobs = run_json("submit", *inputs, bad, env=queue_env.env)

    assert run("worker", "--until-empty", env=queue_env.env).returncode == 0

    counts = queue_env.counts()
    assert (counts["succeeded"], counts["failed"]) == (3, 1)
    failed = queue_env.record(jobs[-1]["job_id"])
    assert failed["state"] == "failed"
    assert "bad.csv:4:" in failed["error"]
    letters = queue_env.dead_letters()
    assert list(letters) == [failed["job_id"]]
    assert letters[failed["job_id"]].receive_count == 1  # permanent: no retries burnt
    assert not (queue_env.storage / jobs[-1]["output"]).exists()


def test_messages_with_paths_outside_the_storage_are_dead_lettered(
    queue_env: QueueEnv, tmp_path: Path
) -> None:
    secret = write_csv(tmp_path / "secret.csv", 3)
    (queue_env.storage / "inputs").mkdir()
    (queue_env.storage / "inputs" / "escape").symlink_to(tmp_path)
    crafted = {
        "evil-input": {"input": "../secret.csv", "output": "outputs/evil.csv"},
        "evil-output": {"input": None, "output": "../../pwned.csv"},
        "evil-symlink": {"input": "inputs/escape/secret.csv", "output": "outputs/x.csv"},
    }
    with queue_env.open_queue() as queue:
        for job_id, paths in crafted.items():
            message = {"v": 1, "job_id": job_id, "task": "csv-process", **paths}
            message.update({"params": {}, "seed": 1, "submitted_at": time.time()})
            queue.send(Outgoing(json.dumps(message)))

    assert run("worker", "--until-empty", env=queue_env.env).returncode == 0

    reasons = {job_id: letter.reason or "" for job_id, letter in queue_env.dead_letters().items()}
    assert set(reasons) == set(crafted)
    assert "'..' is not allowed" in reasons["evil-input"]
    assert "'..' is not allowed" in reasons["evil-output"]
    assert "leaves the storage root" in reasons["evil-symlink"]
    for job_id in crafted:
        assert queue_env.record(job_id)["state"] == "failed"
    assert not (tmp_path.parent / "pwned.csv").exists()
    assert secret.read_text().startswith("ID,Value\n")
    assert not list(queue_env.storage.rglob("evil.csv"))


def test_a_worker_started_before_anything_was_submitted_makes_the_storage_and_waits(
    ledger_env: QueueEnv, tmp_path: Path
) -> None:
    # Given a storage root that does not exist yet (a fresh volume), and the embedded queue
    storage = tmp_path / "fresh" / "storage"
    env = ledger_env.with_env(CONVEYOR_STORAGE=str(storage))
    env.pop("CONVEYOR_QUEUE_URL")

    # When a worker starts first: with nothing to do, --until-empty exits 0
    assert run("worker", "--until-empty", env=env).returncode == 0
    assert storage.is_dir()
    with workers(env, ledger_env.work) as start:
        waiting = start()
        # And a worker that waits runs what is submitted after it started
        (job,) = run_json("submit", write_csv(ledger_env.work / "late.csv", 3), env=env)
        wait_for(
            lambda: run_json("status", job["job_id"], env=env)["state"] == "succeeded",
            what="the job to succeed",
        )
        waiting.signal(signal.SIGTERM)
        assert waiting.wait() == EX_INTERRUPTED
    assert (storage / job["output"]).is_file()


def test_worker_processes_import_a_task_file_whose_path_has_spaces(
    local_env: QueueEnv,
) -> None:
    folder = local_env.work / "my tasks"
    folder.mkdir()
    task_file = folder / "word count.py"
    task_file.write_text(EXAMPLE_TASK.read_text())
    notes = []
    for i in range(3):
        notes.append(local_env.work / f"notes-{i}.txt")
        notes[-1].write_text("one two two\n")
    jobs = run_json("submit", "--task=wordcount", "--import", task_file, *notes, env=local_env.env)

    done = run(
        "worker", "--import", task_file, "--processes=2", "--until-empty", env=local_env.env,
        check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    for job in jobs:
        assert local_env.record(job["job_id"])["state"] == "succeeded"
