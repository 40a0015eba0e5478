"""The worker loop, one round at a time, on the in-memory queue with an injected clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import BadInput, StorageError, TransientTaskError
from conveyor.events import Action, JobEvent
from conveyor.jobs import Job, JobState
from conveyor.ledger import JobFinished, Ledger, LedgerEvent, default_ledger_url, open_ledger
from conveyor.queues.base import Outgoing
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.settings import EXIT_INTERRUPTED, EXIT_OK, Settings
from conveyor.stop import Shutdown
from conveyor.tasks import TaskContext, TaskRegistry
from conveyor.worker import RoundResult, Worker, WorkerHook

VISIBILITY_S = 30


@dataclass
class Recorder:
    """A job observer that keeps every event (the hook metrics will use)."""

    events: list[JobEvent] = field(default_factory=list)

    def job_event(self, event: JobEvent) -> None:
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


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "storage"
    root.mkdir()
    clock = ManualClock()
    queue = MemoryQueue(visibility_timeout_s=VISIBILITY_S, max_receive_count=3, clock=clock)
    registry = TaskRegistry()
    settings = Settings(
        storage=root,
        visibility_timeout_s=VISIBILITY_S,
        max_receive_count=3,
        wait_s=0,
        batch_size=10,
        grace_s=5,
    )
    ledger = open_ledger(default_ledger_url(root))
    env = Env(
        root, clock, queue, registry, Recorder(), FixedBackoff(7), Shutdown(), settings, ledger
    )

    @registry.task("upper")
    def upper(ctx: TaskContext) -> dict[str, object]:
        assert ctx.input_path is not None
        env.calls.append(ctx.job.job_id)
        ctx.write_path.write_text(ctx.input_path.read_text().upper())
        return {"chars": len(ctx.input_path.read_text())}

    yield env
    ledger.close()


def only(result: RoundResult) -> JobEvent:
    assert len(result.events) == 1, result.events
    return result.events[0]


# --- the success path ---------------------------------------------------------------------


def test_success_publishes_records_and_acks(env: Env) -> None:
    job = env.submit(text="abc\n")

    result = env.worker().run_once()

    assert only(result).action is Action.SUCCEEDED
    assert result.acked == 1
    assert (env.root / "outputs/a.txt").read_text() == "ABC\n"
    record = env.ledger().get(job.job_id)
    assert record is not None
    assert record.state is JobState.SUCCEEDED
    assert record.result == {"chars": 4}
    assert record.attempts == 1
    assert env.queue.stats().pending == 0
    assert "extend" not in env.queue.request_counts()  # a fresh lease needs no proof
    assert [e.action for e in env.recorder.events] == [
        Action.RECEIVED,
        Action.STARTED,
        Action.SUCCEEDED,
    ]
    assert not list((env.root / "outputs").glob(".conveyor-tmp-*"))


def test_acks_of_a_round_are_one_batch_call(env: Env) -> None:
    for index in range(4):
        env.submit(name=f"f{index}.txt")

    result = env.worker().run_once()

    assert result.count(Action.SUCCEEDED) == 4
    assert env.queue.request_counts()["ack"] == 1


def test_redelivered_succeeded_job_is_acked_without_running(env: Env) -> None:
    job = env.submit()
    env.worker().run_once()
    assert env.calls == [job.job_id]
    env.queue.send(Outgoing(job.to_json()))  # SQS delivered it twice

    result = env.worker().run_once()

    assert only(result).action is Action.SKIPPED
    assert result.acked == 1
    assert env.calls == [job.job_id]  # not run again
    assert env.queue.stats().pending == 0


def test_redelivered_job_whose_output_vanished_runs_again(env: Env) -> None:
    job = env.submit()
    env.worker().run_once()
    (env.root / "outputs/a.txt").unlink()
    env.queue.send(Outgoing(job.to_json()))

    result = env.worker().run_once()

    assert only(result).action is Action.SUCCEEDED
    assert env.calls == [job.job_id, job.job_id]
    assert (env.root / "outputs/a.txt").exists()


# --- failures -----------------------------------------------------------------------------


def test_transient_error_records_retrying_and_releases_with_backoff(env: Env) -> None:
    @env.registry.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        raise TransientTaskError("the database blinked")

    job = env.submit(task="flaky")

    result = env.worker().run_once()

    event = only(result)
    assert event.action is Action.RETRYING
    assert event.delay_s == 7
    assert env.backoff.attempts == [1]
    record = env.ledger().get(job.job_id)
    assert record is not None
    assert record.state is JobState.RETRYING
    assert record.error == "the database blinked"
    assert env.queue.stats().delayed == 1
    assert not (env.root / "outputs/a.txt").exists()
    env.clock.advance(6.9)
    assert env.queue.receive(1, 0) == []
    env.clock.advance(0.2)
    (again,) = env.queue.receive(1, 0)
    assert again.receive_count == 2


def test_unexpected_exception_is_transient(env: Env) -> None:
    @env.registry.task("crashy")
    def crashy(ctx: TaskContext) -> None:
        raise ZeroDivisionError("division by zero")

    env.submit(task="crashy")

    event = only(env.worker().run_once())

    assert event.action is Action.RETRYING
    assert event.reason == "ZeroDivisionError: division by zero"


def test_task_calling_sys_exit_does_not_end_the_worker(env: Env) -> None:
    @env.registry.task("quitter")
    def quitter(ctx: TaskContext) -> None:
        raise SystemExit(3)

    env.submit(task="quitter")
    env.submit(name="b.txt")

    result = env.worker().run_once()

    assert [e.action for e in result.events] == [Action.RETRYING, Action.SUCCEEDED]
    assert result.events[0].reason == "task raised SystemExit: 3"


def test_permanent_error_fails_and_dead_letters_at_once(env: Env) -> None:
    @env.registry.task("picky")
    def picky(ctx: TaskContext) -> None:
        raise BadInput("line 3: 'x' is not a number")

    job = env.submit(task="picky")

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert env.backoff.attempts == []  # no retry burnt
    record = env.ledger().get(job.job_id)
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.error == "line 3: 'x' is not a number"
    (dead,) = env.queue.dead_letters()
    assert dead.receive_count == 1
    assert dead.reason == "line 3: 'x' is not a number"
    assert env.queue.stats().pending == 0


def test_transient_error_on_the_last_attempt_dead_letters_with_the_reason(env: Env) -> None:
    @env.registry.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        raise TransientTaskError("still down")

    job = env.submit(task="flaky")
    worker = env.worker()
    actions = []
    for _ in range(3):  # max_receive_count = 3
        actions.append(only(worker.run_once()).action)
        env.clock.advance(10)

    assert actions == [Action.RETRYING, Action.RETRYING, Action.FAILED]
    (dead,) = env.queue.dead_letters()
    assert dead.reason == "gave up after 3 attempts: still down"
    assert env.state(job) is JobState.FAILED


def test_task_returning_a_non_mapping_fails_for_good(env: Env) -> None:
    @env.registry.task("odd")
    def odd(ctx: TaskContext) -> Any:
        return [1, 2]

    env.submit(task="odd")

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert event.reason is not None
    assert "returned list" in event.reason
    assert not (env.root / "outputs/a.txt").exists()


# --- cancellation -----------------------------------------------------------------------------


class CountingReads:
    """Wraps a ledger's ``get_many`` to count the worker's reads (one call is one query)."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        real = ledger.get_many

        def counted(job_ids: Any) -> Any:
            ids = list(job_ids)
            self.calls.append(ids)
            return real(ids)

        monkeypatch.setattr(ledger, "get_many", counted)


