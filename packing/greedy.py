"""The simple packers: per-tensor baseline, Greedy-1 and Greedy-2.

Each returns ``(page_of, rank)``: a page label per dense block and the order of blocks
within a page; :func:`packing.result.build_result` turns that into offsets and metrics.
All three lay blocks out in a sequence and fill pages in that order (next fit); they
differ in the sequence and in where a new page must start.
"""

from __future__ import annotations

import numpy as np

from tensorstore_packing.fit import next_fit
from tensorstore_packing.problem import PackingProblem
from tensorstore_packing.sharing import sharing_groups


def pack_baseline(problem: PackingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Per-tensor packing: each tensor's not yet placed blocks, in tensor order, on pages
    of their own.

    A shared block is placed once, with the first tensor that lists it; each tensor
    starts a new page, which is what storing one tensor after another does.
    """
    ref_tensor = problem.tensor_of_ref()
    first = np.sort(np.unique(problem.tensor_blocks, return_index=True)[1])
    sequence = problem.tensor_blocks[first]
    tensor_changes = np.flatnonzero(np.diff(ref_tensor[first]) != 0) + 1
    sequence, starts = _append_unread(problem, sequence, tensor_changes)
    return _fill(problem, sequence, starts)


def pack_greedy1(problem: PackingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Greedy-1: blocks grouped by sharing set, each group on pages of its own.

    Every page then holds blocks that exactly the same tensors need, so no tensor reads
    data it does not need, but each group's last page is partly empty.
    """
    groups = sharing_groups(problem)
    return _fill(problem, groups.blocks, groups.block_ptr[:-1])


def pack_greedy2(problem: PackingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Greedy-2: tensors largest first; within a tensor, the most widely shared blocks
    first; pages filled continuously across tensors.

    Pages come out full, but a tensor's data straddles page boundaries shared with
    other tensors.
    """
    ref_tensor = problem.tensor_of_ref()
    tensor_bytes = np.bincount(
        ref_tensor, weights=problem.slot_bytes[problem.tensor_blocks], minlength=problem.n_tensors
    )
    tensor_rank = np.empty(problem.n_tensors, dtype=np.int64)
    tensor_rank[np.argsort(-tensor_bytes, kind="stable")] = np.arange(problem.n_tensors)
    degree = np.bincount(problem.tensor_blocks, minlength=problem.n_blocks)
    refs = problem.tensor_blocks
    walk = np.lexsort((np.arange(refs.size), -degree[refs], tensor_rank[ref_tensor]))
    first = np.sort(np.unique(refs[walk], return_index=True)[1])  # first visit of each block
    sequence, starts = _append_unread(problem, refs[walk][first], np.zeros(0, np.int64))
    return _fill(problem, sequence, starts)


def _append_unread(
    problem: PackingProblem, sequence: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add blocks no tensor reads at the end, on pages of their own."""
    unread = np.setdiff1d(np.arange(problem.n_blocks), sequence, assume_unique=True)
    if unread.size == 0:
        return sequence, starts
    return np.concatenate((sequence, unread)), np.concatenate((starts, [sequence.size]))


def _fill(
    problem: PackingProblem, sequence: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Next-fit `sequence` (every block exactly once) into pages."""
    page_of = np.empty(problem.n_blocks, dtype=np.int64)
    rank = np.empty(problem.n_blocks, dtype=np.int64)
    page_of[sequence] = next_fit(problem.slot_bytes[sequence], problem.page_bytes, starts)
    rank[sequence] = np.arange(sequence.size)
    return page_of, rank
