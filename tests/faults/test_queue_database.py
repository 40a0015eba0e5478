"""The SQLite queue database under repeated kill -9 of producers and consumers."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.queues import Queue
from conveyor.queues.sqlite import SQLiteQueue
from tests.faults.conftest import FaultReport
from tests.faults.harness import REPO_ROOT

STORM_S = 15.0
#: The consumers' visibility timeout (queue_agent.py).
LEASE_S = 1.0
AGENTS = {"produce": 2, "consume": 2}


def start_agent(role: str, db: Path, logs: Path, name: str) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.err").open("wb") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.queue_agent", role, str(db), str(logs), name],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def drain(queue: Queue) -> list[str]:
    """Every message left (call it once the killed consumers' leases have run out)."""
    bodies: list[str] = []
    while batch := queue.receive(10, 0):
        bodies.extend(m.body for m in batch)
    stats = queue.stats()
    assert (stats.visible, stats.delayed) == (0, 0), stats
    assert stats.in_flight == len(bodies)  # every one of them held by this drain
    return bodies


def read_ids(logs: Path, pattern: str) -> set[str]:
    """Every complete line of the matching logs (a kill may cut the last one short)."""
    ids: set[str] = set()
    for path in logs.glob(pattern):
        ids.update(path.read_text().split("\n")[:-1])
    return ids


@pytest.mark.slow
def test_queue_database_survives_kill_9_and_loses_no_acknowledged_send(
    tmp_path: Path, fault_report: FaultReport
) -> None:
    db, logs = tmp_path / "queue.db", tmp_path / "logs"
    logs.mkdir()
    SQLiteQueue(db).close()  # created once, before the storm
    rng = random.Random(8)
    agents: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    incarnation = 0

    def spawn(slot: str, role: str) -> None:
        nonlocal incarnation
        incarnation += 1  # a fresh name: a restarted producer never reuses an id
        agents[slot] = (role, start_agent(role, db, logs, f"{slot}.{incarnation}"))

    for role, count in AGENTS.items():
        for index in range(count):
            spawn(f"{role}{index}", role)
    kills = 0
    try:
        # When a random producer or consumer is SIGKILLed several times a second
        deadline = time.monotonic() + STORM_S
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.4))
            slot = rng.choice(sorted(agents))
            role, process = agents[slot]
            process.kill()
            process.wait(10)
            kills += 1
            spawn(slot, role)
        for _, process in agents.values():
            assert process.poll() is None, "an agent died by itself: see its .err log"
    finally:
        for _, process in agents.values():
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    time.sleep(LEASE_S + 0.5)  # the leases the killed consumers held run out

    # Then the database is intact
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # And every send the queue acknowledged was acked by a consumer, or is still there
    sent = read_ids(logs, "sent-*.log")
    acking = read_ids(logs, "acking-*.log")
    acked = read_ids(logs, "acked-*.log")
    with SQLiteQueue(db, visibility_timeout_s=600, max_receive_count=1000) as queue:
        remaining = drain(queue)
        dead = [letter.body for letter in queue.dead_letters(1_000_000)]
    lost = sent - acking - set(remaining) - set(dead)
    revived = acked & set(remaining)  # an ack that said yes but did not stick
    summary = {
        "scenario": "SQLite queue database under kill -9",
        "backend": "sqlite",
        "jobs": len(sent),
        "published_once": len(sent & acked),
        "published_more": 0,
        "publications": len(acked),
        "failed_as_expected": 0,
        "crashed_attempts": 0,
        "duplicates_identical": True,
        "lost": sorted(lost),
        "partial": [],
        "mismatched": sorted(revived),
        "unexpected": [],
        "stuck": [],
        "regressions": [],
        "temp_files": [],
        "kills": kills,
        "ok": not lost and not revived,
        "still_queued": len(remaining),
        "dead_lettered": len(dead),
    }
    fault_report.add(summary)
    assert not lost, f"{len(lost)} acknowledged sends lost, e.g. {sorted(lost)[:5]}"
    assert not revived, f"acked but still queued: {sorted(revived)[:5]}"
    assert len(sent) > 1000 and len(acked) > 1000, (len(sent), len(acked))
    assert kills >= 30
    assert len(remaining) == len(set(remaining))  # no message stored twice
