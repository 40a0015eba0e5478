"""The Client against every queue backend (memory, SQLite, the SQS test server), through the
queue contract suite's fixture, with a real worker taking the jobs in another thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.client import Client
from conveyor.events import Action, WorkerEvent
from conveyor.jobs import CLAIM_THRESHOLD_BYTES, Job, JobState
from conveyor.queues.base import Queue
from conveyor.settings import Settings
from conveyor.stop import MaxJobs, Shutdown
from conveyor.submission import SubmitInterrupted
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker
from tests.fixtures.queues import QueueFactory


@dataclass
class Scene:
    """A client and a worker sharing one queue (of the backend under test) and one ledger."""

    client: Client
    queue: Queue
    registry: TaskRegistry
    storage: Path
    work: Path
    markers: Path
    events: list[WorkerEvent]

    def run_worker(self, jobs: int) -> threading.Thread:
        """A worker in a thread that stops after handling ``jobs`` messages."""
        settings = Settings(
            storage=self.storage, visibility_timeout_s=30, wait_s=0.2, max_receive_count=3
        )
        worker = Worker(
            self.queue,
            settings,
            ledger=self.client.ledger,
            registry=self.registry,
            observers=[self],
            shutdown=Shutdown(),
        )
        thread = threading.Thread(target=worker.run, args=(MaxJobs(jobs),), daemon=True)
        thread.start()
        return thread

    def worker_event(self, event: WorkerEvent) -> None:
        self.events.append(event)

    def inputs(self, count: int) -> list[Path]:
        made = []
        for index in range(count):
            path = self.work / f"n{index}.txt"
            path.write_text(f"{index}\n")
            made.append(path)
        return made


@pytest.fixture
def scene(make_queue: QueueFactory, tmp_path: Path) -> Iterator[Scene]:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "markers").mkdir()
    queue = make_queue(visibility_timeout_s=30, max_receive_count=3)
    registry = TaskRegistry()
    markers = tmp_path / "markers"

    @registry.task("double")
    def double(ctx: TaskContext) -> dict[str, object]:
        (markers / ctx.job.job_id).touch()
        number = int(ctx.input_path.read_text()) if ctx.input_path else int(ctx.params["n"])
        if ctx.write_path is not None:
            ctx.write_path.write_text(f"{number * 2}\n")
        return {"doubled": number * 2, "param_bytes": len(str(ctx.params))}

    with Client(Settings(storage=storage), registry=registry, queue=queue) as client:
        yield Scene(client, queue, registry, storage, tmp_path / "work", markers, [])
        client.ledger.close()


def test_submitted_jobs_run_and_wait_returns_their_results(scene: Scene) -> None:
    # Given five files and one job without input, submitted together
    items: list[object] = [*scene.inputs(5), {"params": {"n": 21}, "output": "out/param.txt"}]
    jobs = scene.client.submit_many(items, task="double")  # type: ignore[arg-type]
    # When a worker takes them while the client waits
    worker = scene.run_worker(len(jobs))
    records = scene.client.wait([job.job_id for job in jobs], timeout_s=60, max_poll_s=0.2)
    worker.join(30)
    # Then each one succeeded with its result and published its output
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 6
    assert [r.result["doubled"] for r in records if r.result] == [0, 2, 4, 6, 8, 42]
    assert [r.source for r in records] == [str(p) for p in scene.inputs(5)] + [None]
    for record in records:
        assert record.output is not None
        assert (scene.storage / record.output).read_text() == f"{record.result['doubled']}\n"  # type: ignore[index]


def test_a_cancelled_job_never_runs(scene: Scene) -> None:
    # Given three queued jobs, the second cancelled
    jobs = scene.client.submit_many(scene.inputs(3), task="double")
    scene.client.cancel(jobs[1].job_id, reason="not wanted")
    # When a worker takes all three
    scene.run_worker(3).join(60)
    records = scene.client.wait([job.job_id for job in jobs], timeout_s=10)
    # Then the cancelled one was acked without running, and the others ran
    assert [r.state for r in records] == [
        JobState.SUCCEEDED,
        JobState.CANCELLED,
        JobState.SUCCEEDED,
    ]
    assert sorted(path.name for path in scene.markers.iterdir()) == sorted(
        [jobs[0].job_id, jobs[2].job_id]
    )
    cancelled = [event for event in scene.events if event.action is Action.CANCELLED]
    assert [(e.job_id, e.reason) for e in cancelled] == [(jobs[1].job_id, "not run: not wanted")]
    assert scene.queue.stats().pending == 0


def test_params_over_the_threshold_travel_by_claim_check(scene: Scene) -> None:
    # Given params larger than any queue's message limit the submitter allows
    assert min(CLAIM_THRESHOLD_BYTES, scene.queue.max_message_bytes) == CLAIM_THRESHOLD_BYTES
    blob = "x" * (CLAIM_THRESHOLD_BYTES + 1)
    job = scene.client.submit(task="double", params={"n": 1, "blob": blob})
    # When a worker runs it
    scene.run_worker(1).join(60)
    (record,) = scene.client.wait([job.job_id], timeout_s=10)
    # Then the task saw the whole params, and the claim is gone once the job succeeded
    assert record.state is JobState.SUCCEEDED
    assert record.result is not None and record.result["param_bytes"] > CLAIM_THRESHOLD_BYTES
    claims = scene.storage / "_conveyor" / "claims"
    assert [path.name for path in claims.iterdir()] == []


def test_an_interrupted_submit_leaves_the_queue_and_the_ledger_alike(scene: Scene) -> None:
    # Given 35 files, and a SIGTERM while the second batch is sent
    sent_batches: list[Sequence[Job]] = []

    def on_sent(jobs: Sequence[Job]) -> None:
        sent_batches.append(jobs)
        if len(sent_batches) == 2:
            signal.raise_signal(signal.SIGTERM)

    # When they are submitted
    with pytest.raises(SubmitInterrupted) as caught:
        scene.client.submit_many(scene.inputs(35), task="double", on_sent=on_sent)
    # Then the queue holds exactly the 20 jobs sent, each of them in the ledger
    sent = {job.job_id for job in caught.value.sent}
    assert len(sent) == 20
    in_queue: set[str] = set()
    while batch := scene.queue.receive(10, 0.5, 60):
        in_queue.update(Job.from_json(message.body).job_id for message in batch)
        if len(in_queue) >= 20:
            break
    assert in_queue == sent
    assert set(scene.client.ledger.get_many(sent)) == sent
    assert scene.client.ledger.counts()[JobState.QUEUED] == 20
    inputs = {path.name for path in (scene.storage / "inputs").iterdir()}
    assert inputs - {".conveyor-staging"} == sent
