"""Lower bounds on pages stored and pages read.

Every bound here holds for any placement that keeps blocks whole and aligned:

* a set of blocks needs at least ``ceil(slot bytes / page_bytes)`` pages;
* two blocks larger than half a page never share one, so it also needs at least as many
  pages as it has such blocks (the Martello-Toth bound L2 at alpha = 0 reduces to this
  maximum).

Sizes are the aligned *slot* sizes, which every placement must pay; the bound is
therefore at least the raw-bytes bound ``ceil(total bytes / page_bytes)``.
"""

from __future__ import annotations

import numpy as np

from tensorstore_packing.csr import gather_rows, row_of_entries, unique_pairs
from tensorstore_packing.problem import PackingProblem


def pages_lower_bound(slot_bytes: np.ndarray, page_bytes: int) -> int:
    """Fewest pages that can hold blocks of the given slot sizes.

    Parameters
    ----------
    slot_bytes : numpy.ndarray
        Aligned sizes of the blocks.
    page_bytes : int
        Page capacity.

    Returns
    -------
    int
    """
    slot_bytes = np.asarray(slot_bytes, dtype=np.int64)
    by_volume = -(-int(slot_bytes.sum()) // page_bytes)
    by_big_blocks = int(np.count_nonzero(2 * slot_bytes > page_bytes))
    return max(by_volume, by_big_blocks)


def grouped_pages_lower_bound(
    group: np.ndarray, slot_bytes: np.ndarray, n_groups: int, page_bytes: int
) -> np.ndarray:
    """:func:`pages_lower_bound` of many block sets at once.

    Parameters
    ----------
    group : numpy.ndarray
        Set index of each entry.
    slot_bytes : numpy.ndarray
        Slot size of each entry.
    n_groups : int
        Number of sets.
    page_bytes : int
        Page capacity.

    Returns
    -------
    numpy.ndarray
        ``(n_groups,)`` int64 bound per set (0 for an empty set).
    """
    # float64 sums are exact below 2**53 bytes (8 PiB)
    volume = np.bincount(group, weights=slot_bytes, minlength=n_groups).astype(np.int64)
    big = np.bincount(group, weights=2 * slot_bytes > page_bytes, minlength=n_groups)
    return np.maximum(-(-volume // page_bytes), big.astype(np.int64))


def tensor_lower_bounds(problem: PackingProblem) -> np.ndarray:
    """Fewest pages each tensor can be read from: ``(n_tensors,)`` int64."""
    return grouped_pages_lower_bound(
        problem.tensor_of_ref(),
        problem.slot_bytes[problem.tensor_blocks],
        problem.n_tensors,
        problem.page_bytes,
    )


def model_block_pairs(
    problem: PackingProblem, model_ptr: np.ndarray, model_tensors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (model, dense block) pairs of a model -> tensors CSR."""
    n_models = model_ptr.size - 1
    model_of_entry = row_of_entries(model_ptr)
    position, blocks = gather_rows(problem.tensor_ptr, problem.tensor_blocks, model_tensors)
    return unique_pairs(model_of_entry[position], blocks, problem.n_blocks) if n_models else (
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
    )


def model_lower_bounds(
    problem: PackingProblem, model_ptr: np.ndarray, model_tensors: np.ndarray
) -> np.ndarray:
    """Fewest pages each model (a set of tensors) can be loaded from."""
    models, blocks = model_block_pairs(problem, model_ptr, model_tensors)
    return grouped_pages_lower_bound(
        models, problem.slot_bytes[blocks], model_ptr.size - 1, problem.page_bytes
    )
