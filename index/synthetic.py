"""Synthetic block sets shaped like the weights of a fine-tuned model family.

Used by the tests, the benchmarks and ``python -m tensorstore_index.measure``; nothing here is needed to
use the index.

A *base model* is a set of blocks grouped into tensors; elements are Gaussian with a
per-tensor scale drawn log-normally (layers differ in magnitude by orders) plus a small
per-tensor offset (so unrelated blocks are not exactly orthogonal, which makes the LSH's
job harder). A
*fine-tuned model* is made of copies of base blocks, each perturbed by Gaussian noise of an
exact relative L2 size drawn uniformly from ``[0, max_noise]``, plus blocks unrelated to the
base (new heads, re-initialised layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorstore_index.checks import as_count, as_real
from tensorstore_index.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class FineTunedBlocks:
    """A base block set and query blocks derived from it.

    Attributes
    ----------
    base : np.ndarray
        ``(n_base, dim)`` float32 blocks of the base model (what the index holds).
    queries : np.ndarray
        ``(n_copies + n_unrelated, dim)`` float32 blocks of the fine-tuned model: perturbed
        copies first, then unrelated blocks.
    source : np.ndarray
        ``(n_queries,)`` int64 row of ``base`` each query was copied from, ``-1`` if unrelated.
    noise : np.ndarray
        ``(n_queries,)`` float64 relative L2 noise ``||q - base[source]|| / ||base[source]||``
        applied to each copy, ``nan`` for unrelated blocks.
    """

    base: np.ndarray
    queries: np.ndarray
    source: np.ndarray
    noise: np.ndarray


def weight_like_blocks(
    n: int, dim: int, rng: np.random.Generator, *, blocks_per_tensor: int = 256
) -> np.ndarray:
    """``n`` float32 blocks of ``dim`` elements that look like trained weights.

    Consecutive runs of ``blocks_per_tensor`` blocks form one "tensor" sharing a scale and
    a small offset, so blocks of one tensor have similar norms (the cheap norm filter
    cannot tell them apart) and are slightly correlated.
    """
    tensor_of = np.arange(n) // blocks_per_tensor
    tensors = int(tensor_of[-1]) + 1 if n else 0
    scale = rng.lognormal(mean=-3.0, sigma=1.0, size=tensors)[tensor_of, None]
    offset = 0.1 * rng.standard_normal(tensors)[tensor_of, None]
    blocks = rng.standard_normal((n, dim), dtype=np.float32)
    blocks += offset.astype(np.float32)
    blocks *= scale.astype(np.float32)
    return blocks


def perturb(
    blocks: np.ndarray, relative_noise: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Return ``blocks`` plus Gaussian noise of exactly ``relative_noise[i] * ||blocks[i]||``."""
    noise = rng.standard_normal(blocks.shape, dtype=np.float32)
    norm_b = np.linalg.norm(blocks.astype(np.float64), axis=1)
    norm_n = np.linalg.norm(noise.astype(np.float64), axis=1)
    factor = np.divide(relative_noise * norm_b, norm_n, out=np.zeros_like(norm_b), where=norm_n > 0)
    return (blocks + noise * factor[:, None].astype(np.float32)).astype(np.float32)


def fine_tuned_blocks(
    n_base: int,
    n_copies: int,
    n_unrelated: int,
    dim: int,
    *,
    max_noise: float = 0.1,
    seed: int = 0,
) -> FineTunedBlocks:
    """Make a base block set and a fine-tuned model's blocks (see the module docstring).

    Parameters
    ----------
    n_base, n_copies, n_unrelated, dim : int
        Sizes; ``n_base >= 1`` when ``n_copies > 0``.
    max_noise : float
        Copies get relative L2 noise uniform in ``[0, max_noise]``. With a tolerance of
        ``max_noise / 2`` about half the copies are replaceable, many close to the boundary.
    seed : int
        Seed of the generator; equal arguments give equal data.
    """
    n_base = as_count(n_base, "n_base")
    n_copies = as_count(n_copies, "n_copies")
    n_unrelated = as_count(n_unrelated, "n_unrelated")
    dim = as_count(dim, "dim", minimum=1)
    max_noise = as_real(max_noise, "max_noise")
    if max_noise < 0:
        raise InvalidArgumentError(f"max_noise must be >= 0, got {max_noise}")
    if n_copies and not n_base:
        raise InvalidArgumentError("copies need a base: n_base must be >= 1")
    rng = np.random.default_rng(seed)
    base = weight_like_blocks(n_base, dim, rng)
    source = rng.integers(0, max(n_base, 1), size=n_copies)
    noise = rng.uniform(0.0, max_noise, size=n_copies)
    copies = perturb(base[source], noise, rng)
    unrelated = weight_like_blocks(n_unrelated, dim, rng)
    return FineTunedBlocks(
        base=base,
        queries=np.concatenate([copies, unrelated]),
        source=np.concatenate([source, np.full(n_unrelated, -1)]).astype(np.int64),
        noise=np.concatenate([noise, np.full(n_unrelated, np.nan)]),
    )
