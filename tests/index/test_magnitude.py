"""Magnitude scores and the low-magnitude-first order."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tensorstore_index import (
    DEFAULT_STATISTIC,
    STATISTICS,
    InvalidArgumentError,
    InvalidTypeError,
    magnitude_order,
    magnitude_scores,
)

# Zero or at least 2**-20 in size: scaling by 1e-3 must not underflow to zero.
magnitudes = st.one_of(st.just(0.0), st.floats(2.0**-20, 1e4, width=32))
values = st.tuples(magnitudes, st.sampled_from([-1.0, 1.0])).map(lambda p: p[0] * p[1])
tensors = st.tuples(st.integers(1, 12), st.integers(1, 16)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=values)
)


@pytest.mark.parametrize("statistic", STATISTICS)
@given(tensor=tensors, scale=st.floats(1e-3, 1e3))
def test_scores_do_not_depend_on_the_tensor_scale(statistic, tensor, scale):
    a = magnitude_scores(tensor, statistic)
    b = magnitude_scores(tensor * np.float32(scale), statistic)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("statistic", STATISTICS)
@given(tensor=tensors, seed=st.integers(0, 1000))
def test_scores_follow_their_blocks_when_blocks_are_reordered(statistic, tensor, seed):
    order = np.random.default_rng(seed).permutation(len(tensor))
    np.testing.assert_allclose(
        magnitude_scores(tensor[order], statistic), magnitude_scores(tensor, statistic)[order]
    )


@given(st.lists(arrays(np.float32, st.integers(1, 9), elements=values), min_size=1, max_size=8))
def test_normalisation_is_by_the_whole_tensor(blocks):
    total = sum(b.size for b in blocks)
    if not any(np.abs(b).max() > 0 for b in blocks):
        assert (magnitude_scores(blocks) == 0).all()
        return
    sizes = np.array([b.size for b in blocks])
    mean_abs = magnitude_scores(blocks, "mean_abs")
    rms = magnitude_scores(blocks, "rms")
    max_abs = magnitude_scores(blocks, "max_abs")
    # Every element weighs once: the size-weighted mean of block scores is the tensor's.
    assert (sizes * mean_abs).sum() / total == pytest.approx(1.0, rel=1e-5)
    assert (sizes * rms**2).sum() / total == pytest.approx(1.0, rel=1e-5)
    assert max_abs.max() == pytest.approx(1.0) and (max_abs <= 1.0).all()


def test_default_statistic_and_known_values():
    blocks = np.array([[1, -1], [2, 0], [0, -4]], np.float32)
    assert DEFAULT_STATISTIC == "max_abs"
    np.testing.assert_allclose(magnitude_scores(blocks), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(magnitude_scores(blocks, "mean_abs"), [0.75, 0.75, 1.5])


def test_tensors_of_different_scales_are_comparable():
    small = np.array([[1e-3, 1e-3], [2e-3, 2e-3]], np.float32)
    large = small * 1e4
    assert magnitude_scores(small).tolist() == pytest.approx(magnitude_scores(large).tolist())


def test_low_magnitude_first_and_stable():
    scores = np.array([0.5, 0.1, 0.5, 0.0, np.nan, 0.1])
    assert magnitude_order(scores).tolist() == [3, 1, 5, 0, 2, 4]


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=50))
def test_order_is_a_sorting_permutation(scores):
    order = magnitude_order(np.array(scores, dtype=np.float64))
    assert sorted(order.tolist()) == list(range(len(scores)))
    assert all(scores[a] <= scores[b] for a, b in zip(order, order[1:]))


def test_non_finite_blocks_go_last_and_do_not_skew_the_tensor():
    blocks = [np.array([1.0, 1.0]), np.array([np.inf, 0.0]), np.array([2.0, 2.0])]
    scores = magnitude_scores(blocks)
    assert scores.tolist() == [0.5, np.inf, 1.0]
    assert magnitude_order(scores)[-1] == 1


def test_all_zero_tensor_scores_zero():
    assert magnitude_scores(np.zeros((3, 4))).tolist() == [0.0, 0.0, 0.0]
    assert magnitude_scores(np.empty((0, 4))).shape == (0,)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: magnitude_scores(np.ones((2, 2)), "median"), InvalidArgumentError, "statistic"),
        (lambda: magnitude_scores(np.ones(4)), InvalidArgumentError, "2-D"),
        (
            lambda: magnitude_scores([np.ones(2), np.ones(0)]),
            InvalidArgumentError,
            "block 1 is empty",
        ),
        (lambda: magnitude_scores([np.array(["a"])]), InvalidTypeError, "numeric"),
        (lambda: magnitude_scores("abc"), InvalidTypeError, "sequence"),
        (lambda: magnitude_order(np.ones((2, 2))), InvalidArgumentError, "1-D"),
        (lambda: magnitude_order(np.array(["a"])), InvalidTypeError, "numeric"),
    ],
)
def test_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call()
