"""A worker wired to a memory queue, a ledger and a task registry in tmp_path, with an
injected clock: what the worker's unit tests share (the ``env`` fixture is in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.events import WorkerEvent
from conveyor.jobs import Job, JobState
from conveyor.ledger import Ledger
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings
from conveyor.stop import Shutdown
from conveyor.task_registry import TaskRegistry
from conveyor.worker import RoundResult, Worker, WorkerHook

VISIBILITY_S = 30


@dataclass
class Recorder:
    """A job observer that keeps every event (the hook metrics will use)."""

    events: list[WorkerEvent] = field(default_factory=list)

    def worker_event(self, event: WorkerEvent) -> None:
        self.events.append(event)


class FixedBackoff:
    def __init__(self, delay_s: int) -> None:
        self.delay = delay_s
        self.attempts: list[int] = []

    def delay_s(self, attempt: int) -> int:
        self.attempts.append(attempt)
        return self.delay


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until ``predicate`` holds (a task thread waiting for the worker's main thread)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@dataclass
class Env:
    """A worker wired to a memory queue, a ledger and a task registry in tmp_path."""

    root: Path
    clock: ManualClock
    queue: MemoryQueue
    registry: TaskRegistry
    recorder: Recorder
    backoff: FixedBackoff
    shutdown: Shutdown
    settings: Settings
    shared_ledger: Ledger
    calls: list[str] = field(default_factory=list)

    def worker(
        self, *, fresh: bool = False, hooks: Sequence[WorkerHook] = (), **changes: Any
    ) -> Worker:
        """A worker with these settings changed. Unless ``fresh``, it starts as if its
        recent jobs were quick, so its first round takes a full batch (a fresh worker
        takes one message first: see test_a_fresh_worker_takes_one_message_then_adapts)."""
        worker = Worker(
            self.queue,
            self.settings.with_(**changes) if changes else self.settings,
            ledger=self.shared_ledger,
            registry=self.registry,
            observers=[self.recorder],
            clock=self.clock,
            shutdown=self.shutdown,
            backoff=self.backoff,
            hooks=hooks,
        )
        if not fresh:
            worker.pace.warm(0.0)
        return worker

    def submit(self, task: str = "upper", text: str = "hello\n", name: str = "a.txt") -> Job:
        job = Job(task=task, input=f"inputs/{name}", output=f"outputs/{name}")
        path = self.root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.queue.send(Outgoing(job.to_json()))
        return job

    def ledger(self) -> Ledger:
        """The ledger the workers write (the embedded one in the storage root)."""
        return self.shared_ledger

    def state(self, job: Job) -> JobState | None:
        record = self.ledger().get(job.job_id)
        return None if record is None else record.state


def only(result: RoundResult) -> WorkerEvent:
    assert len(result.events) == 1, result.events
    return result.events[0]
