"""Pace: how many messages a round takes, from how long this worker's jobs took."""

from __future__ import annotations

import pytest

from conveyor.queues.base import MAX_BATCH
from conveyor.worker.prefetch import Pace


@pytest.mark.parametrize(
    ("duration_s", "visibility_timeout_s", "expected"),
    [
        (0.001, 60, MAX_BATCH),  # quick jobs: a full batch
        (0.2, 60, 5),  # a second's worth, not six seconds' (the cap, not the fraction)
        (0.5, 60, 2),
        (0.9, 60, 1),
        (30.0, 60, 1),  # long jobs: one at a time
        (0.2, 5, 2),  # a short visibility timeout: a tenth of it (0.5 s) is the budget
    ],
)
def test_a_round_takes_what_recent_jobs_would_run_in_a_second_at_most(
    duration_s: float, visibility_timeout_s: int, expected: int
) -> None:
    pace = Pace(visibility_timeout_s)
    pace.learn("t", duration_s)
    assert pace.prefetch() == expected


def test_a_slow_job_is_forgotten_over_a_few_quick_ones() -> None:
    pace = Pace(60)
    pace.learn("t", 4.0)
    assert pace.prefetch() == 1
    for _ in range(8):
        pace.learn("t", 0.001)
    assert pace.prefetch() == MAX_BATCH


def test_a_fresh_pace_takes_one_and_doubles_only_after_rounds_that_ran_nothing() -> None:
    pace = Pace(60)
    assert pace.prefetch() == 1
    pace.note_round(0)  # an empty receive: no evidence either way
    assert pace.prefetch() == 1
    pace.note_round(1)
    pace.note_round(2)
    assert pace.prefetch() == 4
    pace.learn("t", 2.0)  # a job ran: its duration decides from now on
    pace.note_round(4)
    assert pace.prefetch() == 1
