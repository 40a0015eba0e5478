"""The worker's fast path: jobs without output, one task thread, few ledger calls per job."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.events import Action
from conveyor.jobs import Job, JobState, job_id_of
from conveyor.ledger import Ledger, LedgerEvent, default_ledger_url, open_ledger
from conveyor.ledger.sqlite import SQLiteLedger
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings
from conveyor.stop import Shutdown
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker

VISIBILITY_S = 30


class CountingLedger(SQLiteLedger):
    """A real ledger that counts its calls: job reads (``get``, ``get_many``) and write
    batches."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "_conveyor" / "ledger.db", writer="worker")
        self.gets: list[str] = []
        self.batches: list[list[LedgerEvent]] = []

    def __enter__(self) -> CountingLedger:
        return self

    def get(self, job_id: str) -> Any:
        self.gets.append(job_id)
        return super().get(job_id)

    def get_many(self, job_ids: Any) -> Any:
        job_ids = list(job_ids)
        self.gets.extend(job_ids)
        return super().get_many(job_ids)

    def record_many(self, events: Any, **kwargs: Any) -> Any:
        events = list(events)
        self.batches.append(events)
        return super().record_many(events, **kwargs)


@dataclass
class Env:
    root: Path
    clock: ManualClock
    queue: MemoryQueue
    ledger: CountingLedger
    registry: TaskRegistry
    seen: list[tuple[str, int, Path | None, Path | None, JobState | None]] = field(
        default_factory=list
    )

    def worker(self) -> Worker:
        settings = Settings(
            storage=self.root,
            visibility_timeout_s=VISIBILITY_S,
            max_receive_count=3,
            wait_s=0,
            batch_size=10,
            grace_s=5,
        )
        worker = Worker(
            self.queue,
            settings,
            ledger=self.ledger,
            registry=self.registry,
            observers=[],
            clock=self.clock,
            shutdown=Shutdown(),
        )
        # As if its recent jobs were quick: its first round takes a full batch, as a round
        # of these tests needs (a fresh worker's takes one message), no task known yet.
        worker.pace.warm(0.0)
        return worker

    def submit(self, count: int, output: bool = False) -> list[Job]:
        jobs = []
        for n in range(count):
            job = Job(task="probe", output=f"outputs/{n}.txt" if output else None)
            self.queue.send(Outgoing(job.to_json()))
            jobs.append(job)
        return jobs


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = ManualClock()
    queue = MemoryQueue(visibility_timeout_s=VISIBILITY_S, max_receive_count=3, clock=clock)
    registry = TaskRegistry()
    with CountingLedger(tmp_path) as ledger, open_ledger(default_ledger_url(tmp_path)) as reader:
        env = Env(tmp_path, clock, queue, ledger, registry)

        @registry.task("probe")
        def probe(ctx: TaskContext) -> dict[str, object]:
            # What the task sees, and what a reader of the ledger sees while it runs
            record = reader.get(ctx.job.job_id)
            env.seen.append(
                (
                    ctx.job.job_id,
                    threading.get_ident(),
                    ctx.output_path,
                    ctx.write_path,
                    None if record is None else record.state,
                )
            )
            if ctx.write_path is not None:
                ctx.write_path.write_text(ctx.job.job_id)
            return {"ok": True}

        yield env


def test_a_job_without_output_publishes_nothing_and_succeeds(env: Env) -> None:
    # Given a job whose envelope has no output
    [job] = env.submit(1)
    # When a worker runs it
    result = env.worker().run_once()
    # Then the task got no output paths, nothing was written, and the job succeeded
    assert [event.action for event in result.events] == [Action.SUCCEEDED]
    assert result.acked == 1
    [(job_id, _, output_path, write_path, _)] = env.seen
    assert (job_id, output_path, write_path) == (job.job_id, None, None)
    assert sorted(path.name for path in env.root.iterdir()) == ["_conveyor"]
    with open_ledger(default_ledger_url(env.root)) as fresh:
        record = fresh.get(job.job_id)
    assert record is not None
    assert (record.state, record.output, record.result) == (JobState.SUCCEEDED, None, {"ok": True})


def test_tasks_share_one_long_lived_thread(env: Env) -> None:
    env.submit(10)
    env.submit(5, output=True)
    worker = env.worker()
    while env.queue.stats().pending:
        worker.run_once()
    threads = {thread for _, thread, *_ in env.seen}
    assert len(env.seen) == 15
    assert len(threads) == 1
    assert threads != {threading.get_ident()}  # not the main thread: it heartbeats


def writes(ledger: CountingLedger) -> list[list[tuple[str, JobState]]]:
    """The ledger's write batches so far, as (job id, state) pairs; then forgets them."""
    batches = [[(event.job_id, event.state) for event in batch] for batch in ledger.batches]
    ledger.batches.clear()
    return batches


