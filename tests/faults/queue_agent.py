"""A producer or consumer of the SQLite queue for the queue-database storm; killed at random.

``python -m tests.faults.queue_agent produce|consume DB LOG_DIR NAME``. Every id is logged
only once the queue call about it has returned (``sent``, ``acked``) or is about to be made
(``acking``), with unbuffered writes, so a SIGKILL loses at most the line being written.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from conveyor.errors import TransientQueueError
from conveyor.queues.messages import Outgoing
from conveyor.queues.sqlite import SQLiteQueue

#: Never run longer than this, even if nobody kills us.
MAX_LIFE_S = 120.0


class Log:
    """An append-only log of ids, one per line, written unbuffered."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, ids: list[str]) -> None:
        if ids:
            os.write(self._fd, "".join(f"{i}\n" for i in ids).encode())


def produce(queue: SQLiteQueue, logs: Path, name: str) -> None:
    sent = Log(logs / f"sent-{name}.log")
    rng = random.Random(name)
    deadline = time.monotonic() + MAX_LIFE_S
    batch = 0
    while time.monotonic() < deadline:
        ids = [f"{name}-{batch}-{k}" for k in range(rng.randint(1, 10))]
        try:
            queue.send_batch([Outgoing(i) for i in ids])
        except TransientQueueError:
            continue  # not acknowledged: these ids are not logged, and never reused
        sent.write(ids)  # acknowledged by the queue: it must never be lost
        batch += 1
        time.sleep(rng.uniform(0, 0.01))


def consume(queue: SQLiteQueue, logs: Path, name: str) -> None:
    acking, acked = Log(logs / f"acking-{name}.log"), Log(logs / f"acked-{name}.log")
    rng = random.Random(name)
    deadline = time.monotonic() + MAX_LIFE_S
    while time.monotonic() < deadline:
        try:
            _consume_once(queue, rng, acking, acked)
        except TransientQueueError:
            continue  # the database stayed locked: what was not acked comes back


def _consume_once(queue: SQLiteQueue, rng: random.Random, acking: Log, acked: Log) -> None:
    """One receive, then at random: let the leases expire, release, dead-letter one, ack."""
    messages = queue.receive(10, 0.2, visibility_timeout_s=1)
    roll = rng.random()
    if roll < 0.1:
        return  # the leases expire: redelivered, receive count up
    if roll < 0.2:
        queue.release_batch([m.lease for m in messages], 0)
        return
    if roll < 0.22 and messages:
        queue.dead_letter(messages[0].lease, "the storm dead-letters one now and then")
        messages = messages[1:]
    acking.write([m.body for m in messages])
    result = queue.ack_batch([m.lease for m in messages])
    done = set(result.ok)
    acked.write([m.body for m in messages if m.lease in done])


def main(argv: list[str]) -> int:
    role, db, log_dir, name = argv[1:5]
    queue = SQLiteQueue(db, visibility_timeout_s=1, max_receive_count=5)
    (produce if role == "produce" else consume)(queue, Path(log_dir), name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
