"""LSHIndex: recall against brute force, exact verification, self-exclusion, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorstore_index import (
    ElementShare,
    InvalidArgumentError,
    InvalidTypeError,
    LSHIndex,
    LSHIndexes,
    RelativeL2,
    exhaustive_match,
)
from tensorstore_index.synthetic import fine_tuned_blocks


def build(data, **options):
    index = LSHIndex(data.base.shape[1], **options)
    index.add(np.arange(len(data.base)), data.base)
    return index


@pytest.mark.parametrize(
    "dim, mode",
    [(1, "auto"), (8, "auto"), (16, "auto"), (17, "auto"), (100, "auto"), (1024, "auto"),
     (16384, "auto"), (100, "buckets"), (1024, "buckets"), (64, "exact")],
)
def test_finds_planted_near_duplicates_like_brute_force(dim, mode):
    n_base = 48 if dim == 16384 else 400
    data = fine_tuned_blocks(n_base, n_base // 2, n_base // 4, dim, max_noise=0.1, seed=dim)
    lsh = build(data, mode=mode).match(data.queries, 0.05)
    truth = exhaustive_match(np.arange(n_base), data.base, data.queries, 0.05)
    assert truth.found.sum() >= n_base // 8  # the workload has replaceable blocks
    recall = (lsh.found & truth.found).sum() / truth.found.sum()
    assert recall >= 0.95
    # Every LSH match is verified, so it is a match brute force also finds, never better.
    assert not (lsh.found & ~truth.found).any()
    assert (lsh.errors[lsh.found] >= truth.errors[lsh.found] - 1e-12).all()
    assert (lsh.errors[lsh.found] <= 0.05).all()


def test_planted_copy_is_matched_to_its_source():
    data = fine_tuned_blocks(500, 200, 0, 256, max_noise=0.02, seed=3)
    matches = build(data).match(data.queries, 0.05)
    assert matches.found.all()
    assert (matches.ids == data.source).all()
    q = data.queries.astype(np.float64)
    exact = np.linalg.norm(q - data.base[data.source], axis=1) / np.linalg.norm(q, axis=1)
    np.testing.assert_allclose(matches.errors, exact, rtol=1e-5)


def test_verification_rejects_lsh_false_positives():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 64)).astype(np.float32)
    index = LSHIndex(64)
    index.add(np.arange(50), base)
    # Same direction, 50% larger: an identical LSH code, but relative error 0.5.
    queries = base[:5] / 1.5
    proposed = index.search(queries, 1)
    assert (proposed.ids[:, 0] == np.arange(5)).all()
    assert (proposed.distances[:, 0] == 0).all()
    matches = index.match(queries, RelativeL2(0.1))
    assert not matches.found.any()
    assert np.isinf(matches.errors).all()
    # The norm filter must not be what rejects them: an ElementShare check has no filter.
    assert not index.match(queries, ElementShare(delta=1e-3, min_share=0.9)).found.any()
    # With a loose enough tolerance the same candidates are accepted at their exact error.
    loose = index.match(queries, RelativeL2(0.6))
    assert (loose.ids == np.arange(5)).all()
    np.testing.assert_allclose(loose.errors, 0.5, rtol=1e-5)


def test_self_matches_are_excluded_by_id():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 32)).astype(np.float32)
    x[50] = x[10] * 1.01  # one genuine near-duplicate pair
    index = LSHIndex(32)
    index.add(np.arange(100, 200), x)
    with_self = index.match(x, 0.05)
    assert (with_self.ids == np.arange(100, 200)).all()
    assert (with_self.errors == 0).all()
    without = index.match(x, 0.05, query_ids=np.arange(100, 200))
    assert without.ids[10] == 150 and without.ids[50] == 110
    assert without.found.sum() == 2
    candidates = index.search(x, 5, exclude_ids=np.arange(100, 200))
    assert not (candidates.ids == np.arange(100, 200)[:, None]).any()
    assert (candidates.ids >= 0).all()  # still k proposals per query after exclusion


@settings(max_examples=25)
@given(
    dim=st.integers(1, 48),
    n=st.integers(1, 60),
    tolerance=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**16),
    k=st.integers(1, 10),
)
def test_every_match_is_exact_and_within_tolerance(dim, n, tolerance, seed, k):
    rng = np.random.default_rng(seed)
    stored = rng.standard_normal((n, dim)).astype(np.float32)
    queries = (stored[rng.integers(0, n, 20)] + rng.normal(0, 0.3, (20, dim))).astype(np.float32)
    index = LSHIndex(dim, seed=seed)
    index.add(np.arange(n) * 7, stored)
    matches = index.match(queries, tolerance, k=k)
    truth = exhaustive_match(np.arange(n) * 7, stored, queries, tolerance)
    assert matches.checked <= 20 * min(k, n)
    for i in np.flatnonzero(matches.found):
        c = stored[matches.ids[i] // 7].astype(np.float64)
        q = queries[i].astype(np.float64)
        exact = np.linalg.norm(q - c) / np.linalg.norm(q)
        assert exact <= tolerance + 1e-6
        assert matches.errors[i] == pytest.approx(exact, rel=1e-5, abs=1e-7)
    assert (matches.found <= truth.found).all()
    if k >= n:  # every stored vector was verified: the LSH result is the exhaustive one
        assert (matches.found == truth.found).all()
        np.testing.assert_allclose(matches.errors, truth.errors, rtol=1e-6)


def test_fetch_instead_of_kept_vectors_gives_the_same_matches():
    data = fine_tuned_blocks(300, 150, 50, 128, seed=5)
    kept = build(data).match(data.queries, 0.05)
    calls = []

    def fetch(ids):
        calls.append(ids)
        return data.base[ids]

    lean = build(data, keep_vectors=False).match(data.queries, 0.05, fetch=fetch)
    assert calls and all(len(np.unique(c)) == len(c) for c in calls)
    np.testing.assert_array_equal(lean.ids, kept.ids)
    np.testing.assert_array_equal(lean.errors, kept.errors)
    with pytest.raises(InvalidArgumentError, match="fetch"):
        build(data, keep_vectors=False).match(data.queries, 0.05)
    with pytest.raises(InvalidArgumentError, match="fetch returned"):
        build(data, keep_vectors=False).match(data.queries, 0.05, fetch=lambda ids: data.base[:1])


def test_zero_and_non_finite_blocks():
    index = LSHIndex(4)
    index.add([0, 1, 2], np.array([[0, 0, 0, 0], [1, 2, 3, 4], [np.nan, 1, 1, 1]], np.float32))
    queries = np.array([[0, 0, 0, 0], [np.nan, 1, 1, 1], [1, 2, 3, 4]], np.float32)
    matches = index.match(queries, 0.5)
    assert matches.ids.tolist() == [0, -1, 1]


def test_adds_accumulate_and_inputs_are_copied():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 16)).astype(np.float32)
    index = LSHIndex(16)
    index.add(np.arange(10), x[:10])
    index.add(np.arange(10, 20), x[10:])
    original = x.copy()
    x[:] = 0  # the caller reuses its buffer
    assert len(index) == 20
    assert index.match(original, 0.0).ids.tolist() == list(range(20))
    np.testing.assert_array_equal(index.ids, np.arange(20))


def test_other_dtypes_are_cast_to_float32():
    x = np.arange(24, dtype=np.float16).reshape(3, 8) + 1
    index = LSHIndex(8)
    index.add(np.array([5, 6, 7], np.uint32), x)
    assert index.match(x.astype(np.int64), 0.0).ids.tolist() == [5, 6, 7]


def test_auto_mode_searches_tiny_blocks_exactly():
    assert LSHIndex(16).mode == "exact" and LSHIndex(17).mode == "scan"
    # In 1-D a sign hash only knows the sign; the exact search still finds the nearest.
    index = LSHIndex(1)
    index.add(np.arange(100), np.arange(1, 101, dtype=np.float32)[:, None])
    assert index.match(np.array([[50.2]]), 0.01).ids.tolist() == [49]


def test_seed_sets_the_projection():
    x = np.random.default_rng(3).standard_normal((50, 64)).astype(np.float32)
    assert (LSHIndex(64, seed=1).encode(x) == LSHIndex(64, seed=1).encode(x)).all()
    assert (LSHIndex(64, seed=1).encode(x) != LSHIndex(64, seed=2).encode(x)).any()


def test_empty_index_and_empty_queries():
    index = LSHIndex(8)
    q = np.ones((3, 8), np.float32)
    assert index.match(q, 0.1).ids.tolist() == [-1, -1, -1]
    assert (index.search(q, 2).ids == -1).all()
    index.add([1], q[:1])
    assert index.match(np.empty((0, 8), np.float32), 0.1).ids.shape == (0,)
    assert (index.search(q, 3).ids[:, 1:] == -1).all()  # fewer stored than k


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda ix: ix.add([0, 1], np.ones((2, 9))), InvalidArgumentError, "dimension 9"),
        (lambda ix: ix.add([0, 0], np.ones((2, 8))), InvalidArgumentError, "unique"),
        (lambda ix: ix.add([-3], np.ones((1, 8))), InvalidArgumentError, "non-negative"),
        (lambda ix: ix.add([0.5], np.ones((1, 8))), InvalidTypeError, "integers"),
        (lambda ix: ix.add([0], np.ones(8)), InvalidArgumentError, "2-D"),
        (lambda ix: ix.add([0], np.full((1, 8), "a")), InvalidTypeError, "numeric"),
        (lambda ix: ix.add([0], np.ones((1, 8), complex)), InvalidTypeError, "numeric"),
        (lambda ix: ix.search(np.ones((1, 8)), 0), InvalidArgumentError, "k must be"),
        (lambda ix: ix.match(np.ones((1, 8)), "0.1"), InvalidTypeError, "tolerance"),
        (lambda ix: ix.match(np.ones((1, 8)), -0.1), InvalidArgumentError, "max_error"),
        (
            lambda ix: ix.match(np.ones((2, 8)), 0.1, query_ids=[1]),
            InvalidArgumentError,
            "query_ids",
        ),
    ],
)
def test_bad_input_is_named(call, error, words):
    index = LSHIndex(8)
    index.add([7], np.ones((1, 8)))
    with pytest.raises(error, match=words):
        call(index)


def test_re_adding_an_id_is_refused():
    index = LSHIndex(8)
    index.add([7], np.ones((1, 8)))
    with pytest.raises(InvalidArgumentError, match="already in the index: \\[7\\]"):
        index.add([7, 8], np.ones((2, 8)))
    assert len(index) == 1  # the failed add changed nothing


@pytest.mark.parametrize(
    "options, words",
    [
        ({"dim": 0}, "dim"),
        ({"dim": 8, "nbits": 60}, "multiple of 8"),
        ({"dim": 8, "mode": "tree"}, "mode"),
        ({"dim": 8, "seed": -1}, "seed"),
        ({"dim": 8, "nbits": 8, "mode": "buckets"}, "nbits >= 16"),
    ],
)
def test_bad_options(options, words):
    with pytest.raises(InvalidArgumentError, match=words):
        LSHIndex(**options)


def test_one_index_per_block_class():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((10, 16)).astype(np.float32)
    b = rng.standard_normal((10, 32)).astype(np.float32)
    indexes = LSHIndexes(nbits=128)
    indexes.add(("float32", 16), np.arange(10), a)
    indexes.add(("float16", 16), np.arange(10, 20), a)
    indexes.add(("float32", 32), np.arange(20, 30), b)
    assert len(indexes) == 3 and ("float32", 32) in indexes
    assert indexes[("float32", 32)].dim == 32 and indexes[("float32", 16)].nbits == 128
    # Equal data in another class is never a match: classes are never compared.
    assert indexes.match(("float32", 16), a, 0.0).ids.tolist() == list(range(10))
    assert indexes.match(("float16", 16), a, 0.0).ids.tolist() == list(range(10, 20))
    assert (indexes.match(("bfloat16", 16), a, 0.5).ids == -1).all()
    with pytest.raises(InvalidArgumentError, match="dimension 32"):
        indexes.add(("float32", 16), [99], b[:1])
    with pytest.raises(InvalidArgumentError, match="mode"):
        LSHIndexes(mode="tree")


# -- one index for many lookups: remove, exclude, match_stored --------------------------


def test_exclude_hides_ids_and_proposes_the_nearest_allowed_instead():
    data = fine_tuned_blocks(300, 150, 0, 128, max_noise=0.02, seed=7)
    index = build(data)
    index.add(np.arange(1000, 1150), data.queries)  # the copies are in the index too
    full = index.match(data.queries, 0.05, query_ids=np.arange(1000, 1150))
    assert (full.ids >= 0).all()
    hidden = np.arange(1000, 1150)
    masked = index.match(data.queries, 0.05, query_ids=np.arange(1000, 1150), exclude=hidden)
    # The same answer as an index that never held the hidden ids.
    fresh = build(data).match(data.queries, 0.05)
    np.testing.assert_array_equal(masked.ids, fresh.ids)
    np.testing.assert_array_equal(masked.errors, fresh.errors)
    proposed = index.search(data.queries, 8, exclude=hidden)
    assert not np.isin(proposed.ids, hidden).any()
    assert (proposed.ids >= 0).all()  # still k proposals: the nearest allowed ones
    assert (index.search(data.queries, 3, exclude=index.ids).ids == -1).all()
    assert index.search(data.queries, 3, exclude=[10**9]).ids.shape == (150, 3)  # unknown ids ignored


@pytest.mark.parametrize("mode, dim", [("scan", 64), ("buckets", 64), ("exact", 8)])
def test_removed_vectors_are_never_proposed_and_ids_can_return(mode, dim):
    data = fine_tuned_blocks(200, 100, 0, dim, max_noise=0.02, seed=11)
    index = build(data, mode=mode)
    before = index.match(data.queries, 0.05)
    assert before.found.sum() >= 90
    sources = np.unique(data.source)
    index.remove(sources[::2])
    assert len(index) == 200 - sources[::2].shape[0]
    assert not np.isin(index.ids, sources[::2]).any()
    after = index.match(data.queries, 0.05)
    assert not np.isin(after.ids, sources[::2]).any()
    assert after.found.sum() < before.found.sum()
    truth = exhaustive_match(index.ids, data.base[index.ids], data.queries, 0.05)
    assert not (after.found & ~truth.found).any()  # only what a fresh index could find
    assert (after.found & truth.found).sum() >= 0.95 * truth.found.sum()
    index.add(sources[::2], data.base[sources[::2]])  # removed ids may be added again
    assert len(index) == 200
    again = index.match(data.queries, 0.05)
    np.testing.assert_array_equal(again.found, before.found)
    np.testing.assert_allclose(again.errors, before.errors)
    with pytest.raises(InvalidArgumentError, match="not in the index"):
        index.remove([10**6])


def test_removing_every_vector_leaves_an_empty_index():
    index = LSHIndex(32)
    x = np.random.default_rng(8).standard_normal((5, 32)).astype(np.float32)
    index.add(np.arange(5), x)
    index.remove(np.arange(5))
    assert len(index) == 0 and index.ids.shape == (0,)
    assert (index.match(x, 0.5).ids == -1).all()
    assert (index.search(x, 2).ids == -1).all()


@pytest.mark.parametrize("mode, dim, keep", [("scan", 256, True), ("scan", 256, False), ("buckets", 256, True), ("exact", 16, True)])
def test_match_stored_equals_match_of_the_same_vectors(mode, dim, keep):
    data = fine_tuned_blocks(300, 200, 60, dim, max_noise=0.1, seed=dim)
    everything = np.concatenate([data.base, data.queries])
    ids = np.arange(everything.shape[0]) * 3 + 1
    index = LSHIndex(dim, mode=mode, keep_vectors=keep)
    index.add(ids, everything)
    fetched = []

    def fetch(wanted):
        fetched.append(wanted)
        return everything[(wanted - 1) // 3]

    q_ids = ids[300:]
    hidden = ids[300::2]  # some queries are also no candidate for any query
    by_vectors = index.match(data.queries, 0.05, query_ids=q_ids, exclude=hidden, fetch=fetch)
    by_ids = index.match_stored(q_ids, 0.05, exclude=hidden, fetch=fetch)
    assert by_vectors.found.sum() >= 80  # about half the copies are within tolerance
    np.testing.assert_array_equal(by_ids.ids, by_vectors.ids)
    np.testing.assert_array_equal(by_ids.errors, by_vectors.errors)
    assert by_ids.checked == by_vectors.checked
    assert not np.isin(by_ids.ids, hidden).any() and not (by_ids.ids == q_ids).any()
    assert keep or all(np.unique(f).shape == f.shape for f in fetched)  # each id once per call
    with pytest.raises(InvalidArgumentError, match="not in the index"):
        index.match_stored([2], 0.05, fetch=fetch)
    assert index.match_stored(np.empty(0, np.int64), 0.05, fetch=fetch).ids.shape == (0,)


def test_add_without_copy_keeps_the_callers_array():
    x = np.random.default_rng(9).standard_normal((10, 32)).astype(np.float32)
    index = LSHIndex(32)
    index.add(np.arange(10), x, copy=False)
    assert index.match(x, 0.0).ids.tolist() == list(range(10))
    assert np.shares_memory(index._vector_chunks[0], x)  # no second copy of a large set
    indexes = LSHIndexes()
    indexes.add("c", np.arange(10), x, copy=False)
    assert np.shares_memory(indexes["c"]._vector_chunks[0], x)
    assert indexes.match_stored("c", np.arange(10), 0.0).ids.tolist() == [-1] * 10  # self excluded
    indexes.remove("c", [3])
    assert 3 not in indexes["c"].ids
    with pytest.raises(InvalidArgumentError, match="no index"):
        indexes.match_stored("other", [1], 0.1)