def test_quick_jobs_are_recorded_running_together_before_they_start(env: Env) -> None:
    # Given two rounds of ten jobs of a quick task
    first = [job.job_id for job in env.submit(10)]
    second = [job.job_id for job in env.submit(10)]
    worker = env.worker()
    # When the first round runs
    result = worker.run_once()
    # Then every task already showed as running to another reader of the ledger
    assert [state for *_, state in env.seen] == [JobState.RUNNING] * 10
    # And the task's first job, not seen before, was recorded alone; once it proved quick,
    # the rest of the round went in one write with its success, their successes in another
    running, succeeded = JobState.RUNNING, JobState.SUCCEEDED
    assert writes(env.ledger) == [
        [(first[0], running)],
        [(first[0], succeeded)] + [(job_id, running) for job_id in first[1:]],
        [(job_id, succeeded) for job_id in first[1:]],
    ]
    assert result.acked == 10
    # And the next round takes two writes in all
    worker.run_once()
    assert [state for *_, state in env.seen] == [JobState.RUNNING] * 20
    assert writes(env.ledger) == [
        [(job_id, running) for job_id in second],
        [(job_id, succeeded) for job_id in second],
    ]
    with open_ledger(default_ledger_url(env.root)) as fresh:
        records = fresh.get_many(first + second)
    for job_id in first + second:
        record = records[job_id]
        assert record.state is JobState.SUCCEEDED
        assert record.started_at is not None and record.finished_at is not None
        assert record.finished_at >= record.started_at


def test_slow_jobs_are_recorded_running_one_at_a_time(env: Env) -> None:
    # Given a task that takes 0.2 s (on the worker's clock), and a round of four jobs
    @env.registry.task("slow")
    def slow(ctx: TaskContext) -> None:
        env.clock.advance(0.2)

    jobs = [Job(task="slow") for _ in range(4)]
    for job in jobs:
        env.queue.send(Outgoing(job.to_json()))
    # When they run
    env.worker().run_once()
    # Then each job's `running` was recorded just before it started (its started_at is
    # honest), with the previous job's success
    ids = [job.job_id for job in jobs]
    assert writes(env.ledger) == [
        [(ids[0], JobState.RUNNING)],
        *(
            [(before, JobState.SUCCEEDED), (after, JobState.RUNNING)]
            for before, after in itertools.pairwise(ids)
        ),
        [(ids[-1], JobState.SUCCEEDED)],
    ]


def test_a_slow_job_ends_the_jobs_recorded_ahead_of_their_turn(env: Env) -> None:
    # Given a worker that has run a quick task and a slow one, then a round of quick, quick,
    # slow, quick jobs
    @env.registry.task("slow")
    def slow(ctx: TaskContext) -> None:
        env.clock.advance(0.2)

    worker = env.worker()
    env.submit(1)
    env.queue.send(Outgoing(Job(task="slow").to_json()))
    worker.run_once()
    writes(env.ledger)
    jobs = [Job(task="probe"), Job(task="probe"), Job(task="slow"), Job(task="probe")]
    for job in jobs:
        env.queue.send(Outgoing(job.to_json()))
    # When the round runs
    worker.run_once()
    # Then the slow job was recorded running with the quick ones before it (they end
    # quickly: its started_at is near enough), but the job after it only when its turn came
    ids = [job.job_id for job in jobs]
    running, succeeded = JobState.RUNNING, JobState.SUCCEEDED
    assert writes(env.ledger) == [
        [(ids[0], running), (ids[1], running), (ids[2], running)],
        [(ids[0], succeeded), (ids[1], succeeded), (ids[2], succeeded), (ids[3], running)],
        [(ids[3], succeeded)],
    ]


def test_jobs_recorded_running_that_never_start_are_recorded_retrying(env: Env) -> None:
    # Given a worker that knows the task is quick, and a round of three jobs whose first
    # one gets a stop request while it runs
    worker = env.worker()
    env.submit(1)
    worker.run_once()

    @env.registry.task("stopper")
    def stopper(ctx: TaskContext) -> None:
        worker.shutdown.request()

    worker.pace.learn("stopper", 0.0)
    first = Job(task="stopper")
    env.queue.send(Outgoing(first.to_json()))
    rest = env.submit(2)
    # When the round runs
    result = worker.run_once()
    # Then the two jobs recorded running with the first never ran, were given back, and the
    # ledger says so (not running, which their next delivery would take for a crash)
    assert result.interrupted
    assert [event.action for event in result.events] == [
        Action.SUCCEEDED,
        Action.RELEASED,
        Action.RELEASED,
    ]
    assert len(env.seen) == 1
    assert env.queue.stats().visible == 2
    records = env.ledger.get_many(job.job_id for job in rest)
    for job in rest:
        record = records[job.job_id]
        assert (record.state, record.error) == (JobState.RETRYING, "not started: given back")