def test_a_cancelled_job_is_acked_without_running(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a round of three jobs, the middle one cancelled while queued
    jobs = [env.submit(name=f"f{i}.txt") for i in range(3)]
    env.ledger().record_queued(jobs)
    env.ledger().cancel(jobs[1].job_id, reason="not needed")
    reads = CountingReads(env.ledger(), monkeypatch)
    # When a worker runs the round
    result = env.worker().run_once()
    # Then the cancelled job never ran, its message is gone, and the ledger keeps its reason
    assert [event.action for event in result.events] == [
        Action.SUCCEEDED,
        Action.CANCELLED,
        Action.SUCCEEDED,
    ]
    assert result.events[1].reason == "not run: not needed"
    assert env.calls == [jobs[0].job_id, jobs[2].job_id]
    assert not (env.root / "outputs/f1.txt").exists()
    assert result.acked == 3
    assert env.queue.stats().pending == 0
    record = env.ledger().get(jobs[1].job_id)
    assert record is not None
    assert (record.state, record.error) == (JobState.CANCELLED, "not needed")
    # And the ledger was read once for the round, then once per job run, before publishing
    assert reads.calls[0] == [job.job_id for job in jobs]
    assert reads.calls[1:] == [[jobs[0].job_id], [jobs[2].job_id]]


def test_a_job_cancelled_while_it_runs_is_not_published(env: Env) -> None:
    # Given a job whose task is cancelled while it runs (by a user, through the ledger)
    @env.registry.task("cancelled-midway")
    def cancelled_midway(ctx: TaskContext) -> dict[str, object]:
        assert ctx.write_path is not None
        ctx.write_path.write_text("partial")
        env.ledger().cancel(ctx.job.job_id, reason="user changed their mind")
        return {"rows": 1}

    job = Job(task="cancelled-midway", output="outputs/result.txt")
    env.queue.send(Outgoing(job.to_json()))
    # When the worker runs it
    result = env.worker().run_once()
    # Then nothing is published, its temporary output is gone, the message is acked, and
    # the ledger says cancelled (no success recorded)
    event = only(result)
    assert event.action is Action.CANCELLED
    assert event.reason == "not published: user changed their mind"
    assert not (env.root / "outputs/result.txt").exists()
    assert list((env.root / "outputs").iterdir()) == []
    assert result.acked == 1
    assert env.queue.stats().pending == 0
    record = env.ledger().get(job.job_id)
    assert record is not None
    assert (record.state, record.result) == (JobState.CANCELLED, None)


def test_a_job_without_output_cancelled_while_it_runs_does_not_succeed(env: Env) -> None:
    @env.registry.task("effect")
    def effect(ctx: TaskContext) -> None:
        env.ledger().cancel(ctx.job.job_id)

    job = Job(task="effect")
    env.queue.send(Outgoing(job.to_json()))

    result = env.worker().run_once()

    assert only(result).action is Action.CANCELLED
    assert env.state(job) is JobState.CANCELLED
    assert env.queue.stats().pending == 0


def test_cancelled_jobs_are_counted_in_the_metrics(env: Env) -> None:
    from conveyor.metrics import WorkerMetrics

    metrics = WorkerMetrics(process_metrics=False)
    jobs = [env.submit(name=f"f{i}.txt") for i in range(2)]
    env.ledger().record_queued(jobs)
    env.ledger().cancel(jobs[0].job_id)
    worker = env.worker()
    worker.observers.append(metrics)

    worker.run_once()

    sample = metrics.registry.get_sample_value(
        "conveyor_jobs_total", {"task": "upper", "outcome": "cancelled"}
    )
    assert sample == 1.0
    assert metrics.registry.get_sample_value("conveyor_jobs_in_progress") == 0.0


def test_a_cancel_after_publishing_loses_to_the_success(env: Env) -> None:
    job = env.submit()
    env.worker().run_once()

    with pytest.raises(JobFinished, match="already succeeded"):
        env.ledger().cancel(job.job_id)
    assert env.state(job) is JobState.SUCCEEDED


def test_a_ledger_that_cannot_be_read_on_receive_does_not_stop_the_round(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a ledger whose reads fail once (the round's), then work
    job = env.submit()
    real = env.ledger().get_many
    failures = iter([StorageError("database is locked")])

    def flaky(job_ids: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(job_ids)

    monkeypatch.setattr(env.ledger(), "get_many", flaky)
    # When the worker runs the round, the job runs and succeeds all the same
    result = env.worker().run_once()
    assert only(result).action is Action.SUCCEEDED
    assert env.state(job) is JobState.SUCCEEDED


# --- malformed messages ---------------------------------------------------------------------


def test_malformed_message_is_dead_lettered_and_the_worker_goes_on(env: Env) -> None:
    env.queue.send(Outgoing("this is not JSON"))
    job = env.submit()

    result = env.worker().run_once()

    assert [e.action for e in result.events] == [Action.FAILED, Action.SUCCEEDED]
    (dead,) = env.queue.dead_letters()
    assert dead.body == "this is not JSON"
    assert dead.reason is not None
    assert "not valid JSON" in dead.reason
    assert env.state(job) is JobState.SUCCEEDED


def test_malformed_message_with_a_readable_job_id_is_recorded_failed(env: Env) -> None:
    env.queue.send(Outgoing(json.dumps({"v": 1, "job_id": "broken-1", "task": 5})))

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert event.job_id == "broken-1"
    record = env.ledger().get("broken-1")
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.error == event.reason


def test_unknown_task_is_dead_lettered(env: Env) -> None:
    job = env.submit(task="nobody-registered-this")

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert event.reason is not None
    assert "unknown task 'nobody-registered-this'" in event.reason
    assert env.state(job) is JobState.FAILED
    assert len(env.queue.dead_letters()) == 1


@pytest.mark.parametrize("field_name", ["input", "output"])
def test_path_traversal_is_rejected_before_anything_runs(env: Env, field_name: str) -> None:
    job = env.submit()
    data = Job.from_json(job.to_json()).to_dict()
    data[field_name] = "../../etc/passwd"
    env.queue.purge()
    env.queue.send(Outgoing(json.dumps(data)))

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert event.reason is not None
    assert "'..' is not allowed" in event.reason
    assert env.calls == []
    assert env.state(job) is JobState.FAILED


def test_missing_input_fails_for_good(env: Env) -> None:
    job = env.submit()
    (env.root / "inputs/a.txt").unlink()

    event = only(env.worker().run_once())

    assert event.action is Action.FAILED
    assert event.reason is not None
    assert "input not found" in event.reason
    assert env.state(job) is JobState.FAILED


# --- leases ------------------------------------------------------------------------------------


def test_lease_lost_during_the_task_means_no_publish_and_no_ack(env: Env) -> None:
    stolen: list[str] = []

    @env.registry.task("slow")
    def slow(ctx: TaskContext) -> None:
        ctx.write_path.write_text("partial work")
        # The lease expires and another worker receives the message meanwhile.
        env.clock.advance(VISIBILITY_S + 1)
        stolen.extend(r.lease for r in env.queue.receive(1, 0))

    job = env.submit(task="slow")

    result = env.worker().run_once()

    assert only(result).action is Action.LEASE_LOST
    assert result.acked == 0
    assert not (env.root / "outputs/a.txt").exists()
    assert not list((env.root / "outputs").glob(".conveyor-tmp-*"))
    assert env.state(job) is JobState.RUNNING
    assert len(stolen) == 1
    assert env.queue.ack(stolen[0])  # the other worker still holds it


def test_heartbeat_keeps_the_lease_alive_through_a_long_task(env: Env) -> None:
    def extends() -> int:
        return env.queue.request_counts().get("extend", 0)

    @env.registry.task("long")
    def long_task(ctx: TaskContext) -> None:
        for beat in range(1, 4):  # 3 x 12 s = 36 s, longer than the 30 s timeout
            env.clock.advance(12)
            wait_until(lambda beat=beat: extends() >= beat)
        assert env.queue.receive(1, 0) == []  # nobody else can take it
        ctx.check_lease()
        ctx.write_path.write_text("done")

    job = env.submit(task="long")

    event = only(env.worker(heartbeat_every_s=10.0).run_once())

    assert event.action is Action.SUCCEEDED
    assert env.state(job) is JobState.SUCCEEDED
    assert (env.root / "outputs/a.txt").read_text() == "done"


def test_failed_heartbeat_marks_the_lease_lost_for_the_task(env: Env) -> None:
    @env.registry.task("long")
    def long_task(ctx: TaskContext) -> None:
        env.clock.advance(VISIBILITY_S + 1)  # expired; a heartbeat would now fail...
        env.queue.receive(1, 0)  # ...because another worker took the message
        wait_until(lambda: env.queue.request_counts().get("extend", 0) >= 1)
        ctx.check_lease()  # raises LeaseLost
        ctx.write_path.write_text("should never be published")

    env.submit(task="long")

    event = only(env.worker(heartbeat_every_s=10.0).run_once())

    assert event.action is Action.LEASE_LOST
    assert not (env.root / "outputs/a.txt").exists()


# --- shutdown -----------------------------------------------------------------------------------


def test_stop_request_lets_the_running_job_finish_and_releases_the_rest(env: Env) -> None:
    @env.registry.task("stopper")
    def stopper(ctx: TaskContext) -> None:
        env.shutdown.request()  # SIGTERM arrives while the job runs
        ctx.write_path.write_text("finished")

    first = env.submit(task="stopper", name="first.txt")
    second = env.submit(name="second.txt")

    result = env.worker().run_once()

    assert result.interrupted
    assert [e.action for e in result.events] == [Action.SUCCEEDED, Action.RELEASED]
    assert result.acked == 1
    assert env.state(first) is JobState.SUCCEEDED
    assert env.state(second) is None
    assert env.queue.stats().visible == 1  # given back at once, for another worker


def test_job_still_running_at_the_grace_deadline_is_released(env: Env) -> None:
    release_task = threading.Event()

    @env.registry.task("stuck")
    def stuck(ctx: TaskContext) -> None:
        env.shutdown.request()
        release_task.wait(30)
        ctx.write_path.write_text("too late")

    job = env.submit(task="stuck")
    worker = env.worker(grace_s=0.0)
    try:
        code = worker.run()
    finally:
        release_task.set()

    assert code == EXIT_INTERRUPTED
    assert [e.action for e in env.recorder.events] == [
        Action.RECEIVED,
        Action.STARTED,
        Action.RELEASED,
    ]
    assert env.queue.stats().visible == 1
    assert env.state(job) is JobState.RETRYING
    assert not (env.root / "outputs/a.txt").exists()


def test_stop_requested_before_a_round_receives_nothing(env: Env) -> None:
    env.submit()
    env.shutdown.request()

    assert env.worker().run() == EXIT_INTERRUPTED
    assert env.queue.stats().visible == 1
    assert env.calls == []


# --- the loop under a stop policy --------------------------------------------------------------


def test_run_until_empty_drains_then_exits_zero(env: Env) -> None:
    jobs = [env.submit(name=f"f{index}.txt") for index in range(3)]

    code = env.worker(until_empty=True, empty_polls=2, batch_size=2).run()

    assert code == EXIT_OK
    assert all(env.state(job) is JobState.SUCCEEDED for job in jobs)
    assert env.queue.stats().pending == 0


def test_run_max_jobs_receives_no_more_than_allowed(env: Env) -> None:
    for index in range(5):
        env.submit(name=f"f{index}.txt")

    code = env.worker(max_jobs=2).run()

    assert code == EXIT_OK
    assert len(env.calls) == 2
    assert env.queue.stats().visible == 3


def test_run_reports_queue_requests_to_the_ledger(env: Env) -> None:
    env.submit()

    env.worker(max_jobs=1).run()

    requests = env.ledger().summary().queue_requests
    assert requests["receive"] >= 1
    assert requests["ack"] == 1


# --- claim-checked params -------------------------------------------------------------------


def submit_claimed(env: Env, name: str, params: dict[str, Any], task: str = "upper") -> Job:
    """Submit a job whose params are claim-checked (too big for a message)."""
    from conveyor.jobs import encode_for_queue
    from conveyor.storage import Storage

    job = Job(task=task, input=f"inputs/{name}", output=f"outputs/{name}", params=params)
    (env.root / "inputs").mkdir(exist_ok=True)
    (env.root / "inputs" / name).write_text("hello\n")
    body = encode_for_queue(job, Storage(env.root), max_bytes=1024)
    assert '"params_ref"' in body
    env.queue.send(Outgoing(body))
    return job


def claims(env: Env) -> list[str]:
    from conveyor.jobs import CLAIMS_DIR

    folder = env.root / CLAIMS_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


BIG = {"blob": "x" * 5000}


def test_a_job_that_succeeded_releases_its_claim_but_not_one_another_job_shares(
    env: Env,
) -> None:
    first = submit_claimed(env, "a.txt", BIG)
    second = submit_claimed(env, "b.txt", BIG)  # the same params: one shared file
    assert len(claims(env)) == 3
    worker = env.worker(batch_size=1)

    assert only(worker.run_once()).action is Action.SUCCEEDED
    assert claims(env) == sorted([f"{second.job_id}.job.json", f"{sha_of(BIG)}.json"])
    assert only(worker.run_once()).action is Action.SUCCEEDED

    assert claims(env) == []
    assert env.state(first) is env.state(second) is JobState.SUCCEEDED


def sha_of(params: dict[str, Any]) -> str:
    import hashlib

    from conveyor.jobs import canonical_json

    return hashlib.sha256(canonical_json(params).encode()).hexdigest()


def test_a_job_that_will_run_again_keeps_its_claim(env: Env) -> None:
    @env.registry.task("flaky")
    def flaky(ctx: TaskContext) -> None:
        raise TransientTaskError("not yet")

    @env.registry.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise BadInput("never")

    retried = submit_claimed(env, "a.txt", BIG, task="flaky")
    failed = submit_claimed(env, "b.txt", {"other": "y" * 5000}, task="bad")

    result = env.worker().run_once()

    assert sorted(e.action for e in result.events) == [Action.FAILED, Action.RETRYING]
    # Retried: it needs its params again. Failed: a redrive from the dead-letter queue may.
    assert {f"{retried.job_id}.job.json", f"{failed.job_id}.job.json"} <= set(claims(env))


def test_a_late_duplicate_of_a_job_whose_claim_is_gone_is_acked_not_dead_lettered(
    env: Env,
) -> None:
    job = submit_claimed(env, "a.txt", BIG)
    (body,) = [m.body for m in env.queue.receive(1, 0)]
    env.clock.advance(VISIBILITY_S + 1)
    assert only(env.worker().run_once()).action is Action.SUCCEEDED
    assert claims(env) == []

    env.queue.send(Outgoing(body))  # the queue delivers the message once more
    event = only(env.worker().run_once())

    assert event.action is Action.SKIPPED
    assert env.queue.dead_letters() == []
    assert env.queue.stats().pending == 0
    assert env.state(job) is JobState.SUCCEEDED


# --- health ---------------------------------------------------------------------------------------


def test_health_file_is_touched_every_round(env: Env, tmp_path: Path) -> None:
    health = tmp_path / "alive"

    env.worker(health_file=health).run_once()

    assert health.exists()


# --- crashes, dead letters the queue made itself, and crash points (the fault suite) ---------


class _Died(BaseException):
    """Stands in for os._exit: not an Exception, so no per-job boundary catches it."""


def _die(code: int) -> Any:
    raise _Died(code)


def _crash_at(
    point: str, snapshot: Callable[[], None] | None = None, job_id: str | None = None
) -> list[WorkerHook]:
    """The hooks of a worker that crashes (raises ``_Died``) at ``point``."""
    from conveyor.faults import FaultPoint, FaultPoints
    from conveyor.worker.hooks import CrashPoints

    def die(code: int) -> Any:
        if snapshot is not None:
            snapshot()
        _die(code)

    return [CrashPoints(FaultPoints(FaultPoint(point), job_id, exit=die))]


def test_a_redelivery_after_a_crash_records_why_the_previous_attempt_ended(env: Env) -> None:
    from conveyor.ledger import LedgerEvent
    from conveyor.reconcile import last_error

    job = env.submit()
    # A worker took the job, recorded it running, and died: nothing else happened.
    (first,) = env.queue.receive(1, 0)
    env.ledger().record_many(
        [LedgerEvent.for_job(job, JobState.RUNNING, attempt=first.receive_count, worker="dead-w")]
    )
    env.clock.advance(VISIBILITY_S + 1)

    event = only(env.worker().run_once())

    assert event.action is Action.SUCCEEDED
    assert env.state(job) is JobState.SUCCEEDED
    assert last_error(env.ledger(), job.job_id) == (
        "attempt 1 did not finish: its worker (dead-w) died or its lease expired"
    )


def test_a_normal_retry_is_not_mistaken_for_a_crash(env: Env) -> None:
    from conveyor.reconcile import last_error

    @env.registry.task("flaky-once")
    def flaky_once(ctx: TaskContext) -> None:
        if len(env.calls) == 0:
            env.calls.append("failed")
            raise TransientTaskError("blip")
        ctx.write_path.write_text("ok")

    job = env.submit(task="flaky-once")
    worker = env.worker()
    assert only(worker.run_once()).action is Action.RETRYING
    env.clock.advance(10)

    assert only(worker.run_once()).action is Action.SUCCEEDED
    assert last_error(env.ledger(), job.job_id) == "blip"


def test_a_job_whose_worker_dies_on_every_attempt_ends_failed_with_the_reason(env: Env) -> None:
    job = env.submit()
    dying = env.worker(hooks=_crash_at("mid_write"))
    for _ in range(3):  # max_receive_count: each attempt dies after recording `running`
        with pytest.raises(_Died):
            dying.run_once()
        env.clock.advance(VISIBILITY_S + 1)
    assert env.state(job) is JobState.RUNNING

    # The next receive finds the message past its receive count: the queue dead-letters
    # it itself, and no worker ever ran its last attempt to the end.
    code = env.worker(until_empty=True, empty_polls=1).run()

    assert code == EXIT_OK
    (dead,) = env.queue.dead_letters()
    assert dead.receive_count == 3
    record = env.ledger().get(job.job_id)
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.error == (
        "dead-lettered after 3 receives; last error: attempt 2 did not finish: its worker "
        f"({dying.name}) died or its lease expired (the worker died or its lease expired on "
        "every attempt)"
    )
    assert not (env.root / "outputs/a.txt").exists()


def test_until_empty_reuses_the_counts_it_fetched_for_the_dead_letter_check(env: Env) -> None:
    calls: list[str] = []
    original = env.queue.stats

    def counting_stats() -> Any:
        calls.append("stats")
        return original()

    env.queue.stats = counting_stats  # type: ignore[method-assign]
    env.submit()

    assert env.worker(until_empty=True, empty_polls=1).run() == EXIT_OK
    # The stop policy's only: a local queue's dead-letter checks read its unreconciled
    # letters (an index probe), not its counts.
    assert calls == ["stats"]


# The state a crash at each point leaves behind: (ledger state, temp file, output, acked).
CRASH_POINTS = {
    "after_receive": (None, False, False, False),
    "mid_write": (JobState.RUNNING, True, False, False),
    "after_fsync": (JobState.RUNNING, True, False, False),
    "after_rename": (JobState.RUNNING, False, True, False),
    "after_ledger": (JobState.SUCCEEDED, False, True, False),
    "before_ack": (JobState.SUCCEEDED, False, True, False),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_each_crash_point_fires_at_its_step(env: Env, point: str) -> None:
    job = env.submit(text="abcdefgh\n")
    seen: list[tuple[Any, ...]] = []

    def snapshot() -> None:
        temps = list((env.root / "outputs").glob(".conveyor-tmp-*"))
        seen.append(
            (
                env.state(job),
                bool(temps),
                (env.root / "outputs/a.txt").exists(),
                env.queue.stats().pending == 0,
                temps[0].read_bytes() if temps else None,
            )
        )

    worker = env.worker(hooks=_crash_at(point, snapshot))

    with pytest.raises(_Died):
        worker.run_once()

    ((state, temp, output, acked, written),) = seen
    assert (state, temp, output, acked) == CRASH_POINTS[point]
    if point == "mid_write":
        assert written == b"ABCD"  # half of what the task wrote: a torn, unsynced write
    if point == "after_fsync":
        assert written == b"ABCDEFGH\n"


def test_a_crash_point_for_another_job_is_ignored(env: Env) -> None:
    job = env.submit()
    worker = env.worker(hooks=_crash_at("after_receive", job_id="someone-else"))

    assert only(worker.run_once()).action is Action.SUCCEEDED
    assert env.state(job) is JobState.SUCCEEDED


def test_crash_points_come_from_the_environment_read_once_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.errors import ConfigError
    from conveyor.faults import CRASH_ENV, FaultPoint, FaultPoints
    from conveyor.worker.hooks import CrashPoints

    assert CrashPoints.from_env({}) == []  # unset: no crash point, nothing to check per step
    (hook,) = CrashPoints.from_env({CRASH_ENV: "after_fsync:job-7"})
    assert isinstance(hook, CrashPoints)
    assert hook.faults == FaultPoints(FaultPoint.AFTER_FSYNC, "job-7")
    with pytest.raises(ConfigError, match="unknown crash point 'after_lunch'"):
        CrashPoints.from_env({CRASH_ENV: "after_lunch"})
    # run_worker reads it at start-up, before any job: a bad value ends it at once (78)
    from click.testing import CliRunner

    from conveyor.cli import cli

    monkeypatch.setenv(CRASH_ENV, "after_lunch")
    monkeypatch.setattr("conveyor.cli.worker.configure_logging", lambda *a: None)
    done = CliRunner().invoke(cli, ["worker", f"--storage={tmp_path / 's'}", "--max-jobs=1"])
    assert done.exit_code == 78, done.output
    assert "unknown crash point 'after_lunch'" in done.output
    assert not (tmp_path / "s").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("visibility_timeout_s", "asked_s", "expected_s"),
    [(60, None, 20.0), (2, None, 1.0), (1, None, 0.5), (10, 30.0, 5.0), (60, 5.0, 5.0)],
)
def test_the_heartbeat_comes_well_before_the_lease_expires(
    visibility_timeout_s: int, asked_s: float | None, expected_s: float
) -> None:
    settings = Settings(visibility_timeout_s=visibility_timeout_s, heartbeat_every_s=asked_s)
    assert settings.heartbeat_s == expected_s


def test_a_worker_that_ran_long_jobs_receives_one_message_at_a_time(env: Env) -> None:
    # Given three queued jobs, and a worker whose last job took half the visibility timeout
    for name in ("a.txt", "b.txt", "c.txt"):
        env.submit(name=name)
    worker = env.worker()
    worker.pace.learn("upper", VISIBILITY_S / 2)
    # When it runs a round, it takes one message only: the others stay for other workers
    assert worker.run_once().received == 1
    assert env.queue.stats().visible == 2
    # And a worker whose jobs are quick takes them in a batch
    quick = env.worker()
    quick.pace.learn("upper", 0.001)
    assert quick.run_once().received == 2


def test_a_fresh_worker_takes_one_message_then_adapts(env: Env) -> None:
    # Given a slow task and a quick one, and a backlog of each
    @env.registry.task("slow")
    def slow(ctx: TaskContext) -> None:
        env.clock.advance(VISIBILITY_S / 2)

    @env.registry.task("quick")
    def quick(ctx: TaskContext) -> None:
        env.clock.advance(0.001)

    for index in range(12):
        env.queue.send(Outgoing(Job(task="quick", job_id=f"q{index}").to_json()))
    worker = env.worker(fresh=True)
    # When a fresh worker runs its first round, it asks for one message only: it does not
    # know yet how long its jobs take
    assert worker.run_once().received == 1
    assert env.queue.stats().visible == 11
    # Then, its jobs proving quick, a full batch
    assert worker.run_once().received == 10
    assert worker.run_once().received == 1
    # And after a long job, one message again
    env.queue.send(Outgoing(Job(task="slow", job_id="s0").to_json()))
    assert worker.run_once().received == 1
    for index in range(1, 4):
        env.queue.send(Outgoing(Job(task="slow", job_id=f"s{index}").to_json()))
    assert worker.run_once().received == 1
    assert env.queue.stats().visible == 2


def _group_of_two(env: Env) -> tuple[list[Job], str]:
    """Two queued jobs in a group whose completion (task ``finish``) appends to calls."""

    @env.registry.task("finish")
    def finish(ctx: TaskContext) -> None:
        env.calls.append(ctx.job.job_id)

    jobs = [env.submit(name=f"g{index}.txt") for index in range(2)]
    ledger = env.ledger()
    ledger.create_group("g1", total=2, completion={"job_id": "g1-done", "task": "finish"})
    ledger.record_queued(jobs, group="g1")
    return jobs, "g1-done"


def test_the_worker_sends_the_completion_its_ledger_write_made_due(env: Env) -> None:
    # Given a group of two queued jobs with a completion
    jobs, completion = _group_of_two(env)
    # When a worker drains the queue
    code = env.worker(until_empty=True, empty_polls=2, batch_size=1).run()
    # Then the jobs ran, then the completion, once; the group succeeded
    assert code == EXIT_OK
    assert env.calls == [jobs[0].job_id, jobs[1].job_id, completion]
    group = env.ledger().group("g1")
    assert group is not None and group.state.value == "succeeded"
    assert env.ledger().due_completions() == []


def test_an_idle_worker_sends_a_due_completion_nobody_sent(env: Env) -> None:
    # Given a group whose jobs all succeeded, recorded by a writer that died before sending
    # the completion the ledger made due
    jobs, completion = _group_of_two(env)
    env.queue.purge()
    due = env.ledger().record_many(
        [LedgerEvent.for_job(job, JobState.SUCCEEDED, attempt=1) for job in jobs]
    )
    assert [one.job_id for one in due] == [completion]
    # When a worker finds the queue empty
    code = env.worker(until_empty=True, empty_polls=2).run()
    # Then it sent the completion and ran it, once
    assert code == EXIT_OK
    assert env.calls == [completion]
    assert env.ledger().due_completions() == []


def test_a_completion_sent_twice_runs_once(env: Env) -> None:
    # Given a group whose completion ran
    _, completion = _group_of_two(env)
    env.worker(until_empty=True, empty_polls=2).run()
    assert env.calls.count(completion) == 1
    # When a second copy of the completion's message arrives (a sender died before
    # marking it sent) and a worker receives it
    (due,) = [c for c in [env.ledger().get(completion)] if c is not None]
    job = Job(job_id=completion, task="finish", seed=due.seed or 0)
    env.queue.send(Outgoing(job.to_json()))
    env.worker(until_empty=True, empty_polls=2).run()
    # Then it is skipped: the completion ran once, and succeeded once in its history
    assert env.calls.count(completion) == 1
    states = [t.state for t in env.ledger().history(completion)]
    assert states.count(JobState.SUCCEEDED) == 1
    assert env.queue.stats().pending == 0
