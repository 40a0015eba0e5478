"""The worker loop, one round at a time, on the in-memory queue with an injected clock."""

from __future__ import annotations

import threading

from conveyor.events import Action
from conveyor.jobs import Job, JobState
from conveyor.ledger import LedgerEvent
from conveyor.queues.messages import Outgoing
from conveyor.settings import EXIT_INTERRUPTED, EXIT_OK
from conveyor.task_context import TaskContext
from tests.unit.worker.helpers import VISIBILITY_S, Env, only

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


def test_a_fresh_worker_whose_messages_run_no_job_doubles_its_prefetch(env: Env) -> None:
    # Given a backlog of malformed messages: no job runs, so no duration is learnt
    for index in range(20):
        env.queue.send(Outgoing(f"not json {index}"))
    worker = env.worker(fresh=True)
    # When a fresh worker drains it, it does not stay at one message a round
    received = [worker.run_once().received for _ in range(5)]
    # Then it takes 1, 2, 4, 8, then a full batch (TCP's slow start)
    assert received == [1, 2, 4, 8, 5]
    # And an empty receive widens nothing
    assert worker.pace.prefetch() == 10


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
