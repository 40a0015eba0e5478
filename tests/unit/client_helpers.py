"""What the client's tests share: input files, the queue's messages, the copied inputs
(the ``registry`` and ``client`` fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from conveyor.client import Client
from conveyor.jobs import Job
from conveyor.queues.base import Queue


def files(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        path = directory / f"in-{index}.txt"
        path.write_text(f"file {index}\n")
        made.append(path)
    return made


def queued(queue: Queue) -> list[Job]:
    """Every message in the queue, received once (and left in flight)."""
    jobs: list[Job] = []
    while batch := queue.receive(10, 0, 600):
        jobs.extend(Job.from_json(message.body) for message in batch)
    return jobs


def input_dirs(client: Client) -> set[str]:
    inputs = client.storage.root / "inputs"
    if not inputs.is_dir():
        return set()
    return {path.name for path in inputs.iterdir() if not path.name.startswith(".")}
