"""Retry delays: the default exponential backoff with equal jitter (backoff.py)."""

from __future__ import annotations

import random

from conveyor.backoff import MAX_RETRY_DELAY_S, ExponentialBackoff


def test_exponential_backoff_grows_with_jitter_and_caps() -> None:
    backoff = ExponentialBackoff(base_s=5, max_s=100, rng=random.Random(1))

    for attempt, nominal in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 100), (40, 100)]:
        delays = {backoff.delay_s(attempt) for _ in range(50)}
        assert min(delays) >= nominal // 2
        assert max(delays) <= nominal
        assert len(delays) > 1  # jittered
    assert ExponentialBackoff(5, 10_000).delay_s(30) <= MAX_RETRY_DELAY_S == 900  # SQS's maximum


def test_the_first_attempts_wait_about_the_base_delay() -> None:
    backoff = ExponentialBackoff(base_s=2, max_s=60, rng=random.Random(3))

    assert {backoff.delay_s(0), backoff.delay_s(1)} <= {1, 2}  # attempt 0 counts as 1
