"""Hooks around the worker's jobs (worker/hooks.py): the health file, the dead-letter check,
and the crash points of the fault suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor.events import Action
from conveyor.jobs import JobState
from conveyor.settings import EXIT_OK
from conveyor.worker import WorkerHook
from tests.unit.worker.helpers import VISIBILITY_S, Env, only


def test_health_file_is_touched_every_round(env: Env, tmp_path: Path) -> None:
    health = tmp_path / "alive"

    env.worker(health_file=health).run_once()

    assert health.exists()


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


# --- crash points (the fault suite) -------------------------------------------------------


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
