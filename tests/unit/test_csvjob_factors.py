"""The row factor: SplitMix64 of the seed and the row number, in [0.8, 1.2)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.csvjob.factors import FACTOR_MAX, FACTOR_MIN, row_factor, row_factors
from conveyor.job_ids import MAX_SEED

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def splitmix64_outputs(seed: int, count: int) -> list[int]:
    """SplitMix64 written out independently of the module (Vigna's reference algorithm)."""
    mask = 2**64 - 1
    state, out = seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_factor_is_splitmix64_of_seed_and_row() -> None:
    # Given SplitMix64's published test vector for seed 1234567
    outputs = splitmix64_outputs(1234567, 5)
    assert outputs[:2] == [6457827717110365317, 3203168211198807973]
    # Then row i's factor comes from output i's top 53 bits
    for row, value in enumerate(outputs):
        assert row_factor(1234567, row) == min(0.8 + 0.4 * ((value >> 11) * 2.0**-53), FACTOR_MAX)


@given(
    seed=st.integers(0, MAX_SEED),
    start=st.integers(0, 2**40),
    count=st.integers(0, 300),
)
@HYPOTHESIS
def test_vector_factors_equal_scalar_factors(seed: int, start: int, count: int) -> None:
    factors = row_factors(seed, start, count)
    assert factors.tolist() == [row_factor(seed, start + i) for i in range(count)]


def test_factors_lie_in_0_8_to_1_2() -> None:
    factors = row_factors(12345, 0, 1_000_000)
    assert factors.min() >= 0.8
    assert factors.max() < 1.2
    # and they spread over the whole range, not a corner of it
    assert factors.min() < 0.801
    assert factors.max() > 1.199
    assert abs(factors.mean() - 1.0) < 0.001


def test_top_factor_is_clamped_below_1_2() -> None:
    # The largest 53-bit draw rounds up to exactly 1.2 without the clamp.
    top = FACTOR_MIN + 0.4 * ((2**53 - 1) * 2.0**-53)
    assert top == 1.2
    assert min(top, FACTOR_MAX) < 1.2
    assert math.nextafter(1.2, 0.0) == FACTOR_MAX
