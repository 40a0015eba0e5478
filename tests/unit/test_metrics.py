"""The worker's Prometheus metrics, fed by the real worker loop on the in-memory queue."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.errors import BadInput
from conveyor.events import Action, WorkerEvent
from conveyor.jobs import Job
from conveyor.metrics import QueueRequestCollector, WorkerMetrics
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker

HEARTBEAT_S = 10.0


class ZeroBackoff:
    """Retry at once, so a test can receive the same message again in the next round."""

    def delay_s(self, attempt: int) -> int:
        return 0


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    """A sample's value (0 when it does not exist yet)."""
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def event(action: Action, **fields: object) -> WorkerEvent:
    base: dict[str, object] = {"job_id": "j1", "task": "t", "attempt": 1, "worker": "w"}
    return WorkerEvent(action=action, **{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(clock: ManualClock) -> MemoryQueue:
    return MemoryQueue(visibility_timeout_s=30, max_receive_count=3, clock=clock)


def make_worker(
    queue: MemoryQueue, clock: ManualClock, root: Path, registry: TaskRegistry, m: WorkerMetrics
) -> Worker:
    root.mkdir(exist_ok=True)
    settings = Settings(
        storage=root,
        visibility_timeout_s=30,
        max_receive_count=3,
        wait_s=0,
        heartbeat_every_s=HEARTBEAT_S,
    )
    worker = Worker(
        queue, settings, registry=registry, observers=[m], clock=clock, backoff=ZeroBackoff()
    )
    worker.pace.warm(0.0)  # a full first round (a fresh worker's takes one message)
    return worker


def send(queue: MemoryQueue, task: str) -> Job:
    job = Job(task=task, output=f"outputs/{task}-{time.monotonic_ns()}")
    queue.send(Outgoing(job.to_json()))
    return job


def test_a_worker_round_counts_outcomes_rows_dead_letters_and_redeliveries(
    queue: MemoryQueue, clock: ManualClock, tmp_path: Path
) -> None:
    registry = TaskRegistry()

    @registry.task("csvish")
    def csvish(ctx: TaskContext) -> dict[str, object]:
        ctx.write_path.write_text("x\n")
        return {"rows": 42, "seed": 7}

    @registry.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise BadInput("row 3 is malformed")

    @registry.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        raise RuntimeError("try again")

    metrics = WorkerMetrics(queue, process_metrics=False)
    worker = make_worker(queue, clock, tmp_path / "storage", registry, metrics)
    for task in ("csvish", "csvish", "bad", "flaky"):
        send(queue, task)

    worker.run_once()

    assert value(metrics, "conveyor_jobs_total", task="csvish", outcome="succeeded") == 2
    assert value(metrics, "conveyor_rows_processed_total", task="csvish") == 84
    assert value(metrics, "conveyor_jobs_total", task="bad", outcome="failed") == 1
    assert value(metrics, "conveyor_dead_letters_total", task="bad") == 1
    assert value(metrics, "conveyor_jobs_total", task="flaky", outcome="retrying") == 1
    assert value(metrics, "conveyor_messages_received_total") == 4
    assert value(metrics, "conveyor_redeliveries_total") == 0
    assert (
        value(metrics, "conveyor_job_duration_seconds_count", task="csvish", outcome="succeeded")
        == 2
    )
    assert value(metrics, "conveyor_job_queue_wait_seconds_count", task="csvish") == 2
    assert value(metrics, "conveyor_jobs_in_progress") == 0

    worker.run_once()  # the flaky job comes back at once (zero backoff): a redelivery

    assert value(metrics, "conveyor_messages_received_total") == 5
    assert value(metrics, "conveyor_redeliveries_total") == 1
    assert value(metrics, "conveyor_jobs_total", task="flaky", outcome="retrying") == 2


def test_heartbeat_extensions_are_counted(
    queue: MemoryQueue, clock: ManualClock, tmp_path: Path
) -> None:
    registry = TaskRegistry()
    metrics = WorkerMetrics(queue, process_metrics=False)
    extended = threading.Event()

    @registry.task("long")
    def long(ctx: TaskContext) -> None:
        clock.advance(HEARTBEAT_S + 1)  # the worker's next tick finds a heartbeat due
        deadline = time.monotonic() + 10
        while value(metrics, "conveyor_lease_extensions_total") < 1:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        extended.set()

    worker = make_worker(queue, clock, tmp_path / "storage", registry, metrics)
    send(queue, "long")
    worker.run_once()

    assert extended.is_set()
    assert value(metrics, "conveyor_lease_extensions_total") >= 1
    assert value(metrics, "conveyor_jobs_total", task="long", outcome="succeeded") == 1


def test_queue_wait_is_measured_from_the_submit_time_and_never_negative() -> None:
    metrics = WorkerMetrics(clock=lambda: 1_000.0, process_metrics=False)

    metrics.worker_event(event(Action.STARTED, submitted_at=970.0))
    metrics.worker_event(event(Action.STARTED, job_id="j2", submitted_at=1_002.0))  # skewed clock

    assert value(metrics, "conveyor_job_queue_wait_seconds_sum", task="t") == 30.0
    assert value(metrics, "conveyor_job_queue_wait_seconds_count", task="t") == 2
    assert value(metrics, "conveyor_job_queue_wait_seconds_bucket", task="t", le="0.1") == 1


@pytest.mark.parametrize("rows", ["many", True, -1, 2.5, None])
def test_rows_that_are_not_a_count_are_ignored(rows: object) -> None:
    metrics = WorkerMetrics(process_metrics=False)
    metrics.worker_event(event(Action.SUCCEEDED, result={"rows": rows}))
    assert value(metrics, "conveyor_rows_processed_total", task="t") == 0
    assert value(metrics, "conveyor_jobs_total", task="t", outcome="succeeded") == 1


def test_in_progress_follows_started_jobs_and_never_goes_negative() -> None:
    metrics = WorkerMetrics(process_metrics=False)

    metrics.worker_event(event(Action.STARTED))
    metrics.worker_event(event(Action.STARTED, job_id="j2"))
    assert value(metrics, "conveyor_jobs_in_progress") == 2
    metrics.worker_event(event(Action.SUCCEEDED, duration_s=1.5))
    metrics.worker_event(event(Action.FAILED, job_id="never-started"))
    assert value(metrics, "conveyor_jobs_in_progress") == 1
    metrics.worker_event(event(Action.RELEASED, job_id="j2"))
    assert value(metrics, "conveyor_jobs_in_progress") == 0


def test_a_message_without_a_task_is_labelled_unknown() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    metrics.worker_event(event(Action.FAILED, job_id=None, task=None))
    assert value(metrics, "conveyor_jobs_total", task="unknown", outcome="failed") == 1
    assert value(metrics, "conveyor_dead_letters_total", task="unknown") == 1


def test_queue_requests_are_read_at_scrape_time() -> None:
    counts = {"receive": 3, "ack": 1}
    metrics = WorkerMetrics(process_metrics=False)
    metrics.registry.register(QueueRequestCollector(lambda: dict(counts)))

    assert value(metrics, "conveyor_queue_requests_total", kind="receive") == 3
    counts["receive"] = 5
    assert value(metrics, "conveyor_queue_requests_total", kind="receive") == 5
    assert value(metrics, "conveyor_queue_requests_total", kind="ack") == 1


def test_two_workers_in_one_process_keep_separate_counts() -> None:
    first, second = WorkerMetrics(process_metrics=False), WorkerMetrics(process_metrics=False)
    first.worker_event(event(Action.SUCCEEDED))
    assert value(first, "conveyor_jobs_total", task="t", outcome="succeeded") == 1
    assert value(second, "conveyor_jobs_total", task="t", outcome="succeeded") == 0


def test_render_is_prometheus_text_with_every_metric_documented() -> None:
    metrics = WorkerMetrics(MemoryQueue(), process_metrics=True)
    metrics.worker_event(event(Action.RECEIVED, attempt=2))
    metrics.worker_event(event(Action.LEASE_EXTENDED))

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}

    for name in (
        "conveyor_jobs",
        "conveyor_job_duration_seconds",
        "conveyor_job_queue_wait_seconds",
        "conveyor_messages_received",
        "conveyor_redeliveries",
        "conveyor_lease_extensions",
        "conveyor_dead_letters",
        "conveyor_rows_processed",
        "conveyor_jobs_in_progress",
        "conveyor_queue_requests",
        "process_resident_memory_bytes",
    ):
        assert name in families, name
        assert families[name].documentation, name
    assert families["conveyor_redeliveries"].samples[0].value == 1
    assert families["conveyor_lease_extensions"].samples[0].value == 1
