"""Hostile rows written straight into the SQLite queue's database, between real jobs: text
that is not UTF-8, BLOBs, empty and NUL-laden bodies, huge ones, JSON of every wrong shape.
Real workers drain the queue: every real job succeeds, every hostile row ends in the
dead-letter queue with a reason, no worker crashes, and ``dlq list`` and ``status`` read
the result. Which rows, and where they sit, is drawn from a seed."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.jobs import Job, JobState
from conveyor.queues.sqlite_path import path_from_url

# The embedded queue (the rows are written into its database) with each ledger backend.
from tests.e2e.conftest import QueueEnv, ledger_env
from tests.e2e.helpers import run, run_json
from tests.faults.checker import account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import fault_copy_output, input_bytes
from tests.faults.harness import prepare, send_raw, worker_env, worker_pool

__all__ = ["ledger_env"]

#: Real jobs per scenario, and hostile rows drawn among them.
REAL_JOBS = 12
HOSTILE_ROWS = 14
#: Seeds the scenario runs with (one run per seed and ledger backend).
SEEDS = [20250612]


def _hex(text: str) -> str:
    return text.encode().hex()


def _envelope(**fields: object) -> str:
    data: dict[str, object] = {
        "v": 1,
        "job_id": "HOSTILE",
        "task": "fault-copy",
        "input": "inputs/none/in.dat",
        "output": "outputs/none/out.dat",
        "params": {},
        "seed": 1,
        "submitted_at": 1.0,
    }
    data.update(fields)
    return json.dumps(data, separators=(",", ":"))


BLOB_JSON = _hex('{"v":1}')
SAME = "inputs/same/a.dat"

#: What a damaged or hand-edited queue database may hold, as SQL expressions for the body
#: column, and the job id a reader can still find in each (None: none).
HOSTILE: dict[str, tuple[str, str | None]] = {
    "text-not-utf8": ("CAST(x'7b22ff' AS TEXT)", None),
    "envelope-not-utf8": (
        f"CAST(x'{_hex(_envelope(job_id='HOSTILE-latin1')[:-1])}' || x'2c2278223a22e922' "
        "|| x'7d' AS TEXT)",
        "HOSTILE-latin1",
    ),
    "blob-json": (f"x'{BLOB_JSON}'", None),
    "blob-not-utf8": ("x'ff00fe7b'", None),
    "empty": ("''", None),
    "nul-bytes": ("CAST(x'7b0022763a3100' AS TEXT)", None),
    "null-json": ("'null'", None),
    "array": ("'[1,2,3]'", None),
    "number": ("12345", None),
    "real": ("1.5", None),
    "huge": ("'{\"x\":\"' || hex(zeroblob(1500000)) || '\"}'", None),
    "deep": ("'{\"a\":' || replace(hex(zeroblob(40000)), '00', '[') || '}'", None),
    "wrong-version-type": (f"'{_envelope(v='1', job_id='HOSTILE-v')}'", None),
    "job-id-a-number": (f"'{_envelope(job_id=123)}'", None),
    "task-a-list": (f"'{_envelope(job_id='HOSTILE-task', task=['a'])}'", "HOSTILE-task"),
    "params-a-string": (f"'{_envelope(job_id='HOSTILE-params', params='x')}'", "HOSTILE-params"),
    "seed-negative": (f"'{_envelope(job_id='HOSTILE-seed', seed=-1)}'", "HOSTILE-seed"),
    "path-escapes": (f"'{_envelope(job_id='HOSTILE-path', input='../x')}'", "HOSTILE-path"),
    "output-is-input": (
        f"'{_envelope(job_id='HOSTILE-same', input=SAME, output=SAME)}'",
        "HOSTILE-same",
    ),
}


def insert_hostile(db: Path, body_sql: str, visible_at_sql: str = "?") -> None:
    """One hostile row, written with SQL as another program could, visible at once (or
    with the visibility time given as SQL)."""
    now = time.time()
    params = (now, now) if visible_at_sql == "?" else (now,)
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute(
            "INSERT INTO messages (message_id, body, sent_at, visible_at) "
            f"VALUES ('hostile', {body_sql}, ?, {visible_at_sql})",
            params,
        )
        conn.commit()


@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_rows_never_block_or_kill_anything(
    ledger_env: QueueEnv, fault_report: FaultReport, seed: int
) -> None:
    rng = random.Random(seed)
    env = ledger_env
    db = path_from_url(env.queue_url)
    # Given real jobs, and hostile rows drawn at random among them (every kind once, then
    # more drawn with replacement), all on the queue in a random order
    expects, bodies = prepare(
        env, "fault-copy", [input_bytes(i) for i in range(REAL_JOBS)], fault_copy_output
    )
    same_input = env.storage / SAME
    same_input.parent.mkdir(parents=True)
    same_input.write_bytes(b"must stay as it is")
    kinds = sorted(HOSTILE)
    kinds += [rng.choice(kinds) for _ in range(max(0, HOSTILE_ROWS - len(kinds)))]
    items: list[tuple[str, str]] = [("real", body) for body in bodies]
    items += [("hostile", kind) for kind in kinds]
    rng.shuffle(items)
    send_raw(env, [])  # creates the queue database
    for what, value in items:
        if what == "real":
            send_raw(env, [value])
        else:
            insert_hostile(db, HOSTILE[value][0])
    # And one row whose visibility time is text (never due, it would block the drain)
    insert_hostile(db, "'{\"v\":1}'", visible_at_sql="'later'")
    kinds.append("visible-at-text")

    # When two workers drain the queue
    with worker_pool(worker_env(env), env.work) as start:
        workers = [start("--until-empty") for _ in range(2)]
        codes = [worker.wait(120) for worker in workers]
        logs = "\n".join(worker.log() for worker in workers)

    # Then both exit 0, with no crash of any kind
    context = f"seed {seed}, rows {kinds}\n{logs[-3000:]}"
    assert codes == [0, 0], context
    assert "Traceback" not in logs, context
    assert '"action":"round"' not in logs, context
    # And every real job succeeded, byte for byte, with nothing left behind
    summary = account(f"hostile queue rows (seed {seed})", expects, env)
    fault_report.add({**summary, "hostile_rows": len(kinds), "seed": seed})
    assert_clean(summary)
    assert summary["published_once"] == REAL_JOBS
    # And every hostile row is in the dead-letter queue, with a reason
    stats = env.stats()
    assert (stats.pending, stats.dead_lettered) == (0, len(kinds)), context
    with env.open_queue() as queue:
        letters = queue.dead_letters(100)
    assert len(letters) == len(kinds)
    assert all(letter.reason and "bad message" in letter.reason for letter in letters), [
        letter.reason for letter in letters
    ]
    # And a hostile row whose job id can be read is failed in the ledger with the reason
    with env.open_ledger(create=False) as ledger:
        for kind in set(kinds) & set(HOSTILE):
            job_id = HOSTILE[kind][1]
            if job_id is not None:
                record = ledger.get(job_id)
                assert record is not None and record.state is JobState.FAILED, kind
                assert record.error and "bad message" in record.error, kind
    assert same_input.read_bytes() == b"must stay as it is"
    # And the commands that read the dead-letter queue and the ledger work on them
    listed = run("dlq", "list", env=env.env)
    assert listed.stdout.count("bad message") == len(kinds), listed.stdout
    assert len(run_json("dlq", "list", env=env.env)) == len(kinds)
    status = run_json("status", env=env.env)
    assert status["counts"]["succeeded"] == REAL_JOBS


def test_a_bad_message_in_a_batch_takes_no_other_job_down(ledger_env: QueueEnv) -> None:
    # Given one BLOB row in the middle of a batch of real jobs (it once crashed the worker
    # outside its per-job handling, and the batch's jobs were dead-lettered falsely)
    env = ledger_env
    expects, bodies = prepare(
        env, "fault-copy", [input_bytes(i) for i in range(4)], fault_copy_output
    )
    send_raw(env, bodies[:2])
    insert_hostile(path_from_url(env.queue_url), HOSTILE["blob-not-utf8"][0])
    send_raw(env, bodies[2:])
    bad_id = Job(task="fault-copy").job_id
    insert_hostile(path_from_url(env.queue_url), f"x'{_hex(_envelope(job_id=bad_id, v=2))}'")

    # When one worker takes them all in one round
    with worker_pool(worker_env(env), env.work) as start:
        worker = start("--until-empty", "--batch-size=10")
        assert worker.wait(60) == 0, worker.log()

    # Then the real jobs succeeded on their first attempt, the bad ones are dead letters
    summary = account("a bad message in a batch", expects, env)
    assert_clean(summary)
    for expect in expects:
        assert env.record(expect.job_id)["attempts"] == 1
    assert env.stats().dead_lettered == 2
    assert env.record(bad_id)["state"] == "failed"
