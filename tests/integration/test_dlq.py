"""Dead letters and the ledger: complete reconciliation at any size, listings newest first
with paging, retention and purges, and read-only commands that never create anything.
Real SQLite files, a real ledger, the moto SQS server, and the CLI as a subprocess."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger, LedgerEvent, open_ledger
from conveyor.queues import DeadLetter, Outgoing, Queue, open_queue
from conveyor.queues.sqlite import SQLiteQueue
from conveyor.reconcile import (
    CRASH_HINT,
    DeadLetterWatch,
    last_error,
    reconcile_dead_letters,
    reconcile_queue,
)
from conveyor.storage import Storage
from conveyor.tempfiles import TEMP_PREFIX
from tests.e2e.conftest import QueueEnv, local_env, make_queue_env
from tests.e2e.helpers import run, run_json

__all__ = ["local_env"]


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    (tmp_path / "storage").mkdir()
    return Storage(tmp_path / "storage")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.fixture
def sqs_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """The moto SQS queue with the embedded ledger: for what only SQS does differently."""
    return make_queue_env(request, tmp_path, "sqs", "sqlite")


#: A writer that dies holding a half-written temporary output (as ``kill -9`` leaves it).
WRITE_AND_DIE = """
import os, sys
from pathlib import Path
from conveyor.atomic import atomic_output
with atomic_output(Path(sys.argv[1])) as temp:
    temp.write_bytes(b"half")
    os._exit(9)
