"""Jobs in flight (worker/inflight.py): lost leases, the heartbeat."""

from __future__ import annotations

import pytest

from conveyor.events import Action
from conveyor.jobs import JobState
from conveyor.settings import Settings
from conveyor.task_context import TaskContext
from tests.unit.worker.helpers import VISIBILITY_S, Env, only, wait_until


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


@pytest.mark.parametrize(
    ("visibility_timeout_s", "asked_s", "expected_s"),
    [(60, None, 20.0), (2, None, 1.0), (1, None, 0.5), (10, 30.0, 5.0), (60, 5.0, 5.0)],
)
def test_the_heartbeat_comes_well_before_the_lease_expires(
    visibility_timeout_s: int, asked_s: float | None, expected_s: float
) -> None:
    settings = Settings(visibility_timeout_s=visibility_timeout_s, heartbeat_every_s=asked_s)
    assert settings.heartbeat_s == expected_s
