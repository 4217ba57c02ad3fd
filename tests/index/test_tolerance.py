"""Tolerance measures: exact errors, the norm filter's safety, and bad parameters."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tensorstore_index import ElementShare, InvalidArgumentError, InvalidTypeError, RelativeL2

# Errors are computed in float32, whose squares of values below ~1e-19 underflow to
# subnormals; weights that small are zero for every purpose, so the strategy makes them 0.
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32).map(lambda x: 0.0 if abs(x) < 1e-12 else x)


@st.composite
def pairs(draw):
    n = draw(st.integers(1, 6))
    d = draw(st.integers(1, 40))
    q = draw(arrays(np.float32, (n, d), elements=finite))
    c = draw(arrays(np.float32, (n, d), elements=finite))
    return q, c


@given(pairs())
def test_relative_l2_matches_float64_formula(pair):
    q, c = pair
    got = RelativeL2(0.1).errors(q, c)
    q64, c64 = q.astype(np.float64), c.astype(np.float64)
    distance = np.linalg.norm(q64 - c64, axis=1)
    norm = np.linalg.norm(q64, axis=1)
    for g, dist, n in zip(got, distance, norm):
        if n == 0:
            assert g == (0.0 if dist == 0 else np.inf)
        else:
            assert g == pytest.approx(dist / n, rel=1e-5, abs=1e-6)


@given(pairs(), st.floats(0, 2))
def test_norm_filter_never_rejects_an_accepted_pair(pair, limit):
    q, c = pair
    tol = RelativeL2(limit)
    accepted = tol.errors(q, c) <= tol.limit
    qn = np.linalg.norm(q.astype(np.float64), axis=1)
    cn = np.linalg.norm(c.astype(np.float64), axis=1)
    assert not (accepted & ~tol.may_accept(qn, cn)).any()


def test_norm_filter_rejects_far_norms():
    tol = RelativeL2(0.05)
    assert not tol.may_accept(np.array([1.0]), np.array([1.2]))[0]
    assert tol.may_accept(np.array([1.0]), np.array([1.04]))[0]


def test_zero_query_accepts_only_zero():
    zero = np.zeros((2, 4), np.float32)
    other = np.array([[0, 0, 0, 0], [0, 1e-3, 0, 0]], np.float32)
    assert RelativeL2(0.5).errors(zero, other).tolist() == [0.0, np.inf]


def test_non_finite_blocks_are_never_accepted():
    q = np.array([[1.0, np.nan], [np.inf, 1.0]], np.float32)
    tol = RelativeL2(10.0)
    assert not (tol.errors(q, q) <= tol.limit).any()


def test_element_share_counts_elements_within_delta():
    q = np.zeros((1, 10), np.float32)
    c = np.array([[0, 0.01, 0.02, 0.1, 0.5, 0, 0, 0, 0, -0.05]], np.float32)
    tol = ElementShare(delta=0.05, min_share=0.7)
    # |diff| <= 0.05 for 8 of 10 elements (0.1 and 0.5 are outside)
    assert tol.errors(q, c)[0] == pytest.approx(0.2)
    assert tol.errors(q, c)[0] <= tol.limit
    assert ElementShare(0.05, 0.9).errors(q, c)[0] > ElementShare(0.05, 0.9).limit


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: RelativeL2(-0.1), InvalidArgumentError),
        (lambda: RelativeL2(float("nan")), InvalidArgumentError),
        (lambda: RelativeL2("0.1"), InvalidTypeError),
        (lambda: ElementShare(-1.0, 0.5), InvalidArgumentError),
        (lambda: ElementShare(0.1, 0.0), InvalidArgumentError),
        (lambda: ElementShare(0.1, 1.5), InvalidArgumentError),
        (lambda: ElementShare(None, 0.5), InvalidTypeError),
    ],
)
def test_bad_parameters(make, error):
    with pytest.raises(error):
        make()
    with pytest.raises(ValueError if error is InvalidArgumentError else TypeError):
        make()


@pytest.mark.parametrize("tolerance", [RelativeL2(0.05), ElementShare(delta=0.1, min_share=0.9)])
def test_errors_broadcast_one_query_against_its_candidates(tolerance):
    rng = np.random.default_rng(12)
    q = rng.standard_normal((6, 300)).astype(np.float32)
    c = (q[:, None, :] + rng.normal(0, 0.05, (6, 4, 300))).astype(np.float32)
    c[0, 0] = 0.0  # a zero candidate, and a zero query (redone in float64)
    q[5] = 0.0
    grid = tolerance.errors(q[:, None, :], c)
    pairs = tolerance.errors(np.repeat(q, 4, axis=0), c.reshape(24, 300))
    assert grid.shape == (6, 4)
    np.testing.assert_array_equal(grid.ravel(), pairs)  # the same arithmetic, bit for bit
