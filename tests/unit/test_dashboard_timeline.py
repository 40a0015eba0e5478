"""Jobs by state over time, rebuilt from the ledger's state changes and current counts (the
dashboard's chart)."""

from __future__ import annotations

import pytest

from conveyor.dashboard.timeline import (
    BUCKET_STEPS_S,
    Moves,
    bucket_width_s,
    build_timeline,
    in_ledger_order,
    previous_state,
)
from conveyor.jobs import JobState
from conveyor.ledger import Transition

T0 = 1_000_000.0
STATES = [state.value for state in JobState]


def change(job_id: str, state: str, at: float, attempt: int = 0) -> Transition:
    """A state change at ``T0 + at``."""
    return Transition(job_id=job_id, state=JobState(state), attempt=attempt, at=T0 + at)


def counts(**given: int) -> dict[str, int]:
    return {state: given.get(state, 0) for state in STATES}


def at_time(timeline_times: list[float], seconds: float) -> int:
    """The index of the sample taken at ``T0 + seconds``."""
    return timeline_times.index(T0 + seconds)


def test_counts_per_state_at_each_sample() -> None:
    changes = sorted(
        [
            change("a", "queued", 0),
            change("a", "running", 2, 1),
            change("a", "succeeded", 4, 1),
            change("b", "queued", 1),
            change("b", "running", 5, 1),
            change("c", "queued", 6),
        ],
        key=lambda c: c.at,
    )
    now = counts(queued=1, running=1, succeeded=1)
    timeline = build_timeline(changes, now, start=T0 - 100, now=T0 + 8)

    # Every job is new: the chart starts at the first change, not at the window's start.
    assert timeline.bucket_s == 1
    assert timeline.times[0] == T0
    assert timeline.times[-1] == T0 + 8
    states = timeline.states
    at3, at5 = at_time(timeline.times, 3), at_time(timeline.times, 5)
    assert [states[s][at3] for s in ("queued", "running", "succeeded")] == [1, 1, 0]
    assert [states[s][at5] for s in ("queued", "running", "succeeded")] == [0, 1, 1]
    assert {s: series[-1] for s, series in states.items()} == now
    assert timeline.finished["succeeded"] == [0, 0, 0, 0, 1, 0, 0, 0]


def test_a_failure_followed_by_a_redrive_stays_visible() -> None:
    changes = [
        change("j", "queued", 0),
        change("j", "running", 1, 1),
        change("j", "failed", 2, 1),
        change("j", "queued", 5),  # dlq redrive
        change("j", "running", 6, 1),
        change("j", "succeeded", 7, 1),
    ]
    timeline = build_timeline(changes, counts(succeeded=1), start=T0, now=T0 + 9)

    failed = timeline.states["failed"]
    assert failed[at_time(timeline.times, 3)] == 1
    assert failed[at_time(timeline.times, 4)] == 1
    assert failed[at_time(timeline.times, 5)] == 0
    assert failed[-1] == 0
    assert sum(timeline.finished["failed"]) == 1
    assert sum(timeline.finished["succeeded"]) == 1
    assert timeline.states["queued"][at_time(timeline.times, 5)] == 1


def test_jobs_changed_before_the_window_are_a_constant_baseline() -> None:
    # 40 jobs succeeded long ago; 3 still queued from before the window; one of those
    # starts and fails inside it.
    changes = [change("old", "running", 102, 1), change("old", "failed", 103, 1)]
    now = counts(succeeded=40, queued=2, failed=1)
    timeline = build_timeline(changes, now, start=T0 + 50, now=T0 + 110.5)

    assert set(timeline.states["succeeded"]) == {40}
    assert timeline.states["queued"][0] == 3
    assert timeline.states["queued"][-1] == 2
    assert timeline.states["failed"][0] == 0
    assert timeline.states["failed"][-1] == 1
    assert timeline.times[-1] == T0 + 110.5
    assert sum(timeline.finished["failed"]) == 1


def test_finishes_before_the_window_are_not_counted_as_throughput() -> None:
    timeline = build_timeline([], counts(succeeded=1), start=T0 + 10, now=T0 + 20)
    assert sum(timeline.finished["succeeded"]) == 0
    assert timeline.states["succeeded"] == [1] * len(timeline.times)


def test_changes_stamped_by_a_clock_behind_the_submitters_keep_their_order() -> None:
    # The worker's clock is half a second behind: its running comes "before" the queued.
    changes = [
        change("j", "running", 9.5, 1),
        change("j", "queued", 10),
        change("j", "succeeded", 11, 1),
    ]
    assert [c.state for c in in_ledger_order(changes)] == ["queued", "running", "succeeded"]
    timeline = build_timeline(changes, counts(succeeded=1), start=T0, now=T0 + 20)
    for state in STATES:
        assert all(n >= 0 for n in timeline.states[state])
    assert max(timeline.states["running"]) <= 1
    assert timeline.states["queued"][-1] == 0


def test_a_change_stamped_in_the_future_counts_as_now() -> None:
    timeline = build_timeline(
        [change("j", "queued", 0), change("j", "succeeded", 60, 1)],
        counts(succeeded=1),
        start=T0,
        now=T0 + 10,
    )
    assert timeline.times[-1] == T0 + 10
    assert sum(timeline.finished["succeeded"]) == 1
    assert timeline.states["succeeded"][-2] == 0


def test_a_new_attempt_in_the_same_state_is_no_move() -> None:
    changes = [
        change("j", "queued", 0),
        change("j", "running", 1, 1),
        change("j", "running", 3, 2),  # its first worker died: received again
    ]
    timeline = build_timeline(changes, counts(running=1), start=T0, now=T0 + 5)
    assert timeline.states["running"][1:] == [1] * (len(timeline.times) - 1)


def test_counts_never_go_negative_when_counts_and_changes_disagree() -> None:
    # A change read after the counts were: the counts do not have it yet.
    changes = [change("j", "queued", 1), change("j", "succeeded", 2, 1)]
    timeline = build_timeline(changes, counts(queued=1), start=T0, now=T0 + 3)
    for state in STATES:
        assert all(n >= 0 for n in timeline.states[state])
    assert timeline.states["queued"][-1] == 1


@pytest.mark.parametrize(
    ("state", "attempt", "before"),
    [
        ("queued", 0, None),
        ("running", 1, "queued"),
        ("running", 3, "retrying"),
        ("retrying", 2, "running"),
        ("succeeded", 1, "running"),
        ("failed", 2, "running"),
        ("cancelled", 0, "queued"),
        ("cancelled", 1, "running"),
    ],
)
def test_the_state_before_a_jobs_first_change_in_the_window(
    state: str, attempt: int, before: str | None
) -> None:
    assert previous_state(change("j", state, 0, attempt)) == before


def test_moves_are_sorted_and_balanced() -> None:
    changes = [
        change("a", "queued", 3),
        change("b", "running", 1, 1),
        change("a", "running", 4, 1),
        change("b", "succeeded", 2, 1),
    ]
    moves = Moves.of(changes, now=T0 + 10)
    for state in STATES:
        assert moves.entered[state] == sorted(moves.entered[state])
    # b came from queued (before the window): it left queued, then running.
    assert moves.left["queued"] == [T0 + 1, T0 + 4]
    assert moves.entered["running"] == [T0 + 1, T0 + 4]
    assert moves.finished["succeeded"] == [T0 + 2]


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
    timeline = build_timeline([], counts(succeeded=5), start=T0, now=T0 + 7 * 86400)
    assert len(timeline.times) <= 121
    assert set(timeline.states["succeeded"]) == {5}
    assert set(timeline.finished) == {"succeeded", "failed", "cancelled"}