"""


def running_job(ledger: Ledger, attempt: int = 3) -> Job:
    """A job the ledger has as running (its worker died), with an output path."""
    job = Job(task="t", output=f"outputs/{time.monotonic_ns()}/out.csv")
    ledger.record_many([LedgerEvent.for_job(job, JobState.RUNNING, attempt=attempt)])
    return job


def bury(queue: Queue, bodies: Sequence[str]) -> None:
    """Dead-letter ``bodies`` through the queue, ten at a time."""
    for start in range(0, len(bodies), 10):
        queue.send_batch([Outgoing(body) for body in bodies[start : start + 10]])
        for held in queue.receive(10, wait_s=1):
            queue.dead_letter(held.lease, "received 3 times (max_receive_count)")


def count_reads(queue: Queue) -> list[int]:
    """Record how many letters each ``unreconciled_dead_letters`` call returned."""
    reads: list[int] = []
    real = queue.unreconciled_dead_letters

    def spy(limit: int) -> list[DeadLetter]:
        found = real(limit)
        reads.append(len(found))
        return found

    queue.unreconciled_dead_letters = spy  # type: ignore[method-assign]
    return reads


# --- reconciliation ---------------------------------------------------------------------------


def test_reconciliation_is_complete_and_costs_what_is_new(
    tmp_path: Path, ledger: Ledger, storage: Storage
) -> None:
    # Given 2,500 letters of jobs that failed long ago, never reconciled by this conveyor
    queue = SQLiteQueue(tmp_path / "queue.db")
    old = [Job(task="t") for _ in range(2500)]
    ledger.record_many([LedgerEvent.for_job(j, JobState.FAILED, attempt=3) for j in old])
    now = time.time()
    with closing(sqlite3.connect(queue.path)) as conn:
        conn.executemany(
            "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason,"
            " dead_at) VALUES ('m', ?, 1.0, 3, 'old', ?)",
            [(job.to_json(), now) for job in old],
        )
        conn.commit()
    # And, dead-lettered after all of them, a job whose workers all died
    job = running_job(ledger)
    bury(queue, [job.to_json()])
    reads = count_reads(queue)

    # When the queue is reconciled
    done = reconcile_queue(queue, ledger, storage, worker="w")

    # Then the newest job is failed, whatever came before it
    assert done == [job.job_id]
    record = ledger.get(job.job_id)
    assert record is not None and record.state is JobState.FAILED
    assert record.error is not None and record.error.endswith(f"({CRASH_HINT})")
    assert sum(reads) == 2501
    # And the next passes read only what is new
    reads.clear()
    assert reconcile_queue(queue, ledger, storage, worker="w") == []
    assert reads == [0]
    newer = running_job(ledger)
    bury(queue, [newer.to_json()])
    reads.clear()
    assert reconcile_queue(queue, ledger, storage, worker="w") == [newer.job_id]
    assert reads == [1]
    queue.close()


def test_the_reason_carries_the_last_error_of_this_run(
    tmp_path: Path, ledger: Ledger, storage: Storage
) -> None:
    job = Job(task="t")
    ledger.record_many(
        [
            LedgerEvent.for_job(job, JobState.RETRYING, attempt=1, error="earlier run"),
            LedgerEvent.for_job(job, JobState.FAILED, attempt=1, error="earlier run"),
        ]
    )
    assert ledger.redrive(job.job_id)
    assert last_error(ledger, job.job_id) is None  # the redrive started a new run
    ledger.record_many(
        [
            LedgerEvent.for_job(job, JobState.RUNNING, attempt=1),
            LedgerEvent.for_job(job, JobState.RETRYING, attempt=1, error="disk on fire"),
            LedgerEvent.for_job(job, JobState.RUNNING, attempt=2),
        ]
    )
    letter = DeadLetter("m", job.to_json(), 3, "received 3 times (max_receive_count)")

    assert reconcile_dead_letters([letter], ledger, storage) == [job.job_id]

    record = ledger.get(job.job_id)
    assert record is not None and record.error == (
        f"dead-lettered after 3 receives; last error: disk on fire ({CRASH_HINT})"
    )


def test_reconciliation_removes_what_dead_workers_left(
    tmp_path: Path, ledger: Ledger, storage: Storage
) -> None:
    # Given a job whose last worker was killed while writing its output
    job = running_job(ledger)
    output = storage.root / str(job.output)
    killed = subprocess.run(
        [sys.executable, "-c", WRITE_AND_DIE, str(output)], check=False, timeout=60
    )
    assert killed.returncode == 9
    assert [p.name.startswith(TEMP_PREFIX) for p in output.parent.iterdir()] == [True]
    letter = DeadLetter("m", job.to_json(), 3)

    # When its dead letter is reconciled
    reconcile_dead_letters([letter], ledger, storage)

    # Then its temporary file is gone (it will never run again)
    assert list(output.parent.iterdir()) == []


def test_hostile_dead_letters_never_stop_reconciliation(
    tmp_path: Path, ledger: Ledger, storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given hostile rows in the dead-letter table around a real job's letter
    queue = SQLiteQueue(tmp_path / "queue.db")
    job = running_job(ledger)
    bury(queue, [job.to_json()])
    with closing(sqlite3.connect(queue.path)) as conn:
        for body in ("x'ff00'", "CAST(x'7b22ff' AS TEXT)", "''", "'[1]'", "42"):
            conn.execute(
                "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason,"
                f" dead_at) VALUES (x'ff', {body}, 'x', 'y', x'1b5b', 0)"
            )
        conn.commit()
    watch = DeadLetterWatch(queue, ledger, worker="w", clock=time.monotonic, storage=storage)

    # When an idle worker looks
    reconciled = watch.poll()

    # Then the real job is failed, and every letter is marked: the next look reads nothing
    assert reconciled == [job.job_id]
    assert queue.unreconciled_dead_letters(100) == []

    # And even a queue that fails in an unforeseen way costs a log line, not the worker
    def broken(limit: int) -> list[DeadLetter]:
        raise TypeError("an unforeseen failure")

    queue.unreconciled_dead_letters = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        assert watch.poll(final=True) == []
    assert "reconciling the dead-letter queue failed" in caplog.text
    queue.close()


def test_an_sqs_dead_letter_queue_is_read_beyond_the_list_limit(
    sqs_env: QueueEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an SQS dead-letter queue holding more letters than one listing used to read
    monkeypatch.setattr("conveyor.reconcile.LIST_LIMIT", 4)
    with sqs_env.open_ledger() as ledger, sqs_env.open_queue() as queue:
        jobs = [running_job(ledger) for _ in range(9)]
        bury(queue, [job.to_json() for job in jobs])
        deadline = time.monotonic() + 10
        while queue.stats().dead_lettered < 9:
            assert time.monotonic() < deadline, queue.stats()
        watch = DeadLetterWatch(queue, ledger, worker="w", clock=time.monotonic)

        # When a worker that just drained the queue looks, on its way out
        watch.pending()
        reconciled = watch.poll(final=True)

        # Then every job is failed, not only the first listed
        assert sorted(reconciled) == sorted(job.job_id for job in jobs)


# --- the commands --------------------------------------------------------------------------------


def test_read_only_commands_on_a_mistyped_url_fail_and_create_nothing(
    local_env: QueueEnv, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'queue.db'}"
    env = local_env.with_env(CONVEYOR_QUEUE_URL=url)
    for command in (
        ["queue", "stats"],
        ["dlq", "list"],
        ["dlq", "redrive"],
        ["dlq", "purge", "--yes"],
        ["queue", "purge", "--yes"],
    ):
        done = run(*command, env=env, check=False)
        assert done.returncode == 78, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"conveyor: error: no queue at {url}: nothing submitted yet, or a mistyped URL"
        ]
        assert done.stdout == ""
    assert not (tmp_path / "typo").exists()


def test_read_only_commands_before_the_first_submit_say_so(
    local_env: QueueEnv, tmp_path: Path
) -> None:
    for storage in (tmp_path / "never-made", local_env.storage):
        env = local_env.with_env(CONVEYOR_STORAGE=str(storage))
        env.pop("CONVEYOR_QUEUE_URL")  # the embedded queue, in the storage root
        for command in (["queue", "stats"], ["dlq", "list"], ["dlq", "redrive"]):
            done = run(*command, env=env)
            assert done.stdout.strip() == f"nothing submitted yet under {storage}", command
        assert run_json("dlq", "list", env=env) == []
        assert run_json("queue", "stats", env=env)["visible"] == 0
    assert not (tmp_path / "never-made").exists()
    assert list(local_env.storage.iterdir()) == []


def test_dlq_list_pages_newest_first(local_env: QueueEnv) -> None:
    with local_env.open_queue() as queue:
        bury(queue, [f"message {i}" for i in range(5)])

    first = run("dlq", "list", "--limit", "2", env=local_env.env).stdout.splitlines()
    as_json = run_json("dlq", "list", "--limit", "2", env=local_env.env)
    rest = run_json("dlq", "list", "--before", as_json[-1]["cursor"], env=local_env.env)
    bad = run("dlq", "list", "--before", "nonsense", env=local_env.env, check=False)

    assert [letter["body"] for letter in as_json] == ["message 4", "message 3"]
    assert [letter["body"] for letter in rest] == ["message 2", "message 1", "message 0"]
    assert first[-1] == f"older letters: conveyor dlq list --before {as_json[-1]['cursor']}"
    assert bad.returncode == 2 and "cursor" in bad.stderr


def test_queue_purge_records_the_purged_jobs_as_cancelled(local_env: QueueEnv) -> None:
    # Given three waiting jobs and one that already succeeded
    jobs = [Job(task="t") for _ in range(4)]
    with local_env.open_ledger() as ledger, local_env.open_queue() as queue:
        ledger.record_queued(jobs)
        ledger.record_many([LedgerEvent.for_job(jobs[3], JobState.SUCCEEDED, attempt=1)])
        queue.send_batch([Outgoing(job.to_json()) for job in jobs] + [Outgoing("junk")])

    purged = run("queue", "purge", "--yes", env=local_env.env)

    assert purged.stdout.strip() == (
        "purged 5 message(s); recorded 3 job(s) as cancelled in the ledger (purged from the queue)"
    )
    status = run_json("status", env=local_env.env)
    assert (status["counts"]["queued"], status["counts"]["cancelled"]) == (0, 3)
    assert local_env.record(jobs[0].job_id)["error"] == "purged from the queue"
    assert local_env.record(jobs[3].job_id)["state"] == "succeeded"


def test_queue_purge_on_sqs_says_the_jobs_are_unchanged(sqs_env: QueueEnv) -> None:
    job = Job(task="t")
    with sqs_env.open_ledger() as ledger, sqs_env.open_queue() as queue:
        ledger.record_queued([job])
        queue.send(Outgoing(job.to_json()))

    purged = run("queue", "purge", "--yes", env=sqs_env.env).stdout

    assert "does not say which messages it deleted (SQS)" in purged
    assert sqs_env.record(job.job_id)["state"] == "queued"


def test_dlq_redrive_reopens_exactly_the_jobs_it_moved(local_env: QueueEnv) -> None:
    jobs = [Job(task="t") for _ in range(3)]
    with local_env.open_ledger() as ledger, local_env.open_queue() as queue:
        ledger.record_many([LedgerEvent.for_job(j, JobState.FAILED, attempt=1) for j in jobs])
        bury(queue, [job.to_json() for job in jobs])

    redriven = run("dlq", "redrive", "--limit", "2", env=local_env.env).stdout

    assert redriven.strip() == "redrove 2 message(s); reopened 2 job(s) as queued"
    states = [local_env.record(job.job_id)["state"] for job in jobs]
    assert states == ["queued", "queued", "failed"]  # the oldest two moved
    assert local_env.stats().visible == 2


def test_dlq_purge_by_age_and_all(local_env: QueueEnv) -> None:
    with local_env.open_queue() as queue:
        bury(queue, ["old", "new"])
    with closing(sqlite3.connect(local_env.queue_url.removeprefix("sqlite://"))) as conn:
        conn.execute("UPDATE dead_letters SET dead_at = dead_at - 7200 WHERE body = 'old'")
        conn.commit()

    by_age = run("dlq", "purge", "--older-than", "1h", "--yes", env=local_env.env).stdout
    left = run_json("dlq", "list", env=local_env.env)
    bad = run("dlq", "purge", "--older-than", "soon", "--yes", env=local_env.env, check=False)
    refused = run("dlq", "purge", env=local_env.env, input_text="n\n", check=False)
    everything = run("dlq", "purge", "--yes", env=local_env.env).stdout

    assert by_age.strip() == "deleted 1 dead letter(s)"
    assert [letter["body"] for letter in left] == ["new"]
    assert bad.returncode == 2 and "bad duration 'soon'" in bad.stderr
    assert refused.returncode == 1
    assert everything.strip() == "deleted 1 dead letter(s)"
    assert local_env.stats().dead_lettered == 0


def test_dlq_purge_on_sqs_purges_the_dead_letter_queue(sqs_env: QueueEnv) -> None:
    with sqs_env.open_queue() as queue:
        bury(queue, ["a", "b"])

    purged = run("dlq", "purge", "--yes", env=sqs_env.env).stdout
    by_age = run("dlq", "purge", "--older-than", "1d", "--yes", env=sqs_env.env, check=False)

    assert purged.strip() == "purged the dead-letter queue"
    deadline = time.monotonic() + 10
    while sqs_env.stats().dead_lettered:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert by_age.returncode == 78 and "MessageRetentionPeriod" in by_age.stderr


def test_dlq_list_reads_hostile_letters(local_env: QueueEnv) -> None:
    with local_env.open_queue() as queue:
        bury(queue, ["placeholder"])
    path = local_env.queue_url.removeprefix("sqlite://")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "UPDATE dead_letters SET body = CAST(x'7b22ff' AS TEXT),"
            " reason = CAST(x'1b5b33316dff' AS TEXT), message_id = x'ff'"
        )
        conn.commit()

    listed = run("dlq", "list", env=local_env.env).stdout
    (as_json,) = run_json("dlq", "list", env=local_env.env)

    assert listed.startswith("?  ")
    assert "\x1b" not in listed
    assert as_json["job_id"] is None and as_json["body"] == '{"\udcff'
    assert open_queue(local_env.queue_url, local_env.settings).dead_letters()[0].body


def test_queue_purge_removes_the_claims_of_the_purged_jobs(local_env: QueueEnv) -> None:
    # Given three claim-checked jobs, two of them sharing one params file
    from conveyor.client import connect

    big = "x" * (300 * 1024)
    settings = local_env.settings
    claims = settings.storage / "_conveyor" / "claims"
    with connect(
        storage=settings.storage,
        queue=settings.resolved_queue_url,
        ledger=settings.resolved_ledger_url,
    ) as client:
        for params in ({"big": big}, {"big": big}, {"big": big, "n": 1}):
            client.submit(task="csv-process", params=params)
    assert len(list(claims.iterdir())) == 5  # three own names, two shared files

    # When the queue is purged
    run("queue", "purge", "--yes", env=local_env.env)

    # Then no claim is left behind
    assert list(claims.iterdir()) == []
