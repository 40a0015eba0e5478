"""Job groups end to end: a CSV split into shards run by real worker processes, merged by
the group's completion into output byte-identical to ``conveyor run`` on the same seed."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import boto3
import pytest

from conveyor.client import Client
from conveyor.client_groups import Group
from conveyor.jobs import JobState
from conveyor.ledger import GroupState, JobNotFound
from tests.e2e.conftest import QueueEnv, make_queue_env
from tests.e2e.helpers import WorkerProcess, run, workers
from tests.fixtures.sqs import REGION

SEED = 4242


def reference(env: QueueEnv, source: Path) -> bytes:
    """What ``conveyor run`` writes for the whole file with the seed."""
    out = env.work / f"{source.stem}.reference.csv"
    run("run", source, "--output", out, "--seed", str(SEED), env=env.env, cwd=env.work)
    return out.read_bytes()


def submit_split(env: QueueEnv, source: Path, split_rows: int, **options: object) -> Group:
    with Client(env.settings) as client:
        group = client.submit(source, split_rows=split_rows, seed=SEED, **options)  # type: ignore[call-overload]
    assert isinstance(group, Group)
    return group


def leftovers(storage: Path) -> list[str]:
    """Part files, part directories and temporary files left in the outputs."""
    found = []
    for path in (storage / "outputs").rglob("*"):
        if ".parts-" in path.name or ".parts-" in str(path.parent) or ".tmp" in path.name:
            found.append(str(path.relative_to(storage)))
    return found


def merged_output(env: QueueEnv, group: Group) -> Path:
    with env.open_ledger(create=False) as ledger:
        record = ledger.get(group.completion_job_id or "")
    assert record is not None
    assert record.state is JobState.SUCCEEDED, record
    with Client(env.settings) as client:
        job = client.get(group.completion_job_id or "")
    assert job.state is JobState.SUCCEEDED
    return next((env.storage / "outputs" / group.group_id).glob("*.csv"))


@pytest.mark.parametrize("split_rows", [1, 7, 1000])
def test_a_split_csv_merges_byte_identical_to_conveyor_run(
    local_env: QueueEnv, split_rows: int
) -> None:
    # Given a small CSV, and its output from `conveyor run` with a seed
    source = _write_rows(local_env.work / "big.csv", 60)
    expected = reference(local_env, source)
    # When it is submitted split in shards of N rows and two workers drain the queue
    group = submit_split(local_env, source, split_rows)
    assert len(group.jobs) == -(-60 // split_rows)
    if split_rows == 7:  # before any worker: all of its 9 jobs are queued
        shown = run("status", group.group_id, env=local_env.env).stdout
        assert f"group {group.group_id}  running  0 done, 0 failed, 0 running, 9 queued of 9" in (
            shown
        )
    with workers(local_env.env, local_env.work) as start:
        running = [start("--until-empty") for _ in range(2)]
        for worker in running:
            assert worker.wait() == 0, worker.log()
    # Then the group succeeded, the merged output is byte-identical, and no part is left
    with Client(local_env.settings) as client:
        record = client.wait_group(group.group_id, timeout_s=30)
    assert record.state is GroupState.SUCCEEDED, record
    assert record.counts[JobState.SUCCEEDED] == len(group.jobs)
    final = merged_output(local_env, group)
    assert final.read_bytes() == expected
    assert leftovers(local_env.storage) == []


def _write_rows(path: Path, rows: int, *, bad_row: int | None = None) -> Path:
    lines = ["ID,Value"]
    for i in range(rows):
        lines.append(f"{i},not-a-number" if i == bad_row else f"{i},{i * 1.5 + 0.25}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_bad_row_fails_the_group_naming_the_files_real_line(local_env: QueueEnv) -> None:
    # Given a file of 40 rows whose 17th row (line 18 of the file) is bad, split by row
    source = _write_rows(local_env.work / "big.csv", 40, bad_row=16)
    env = local_env.env
    group_id = run("submit", "--split-rows=1", source, f"--seed={SEED}", env=env).stdout.strip()
    # When a worker drains the queue
    run("worker", "--until-empty", env=env)
    # Then the group failed, and status and wait name the file's line 18, not shard line 2
    shown = run("status", group_id, env=env).stdout
    assert f"group {group_id}  failed" in shown, shown
    assert "big.csv:18: Value 'not-a-number' is not a finite number" in shown, shown
    listed = run("status", "--groups", env=env).stdout
    assert f"group {group_id}  failed" in listed, listed
    waited = run("wait", group_id, env=env, check=False)
    assert waited.returncode == 1, waited.stderr
    assert waited.stdout.startswith(f"group {group_id}  failed")
    # And no merged output was published, nor is a part left behind unmerged for good
    assert not list((local_env.storage / "outputs" / group_id).glob("*.csv"))


def test_failures_within_the_tolerance_still_merge_the_other_shards(local_env: QueueEnv) -> None:
    # Given 20 rows split by row, two of them bad, and two failures tolerated (10%)
    source = _write_rows(local_env.work / "big.csv", 20, bad_row=5)
    lines = source.read_text().splitlines()
    lines[12 + 1] = "12,oops"
    source.write_text("\n".join(lines) + "\n")
    group = submit_split(local_env, source, 1, tolerate_failures="10%")
    # When workers drain the queue
    run("worker", "--until-empty", env=local_env.env)
    # Then the group succeeded, and its output holds every row but the two bad ones
    with Client(local_env.settings) as client:
        record = client.wait_group(group.group_id, timeout_s=30)
    assert record.state is GroupState.SUCCEEDED, record
    assert (record.counts[JobState.SUCCEEDED], record.failures) == (18, 2)
    rows = merged_output(local_env, group).read_text().splitlines()
    assert rows[0].startswith("ID,")
    assert [row.split(",")[0] for row in rows[1:]] == [
        str(i) for i in range(20) if i not in (5, 12)
    ]
    assert leftovers(local_env.storage) == []


def test_failures_past_the_tolerance_fail_the_group_and_cancel_the_rest(
    local_env: QueueEnv,
) -> None:
    # Given 30 rows split by row, the first three bad, one failure tolerated
    source = _write_rows(local_env.work / "big.csv", 30)
    lines = source.read_text().splitlines()
    for row in (0, 1, 2):
        lines[row + 1] = f"{row},bad"
    source.write_text("\n".join(lines) + "\n")
    env = local_env.with_env(CONVEYOR_BATCH_SIZE="1")
    group = submit_split(local_env, source, 1, tolerate_failures=1)
    # When one worker, taking one message at a time, drains the queue
    run("worker", "--until-empty", env=env)
    # Then the group failed at its second failure, the completion never ran, and the jobs
    # still queued then were cancelled, not run
    with Client(local_env.settings) as client:
        record = client.wait_group(group.group_id, timeout_s=30)
        assert record.state is GroupState.FAILED, record
        assert record.reason is not None and "tolerated" in record.reason, record.reason
        assert record.counts[JobState.CANCELLED] >= 20, record.counts
        assert record.counts[JobState.SUCCEEDED] == 0, record.counts
        with pytest.raises(JobNotFound):
            client.get(group.completion_job_id or "")
    assert not list((local_env.storage / "outputs" / group.group_id).glob("*.csv"))


@pytest.fixture
def sqs_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """SQS (moto on loopback) with a PostgreSQL ledger: a cluster's backends."""
    return make_queue_env(request, tmp_path, "sqs", "postgresql")