def test_a_job_recorded_running_whose_lease_is_lost_before_its_turn_is_recorded_retrying(
    env: Env,
) -> None:
    # Given a worker that knows both tasks are quick, and a round of two jobs whose first
    # one runs past the leases' timeout while another worker takes both messages
    worker = env.worker()
    env.submit(1)
    worker.run_once()

    @env.registry.task("thief")
    def thief(ctx: TaskContext) -> None:
        env.clock.advance(VISIBILITY_S + 1)
        assert len(env.queue.receive(2, 0)) == 2

    worker.pace.learn("thief", 0.0)
    env.queue.send(Outgoing(Job(task="thief").to_json()))
    [second] = env.submit(1)
    # When the round runs
    result = worker.run_once()
    # Then neither is acked, the second never ran, and the ledger does not show it running
    assert [event.action for event in result.events] == [Action.LEASE_LOST]
    assert result.acked == 0
    assert len(env.seen) == 1
    record = env.ledger.get(second.job_id)
    assert (record.state, record.error) == (JobState.RETRYING, "not started: lease lost")


def test_a_job_whose_running_cannot_be_recorded_does_not_run_nor_do_those_planned_with_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.errors import StorageError

    # Given a worker that knows the task is quick, a round of three jobs, and a ledger
    # whose first write of the round (the three jobs' `running`) fails
    worker = env.worker()
    env.submit(1)
    worker.run_once()
    env.seen.clear()
    jobs = env.submit(3)
    real = SQLiteLedger.record_many
    failures = iter([StorageError("database is locked")])

    def flaky(self: SQLiteLedger, events: Any, **kwargs: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(self, events, **kwargs)

    monkeypatch.setattr(SQLiteLedger, "record_many", flaky)
    # When the round runs
    result = worker.run_once()
    # Then the first job did not run (retried later); the next two each wrote their own
    # `running` again before they ran
    assert [event.action for event in result.events] == [
        Action.RETRYING,
        Action.SUCCEEDED,
        Action.SUCCEEDED,
    ]
    assert [job_id for job_id, *_ in env.seen] == [jobs[1].job_id, jobs[2].job_id]
    assert [state for *_, state in env.seen] == [JobState.RUNNING] * 2
    assert env.ledger.get(jobs[0].job_id).state is JobState.RETRYING


def test_first_deliveries_read_the_ledger_once_per_round_and_once_per_job(env: Env) -> None:
    jobs = env.submit(6) + env.submit(4, output=True)
    env.worker().run_once()
    ids = [job.job_id for job in jobs]
    # One query for the whole round when it is received (a cancelled job is not run), then
    # one read of each job just before it publishes (a cancel while it ran).
    assert env.ledger.gets == ids + ids


def test_a_redelivered_job_without_output_that_succeeded_is_skipped(env: Env) -> None:
    # Given a job that succeeded but whose ack was lost
    [job] = env.submit(1)
    worker = env.worker()
    env.ledger.record(job.job_id, JobState.SUCCEEDED, attempt=1)
    # When its message comes back (receive count 2)
    env.queue.receive(1, 0)
    env.clock.advance(VISIBILITY_S + 1)
    result = worker.run_once()
    # Then the ledger was read once and the job acked without running again
    assert [event.action for event in result.events] == [Action.SKIPPED]
    assert env.ledger.gets == [job.job_id]
    assert env.seen == []
    assert result.acked == 1


def test_an_existing_output_makes_the_worker_read_the_ledger(env: Env) -> None:
    # Given an output already there, from a job the ledger does not know as succeeded
    [job] = env.submit(1, output=True)
    (env.root / "outputs").mkdir()
    (env.root / "outputs" / "0.txt").write_text("stale")
    # When it runs
    env.worker().run_once()
    # Then the round's read served the check (no read of its own), the job ran, was
    # checked for a cancel before publishing, and replaced the output
    assert env.ledger.gets == [job.job_id, job.job_id]
    assert (env.root / "outputs" / "0.txt").read_text() == job.job_id


def test_a_ledger_that_cannot_be_written_holds_the_ack_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.errors import StorageError

    # Given a ledger that fails once the jobs ran (the final write of the round)
    env.submit(2)
    worker = env.worker()
    real = Ledger.record_many
    calls = 0

    def flaky(self: Ledger, events: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StorageError("cannot append: disk on fire")
        real(self, events)

    monkeypatch.setattr(Ledger, "record_many", flaky)
    # When the round ends
    result = worker.run_once()
    # Then nothing was acked: both messages will come back
    assert result.acked == 0
    assert env.queue.stats().in_flight == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (Job(task="t", job_id="J-1_a").to_json(), "J-1_a"),
        ('{"v":1,"job_id":"J2","task":', "J2"),  # the rest malformed: the id still counts
        ('{"v":1,"job_id":"J3', None),  # cut inside the id
        ('{"v":1,"job_id":"a/b","task":"t"}', None),
        ('{"v":1,"job_id":"","task":"t"}', None),
        ('{"job_id": "J4", "v": 1}', "J4"),  # another writer's spelling: parsed
        ('{"v":1,"job_id":5}', None),
        ("not json", None),
    ],
)
def test_job_id_of_reads_the_id_from_any_body(body: str, expected: str | None) -> None:
    assert job_id_of(body) == expected
