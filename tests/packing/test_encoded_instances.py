"""Generated instances with encoded (variable-size) blocks, and scoring a given layout."""

from __future__ import annotations

import numpy as np
import pytest

from tensorstore_packing import EncodedSizes, InvalidProblemError, generate, pack, score

KiB = 1024


@pytest.fixture(scope="module")
def encoded():
    return generate(3_000, seed=3, n_models=6, n_groups=2, encoded=EncodedSizes.typical())


def test_a_delta_is_read_with_its_reference_and_references_are_never_deltas(encoded):
    p, refs = encoded.problem, encoded.references
    assert refs and not set(refs.values()) & set(refs)  # decode depth 1
    for t in range(p.n_tensors):
        listed = set(p.block_ids[p.tensor_blocks_of(t)].tolist())
        assert {refs[i] for i in listed if i in refs} <= listed


def test_sizes_are_drawn_from_the_fractions():
    plain = generate(3_000, seed=3, n_models=6, n_groups=2)
    sizes = EncodedSizes(packed=np.array([0.5]), delta=np.array([0.25]))
    inst = generate(3_000, seed=3, n_models=6, n_groups=2, encoded=sizes)
    raw, stored = plain.problem.block_bytes, inst.problem.block_bytes
    assert np.array_equal(plain.problem.block_ids, inst.problem.block_ids)
    is_delta = np.isin(inst.problem.block_ids, list(inst.references))
    assert np.array_equal(stored[is_delta], np.maximum(1, np.rint(raw[is_delta] * 0.25)))
    assert np.array_equal(stored[~is_delta], np.maximum(1, np.rint(raw[~is_delta] * 0.5)))


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.0]), np.array([2.0])])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(InvalidProblemError, match="fractions"):
        EncodedSizes(packed=bad, delta=np.array([0.5]))


def test_score_of_a_packer_placement_agrees_with_the_packer(encoded):
    p = encoded.problem
    r = pack(p, "greedy-2")
    s = score(p, r.block_page, r.block_offset)
    assert s.pages == r.pages and s.cost == pytest.approx(r.cost)
    assert np.array_equal(s.tensor_pages_read, r.tensor_pages_read)
    assert np.array_equal(s.model_reads().pages_read, r.model_reads().pages_read)


def test_score_refuses_an_overfull_or_malformed_placement(encoded):
    p = encoded.problem
    with pytest.raises(InvalidProblemError, match="holds more than"):
        score(p, np.zeros(p.n_blocks, dtype=np.int64))
    with pytest.raises(InvalidProblemError, match="one integer page label"):
        score(p, np.zeros(3, dtype=np.int64))
