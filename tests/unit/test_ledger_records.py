"""The ledger's records: the rank order that decides which event a job keeps."""

from __future__ import annotations

import itertools

from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger import state_rank

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


# --- the rank order ------------------------------------------------------------------------


def test_open_states_rank_by_attempt_then_step() -> None:
    order = [(Q, 0), (R, 1), (T, 1), (R, 2), (T, 2), (R, 3)]
    ranks = [state_rank(state, attempt) for state, attempt in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_every_terminal_state_beats_every_open_one_and_succeeded_beats_all() -> None:
    open_max = max(state_rank(s, a) for s, a in itertools.product((Q, R, T), range(10_000)))
    assert min(state_rank(s, 1) for s in TERMINAL) > open_max
    assert state_rank(S, 1) > state_rank(F, 99) == state_rank(C, 0)
    assert state_rank(F, 1) == state_rank(F, 7)  # a terminal state ignores the attempt
