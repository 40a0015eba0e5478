"""The row factor: a number in [0.8, 1.2) drawn from the seed and the row number alone, so a
retried job, or any shard of a split one, rewrites exactly the bytes of the whole run."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: Every factor is in [FACTOR_MIN, FACTOR_MAX]; FACTOR_MAX is the largest double below 1.2.
FACTOR_MIN = 0.8
FACTOR_MAX = math.nextafter(1.2, 0.0)
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2**64 / golden ratio)
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = 2**64 - 1


def row_factors(seed: int, start: int, count: int) -> npt.NDArray[np.float64]:
    """The factors of data rows ``start .. start + count - 1`` (0-based) for ``seed``.

    Counter-based (SplitMix64 on the row number), so any slice of rows gets the same factors
    whatever the chunking; numpy's uint64 arithmetic wraps modulo 2**64 as SplitMix64 needs.
    """
    z = np.arange(start, start + count, dtype=np.uint64)
    z *= np.uint64(_GAMMA)
    z += np.uint64((seed + _GAMMA) & _MASK64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    z >>= np.uint64(11)
    factors = z.astype(np.float64)
    factors *= 2.0**-53
    factors *= 0.4
    factors += FACTOR_MIN
    np.minimum(factors, FACTOR_MAX, out=factors)
    return factors


def row_factor(seed: int, row: int) -> float:
    """The factor of one data row: the scalar twin of :func:`row_factors` (documentation, tests).

    For data row ``i`` (0 for the first row after the header), ``k`` is the top 53 bits of
    output ``i`` of SplitMix64 seeded with ``seed`` (``mix64(seed + (i + 1) * GAMMA)``), and
    ``factor = min(0.8 + 0.4 * (k / 2**53), 1.2 - ulp)`` in double precision (the clamp only
    touches the one top value that rounds up to 1.2).
    """
    z = (seed + (row + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    z ^= z >> 31
    return min(FACTOR_MIN + 0.4 * ((z >> 11) * 2.0**-53), FACTOR_MAX)
