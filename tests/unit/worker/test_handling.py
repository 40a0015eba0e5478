"""One job's handling (worker/handling.py, outcomes.py): failures and retries, cancels,
malformed messages, claim-checked params, and the attempt before a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.errors import BadInput, StorageError, TransientTaskError
from conveyor.events import Action
from conveyor.jobs import Job, JobState
from conveyor.ledger import JobFinished, Ledger, LedgerEvent
from conveyor.queues.messages import Outgoing
from conveyor.task_context import TaskContext
from tests.unit.worker.helpers import VISIBILITY_S, Env, only

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


# --- cancellation -------------------------------------------------------------------------


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


# --- malformed messages -------------------------------------------------------------------


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


# --- claim-checked params -----------------------------------------------------------------


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
    from conveyor.claims import CLAIMS_DIR

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

    from conveyor.strict_json import canonical_json

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


# --- crashed attempts ---------------------------------------------------------------------


def test_a_redelivery_after_a_crash_records_why_the_previous_attempt_ended(env: Env) -> None:
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
