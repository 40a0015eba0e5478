"""Jobs by state over time, reconstructed from job records (the dashboard's chart)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.dashboard.timeline import (
    BUCKET_STEPS_S,
    baseline_counts,
    bucket_width_s,
    build_timeline,
    phases,
)
from conveyor.jobs import JobState
from conveyor.ledger import JobRecord

T0 = 1_000_000.0


def record(state: str, **fields: Any) -> JobRecord:
    """A record with times relative to T0."""
    times = {k: T0 + v for k, v in fields.items() if k.endswith("_at") and v is not None}
    updated = times.pop("updated_at", max(times.values(), default=T0))
    terminal = JobState(state).terminal
    return JobRecord(
        job_id=f"job-{state}-{len(times)}",
        state=JobState(state),
        attempts=1,
        updated_at=updated,
        finished_at=updated if terminal else None,
        **times,
    )


def test_phases_follow_submit_start_and_finish() -> None:
    job = record("succeeded", submitted_at=0, started_at=5, updated_at=9)
    assert phases(job) == [(T0, "queued"), (T0 + 5, "running"), (T0 + 9, "succeeded")]


def test_phases_of_a_retrying_and_a_never_started_failed_job() -> None:
    retrying = record("retrying", submitted_at=0, started_at=2, updated_at=3)
    assert [name for _, name in phases(retrying)] == ["queued", "running", "retrying"]
    bad_message = record("failed", submitted_at=0, updated_at=1)
    assert phases(bad_message) == [(T0, "queued"), (T0 + 1, "failed")]


def test_phases_never_go_back_in_time_when_clocks_disagree() -> None:
    skewed = record("succeeded", submitted_at=10, started_at=8, updated_at=9)
    times = [at for at, _ in phases(skewed)]
    assert times == sorted(times)


def test_counts_per_state_at_each_sample() -> None:
    jobs = [
        record("succeeded", submitted_at=0, started_at=2, updated_at=4),
        record("running", submitted_at=1, started_at=5),
        record("queued", submitted_at=6),
    ]
    timeline = build_timeline(jobs, {}, start=T0, now=T0 + 8)

    assert timeline.bucket_s == 1
    assert timeline.times[0] == T0
    assert timeline.times[-1] == T0 + 8
    at = {round(t - T0): i for i, t in enumerate(timeline.times)}
    states = timeline.states
    assert [states[s][at[3]] for s in ("queued", "running", "succeeded")] == [1, 1, 0]
    assert [states[s][at[5]] for s in ("queued", "running", "succeeded")] == [0, 1, 1]
    assert [states[s][at[8]] for s in ("queued", "running", "succeeded")] == [1, 1, 1]
    assert timeline.finished["succeeded"] == [0, 0, 0, 0, 1, 0, 0, 0]


def test_baseline_jobs_are_constant_and_the_last_sample_is_now() -> None:
    jobs = [record("failed", submitted_at=100, started_at=101, updated_at=102)]
    timeline = build_timeline(jobs, {"succeeded": 40, "queued": 3}, start=T0 + 50, now=T0 + 110.5)
    assert set(timeline.states["succeeded"]) == {40}
    assert set(timeline.states["queued"][:-1]) <= {3, 4}
    assert timeline.states["failed"][0] == 0
    assert timeline.states["failed"][-1] == 1
    assert timeline.times[-1] == T0 + 110.5
    assert sum(timeline.finished["failed"]) == 1


def test_finishes_before_the_window_are_not_counted_as_throughput() -> None:
    old = record("succeeded", submitted_at=0, started_at=1, updated_at=2)
    timeline = build_timeline([old], {}, start=T0 + 10, now=T0 + 20)
    assert sum(timeline.finished["succeeded"]) == 0
    assert timeline.states["succeeded"][-1] == 1


@pytest.mark.parametrize(
    ("span_s", "expected"), [(1, 1), (100, 1), (121, 2), (3600, 30), (86400, 900)]
)
def test_bucket_width_keeps_the_points_under_the_limit(span_s: float, expected: int) -> None:
    width = bucket_width_s(span_s)
    assert width == expected
    assert span_s / width <= 120


def test_bucket_width_beyond_the_largest_step_still_fits() -> None:
    span_s = BUCKET_STEPS_S[-1] * 500
    assert span_s / bucket_width_s(span_s) <= 120


def test_points_stay_bounded_for_a_long_window() -> None:
    timeline = build_timeline([], {"succeeded": 5}, start=T0, now=T0 + 7 * 86400)
    assert len(timeline.times) <= 121
    assert set(timeline.states["succeeded"]) == {5}


def test_baseline_is_totals_less_recent_jobs_and_never_negative() -> None:
    recent = [record("succeeded", submitted_at=0, updated_at=1), record("running", started_at=0)]
    totals = {"succeeded": 10, "running": 0, "queued": 2}
    assert baseline_counts(totals, recent) == {
        "queued": 2,
        "running": 0,
        "retrying": 0,
        "succeeded": 9,
        "failed": 0,
    }