@pytest.mark.parametrize(
    ("backend", "rows", "split_rows"),
    [("local_env", 200, 1), ("local_env", 2000, 10), ("sqs_env", 200, 1)],
)
def test_a_kill_storm_still_merges_once_and_byte_identical(
    request: pytest.FixtureRequest, backend: str, rows: int, split_rows: int
) -> None:
    local_env: QueueEnv = request.getfixturevalue(backend)
    # Given 200 shards (rows split by row, or by 10), and the output of `conveyor run`
    source = _write_rows(local_env.work / "big.csv", rows)
    expected = reference(local_env, source)
    group = submit_split(local_env, source, split_rows)
    assert len(group.jobs) == 200
    # The storm tests the one merge, not dead-lettering: a job may be killed many times
    env = local_env.with_env(
        CONVEYOR_VISIBILITY_TIMEOUT_S="3",
        CONVEYOR_BATCH_SIZE="5",
        CONVEYOR_MAX_RECEIVE_COUNT="50",  # the SQLite queue: the workers' setting
    )
    if local_env.backend == "sqs":
        _raise_receive_cap(local_env, 50)  # SQS: the queue's own redrive policy
    rng = random.Random(7)
    logs: list[WorkerProcess] = []
    with workers(env, local_env.work) as start:
        running = [start() for _ in range(3)]
        logs.extend(running)
        # When a random worker is SIGKILLed about every second (and replaced), for 30 s at
        # most or until the group is finished
        deadline = time.monotonic() + 30
        kills = 0
        while time.monotonic() < deadline and not _finished(local_env, group):
            time.sleep(rng.uniform(0.2, 0.8))
            victim = running.pop(rng.randrange(len(running)))
            os.kill(victim.pid, signal.SIGKILL)
            victim.process.wait(10)
            kills += 1
            fresh = start()
            running.append(fresh)
            logs.append(fresh)
        # And the storm stops: the workers finish the rest
        with Client(local_env.settings) as client:
            record = client.wait_group(group.group_id, timeout_s=60)
    assert kills >= 3, kills  # the storm hit the group while it ran
    # Then the group succeeded; the output is byte-identical; nothing is left behind
    assert record.state is GroupState.SUCCEEDED, record
    assert merged_output(local_env, group).read_bytes() == expected
    assert leftovers(local_env.storage) == []
    # And exactly one completion succeeded: one success in its history, and one success
    # in the workers' logs
    with local_env.open_ledger(create=False) as ledger:
        history = ledger.history(group.completion_job_id or "")
    assert [t.state for t in history].count(JobState.SUCCEEDED) == 1, history
    successes = [
        event
        for worker in logs
        for event in worker.log_events()
        if event.get("job_id") == group.completion_job_id and event.get("action") == "succeeded"
    ]
    assert len(successes) == 1, successes


