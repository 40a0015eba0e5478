"""Retry delays after a transient failure: the ``Backoff`` protocol a user may plug in, and
the default ``ExponentialBackoff``."""

from __future__ import annotations

import random
from typing import Protocol

#: SQS caps a message's delay at 15 minutes, so a retry's backoff never exceeds it.
MAX_RETRY_DELAY_S = 900


class Backoff(Protocol):
    """How long a job waits before its next attempt after a transient failure."""

    def delay_s(self, attempt: int) -> int:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 1)."""


class ExponentialBackoff:
    """``base_s * 2**(attempt-1)`` capped at ``max_s`` and 900 s, with "equal jitter".

    Half the delay is fixed and half random, so jobs that failed together (a storage
    hiccup) come back spread out, yet never sooner than half the nominal delay.
    """

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay_s(self, attempt: int) -> int:
        nominal = self.base_s * 2.0 ** min(max(attempt, 1) - 1, 32)
        ceiling = min(nominal, self.max_s, MAX_RETRY_DELAY_S)
        return round(ceiling / 2 + self._rng.uniform(0, ceiling / 2))
