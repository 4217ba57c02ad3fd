"""The instance generator: deterministic, about the asked size, layered sharing."""

from __future__ import annotations

import numpy as np
import pytest

from tensorstore_packing import InvalidProblemError, generate


def test_same_seed_same_instance_other_seed_other_sizes():
    a, b, c = generate(3_000, seed=5), generate(3_000, seed=5), generate(3_000, seed=6)
    assert np.array_equal(a.problem.tensor_blocks, b.problem.tensor_blocks)
    assert np.array_equal(a.problem.block_bytes, b.problem.block_bytes)
    assert not np.array_equal(a.problem.block_bytes, c.problem.block_bytes)


@pytest.mark.parametrize(("n", "slack"), [(2_000, 1.25), (30_000, 1.05)])
def test_block_count_is_close_to_the_target(n, slack):
    p = generate(n).problem
    assert n <= p.n_blocks <= slack * n


def test_layered_sharing_and_size_variety():
    inst = generate(10_000, n_models=6, n_groups=2)
    p = inst.problem
    degree = np.bincount(p.tensor_blocks, minlength=p.n_blocks)
    assert set(np.unique(degree).tolist()) == {1, 3, 6}  # private, per group, base
    assert p.model_names == tuple(inst.models) and len(inst.models) == 6
    emb = [p.tensor_index(f"m{m:02d}/embeddings.word.weight") for m in range(6)]
    assert all(np.array_equal(p.tensor_blocks_of(emb[0]), p.tensor_blocks_of(t)) for t in emb)
    sizes = p.block_bytes
    # one 1.5 KiB scale tensor per layer: base layers once, group layers per group,
    # private layers per model
    n_base, n_group = inst.layers // 2, inst.layers // 4
    n_private = inst.layers - n_base - n_group
    assert np.count_nonzero(sizes == 1536) == n_base + 2 * n_group + 6 * n_private
    assert sizes.max() == 64 * 1024
    assert np.count_nonzero((sizes > 1536) & (sizes < 64 * 1024)) > 0  # tails
    tensor_bytes = np.bincount(p.tensor_of_ref(), weights=sizes[p.tensor_blocks])
    assert tensor_bytes.max() > 1 << 20  # megabyte tensors beside kilobyte ones


def test_sparse_fine_tuning_splits_tensors_across_sharing_sets():
    p = generate(10_000, changed_fraction=0.2, n_models=4, n_groups=1).problem
    degree = np.bincount(p.tensor_blocks, minlength=p.n_blocks)
    t = p.tensor_index(f"m00/layer{generate(10_000, n_models=4, n_groups=1).layers // 2:03d}.mlp.up.weight")
    assert {1, 4} <= set(degree[p.tensor_blocks_of(t)].tolist())


def test_request_rates_follow_zipf_and_average_one():
    p = generate(3_000, zipf=1.0).problem
    assert p.tensor_weights.mean() == pytest.approx(1.0)
    assert p.tensor_weights.max() / p.tensor_weights.min() == pytest.approx(12.0)


def test_bad_parameters():
    with pytest.raises(InvalidProblemError):
        generate(0)
    with pytest.raises(InvalidProblemError):
        generate(1_000, n_groups=20, n_models=4)
    with pytest.raises(InvalidProblemError, match="changed_fraction"):
        generate(1_000, changed_fraction=1.5)