def _raise_receive_cap(env: QueueEnv, count: int) -> None:
    """Raise the SQS queue's maxReceiveCount (made 3 with the queue): SQS itself moves a
    message to the dead-letter queue on its next receive past it, whatever the workers say."""
    sqs = boto3.client(
        "sqs",
        endpoint_url=env.settings.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        attributes = sqs.get_queue_attributes(
            QueueUrl=env.queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]
        policy = json.loads(attributes["RedrivePolicy"])
        policy["maxReceiveCount"] = count
        sqs.set_queue_attributes(
            QueueUrl=env.queue_url, Attributes={"RedrivePolicy": json.dumps(policy)}
        )
        after = sqs.get_queue_attributes(QueueUrl=env.queue_url, AttributeNames=["RedrivePolicy"])
        assert json.loads(after["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == count
    finally:
        sqs.close()


def _finished(env: QueueEnv, group: Group) -> bool:
    with env.open_ledger(create=False) as ledger:
        record = ledger.group(group.group_id)
    return record is not None and record.finished


@pytest.mark.parametrize("variant", ["crlf", "no-final-newline", "quoted"])
def test_split_outputs_of_other_csv_dialects_match_conveyor_run(
    local_env: QueueEnv, variant: str
) -> None:
    # Given a 30-row CSV with CRLF line ends, no newline after its last row, or quoted fields
    rows = [f"{i},{i * 2.5}" for i in range(30)]
    if variant == "quoted":
        rows = [f'"{i}","{i * 2.5}"' for i in range(30)]
    end = "\r\n" if variant == "crlf" else "\n"
    text = end.join(["ID,Value", *rows]) + ("" if variant == "no-final-newline" else end)
    source = local_env.work / "big.csv"
    source.write_bytes(text.encode())
    expected = reference(local_env, source)
    # When it is split by 4 rows and a worker drains the queue
    group = submit_split(local_env, source, 4)
    run("worker", "--until-empty", env=local_env.env)
    # Then the merged output is byte-identical to the whole file's
    assert merged_output(local_env, group).read_bytes() == expected
    assert leftovers(local_env.storage) == []


def test_a_group_of_a_users_own_tasks_runs_its_completion_after_every_job(
    local_env: QueueEnv,
) -> None:
    # Given a group of three jobs of a user's task, whose completion is that task too
    tasks = Path(__file__).with_name("tasks_for_client.py")
    markers = local_env.work / "markers"
    markers.mkdir()
    settings = local_env.settings.with_(imports=(str(tasks),))
    params = {"marker_dir": str(markers)}
    with Client(settings) as client:
        group = client.submit_group(
            [None, None, None],
            task="mark",
            params=params,
            completion={"task": "mark", "params": params},
        )
        # When a worker drains the queue
        run("worker", f"--import={tasks}", "--until-empty", env=local_env.env)
        record = client.wait_group(group.group_id, timeout_s=30)
    # Then every job ran, then the completion, and the group succeeded
    assert record.state is GroupState.SUCCEEDED, record
    ran = {path.name for path in markers.iterdir()}
    assert ran == {f"{job.job_id}.ran" for job in group.jobs} | {f"{group.group_id}-done.ran"}
    completion = os.stat(markers / f"{group.group_id}-done.ran").st_mtime_ns
    assert all(
        os.stat(markers / f"{job.job_id}.ran").st_mtime_ns <= completion for job in group.jobs
    )
