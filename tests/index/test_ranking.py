"""Candidate ranking by bytes saved per unit of risk, and the tolerance rounds."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorstore_index as index


def test_tolerance_levels_are_the_ladder_up_to_the_tolerance():
    assert index.tolerance_levels(0.05) == (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
    assert index.tolerance_levels(0.03) == (0.001, 0.002, 0.005, 0.01, 0.02)  # acts as 0.02
    assert index.tolerance_levels(0.0005) == (0.0005,)


@given(st.floats(1e-6, 0.99), st.floats(1e-6, 0.99))
def test_a_larger_tolerance_runs_the_rounds_of_a_smaller_one_first(a, b):
    small, large = sorted((a, b))
    low, high = index.tolerance_levels(small), index.tolerance_levels(large)
    if small >= index.TOLERANCE_LEVELS[0]:
        assert high[: len(low)] == low
    assert all(level <= large for level in high)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_a_tolerance_must_be_positive(bad):
    with pytest.raises(index.InvalidArgumentError):
        index.tolerance_levels(bad)


def test_savings_order_most_bytes_per_risk_first_ties_to_lower_risk():
    saved = [4000, 100, 4000, 2000, 50]
    risk = [0.02, 0.001, 0.01, 0.01, 0.0]
    # ratios: 2e5, 1e5, 4e5, 2e5, inf
    assert index.savings_order(saved, risk).tolist() == [4, 2, 3, 0, 1]


@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.floats(0, 10)), min_size=1, max_size=50))
def test_savings_order_is_a_permutation_sorted_by_ratio(pairs):
    saved = np.array([p[0] for p in pairs], dtype=float)
    risk = np.array([p[1] for p in pairs])
    order = index.savings_order(saved, risk)
    assert sorted(order.tolist()) == list(range(len(pairs)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(risk > 0, saved / risk, np.inf)[order]
    assert np.all(ratio[:-1] >= ratio[1:])


@pytest.mark.parametrize(("saved", "risk"), [([1, 2], [1]), ([-1], [1]), ([1], [float("nan")]), ([[1]], [[1]])])
def test_savings_order_refuses_bad_input(saved, risk):
    with pytest.raises(index.InvalidArgumentError):
        index.savings_order(saved, risk)
