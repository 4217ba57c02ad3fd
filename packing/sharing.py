"""Grouping blocks by *sharing set*: the exact set of tensors that read a block.

Blocks with the same sharing set are interchangeable for every reader: a page filled
only with them is read in full by each tensor that reads it at all. Greedy-1 and
Two-Stage are built on this grouping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorstore_packing.problem import PackingProblem


@dataclass(frozen=True, slots=True, eq=False)
class SharingGroups:
    """Blocks grouped by sharing set, as CSR structures.

    Groups are numbered in the order their first block is first referenced (tensor
    order); blocks no tensor reads form the last group, whose sharing set is empty.

    Attributes
    ----------
    block_group : numpy.ndarray
        ``(n_blocks,)`` group of each dense block.
    block_ptr, blocks : numpy.ndarray
        CSR group -> dense blocks, each group's blocks by slot size, largest first.
    tensor_ptr, tensors : numpy.ndarray
        CSR group -> its sharing set (sorted dense tensor indices).
    slot_bytes : numpy.ndarray
        ``(n_groups,)`` total slot bytes of each group.
    """

    block_group: np.ndarray
    block_ptr: np.ndarray
    blocks: np.ndarray
    tensor_ptr: np.ndarray
    tensors: np.ndarray
    slot_bytes: np.ndarray

    @property
    def n_groups(self) -> int:
        """Number of distinct sharing sets."""
        return int(self.block_ptr.size - 1)

    def blocks_of(self, g: int) -> np.ndarray:
        """Dense blocks of group ``g``, largest first."""
        return self.blocks[self.block_ptr[g] : self.block_ptr[g + 1]]

    def tensors_of(self, g: int) -> np.ndarray:
        """Sharing set of group ``g`` (dense tensor indices)."""
        return self.tensors[self.tensor_ptr[g] : self.tensor_ptr[g + 1]]


def sharing_groups(problem: PackingProblem) -> SharingGroups:
    """Group the blocks of `problem` by sharing set.

    Sets are compared through two 64-bit sums of random per-tensor keys (one sort
    instead of comparing variable-length lists), then checked exactly: a group is valid
    only if each of its blocks is read by every tensor of the group's union set.

    Parameters
    ----------
    problem : PackingProblem

    Returns
    -------
    SharingGroups
    """
    n, n_tensors = problem.n_blocks, problem.n_tensors
    ref_block = problem.tensor_blocks
    ref_tensor = problem.tensor_of_ref()
    keys = np.random.Generator(np.random.PCG64(0x5A1E)).bit_generator.random_raw((2, n_tensors))
    h1 = np.zeros(n, dtype=np.uint64)
    h2 = np.zeros(n, dtype=np.uint64)
    np.add.at(h1, ref_block, keys[0][ref_tensor])  # wraps modulo 2**64: fine for a hash
    np.add.at(h2, ref_block, keys[1][ref_tensor])
    degree = np.bincount(ref_block, minlength=n)

    by_set = np.lexsort((h2, h1, degree))
    new_set = np.ones(n, dtype=bool)
    if n:
        new_set[1:] = (
            (np.diff(degree[by_set]) != 0) | (np.diff(h1[by_set]) != 0) | (np.diff(h2[by_set]) != 0)
        )
    label = np.empty(n, dtype=np.int64)
    label[by_set] = np.cumsum(new_set) - 1
    n_groups = int(new_set.sum())

    # number groups by first reference, unread blocks last
    first_ref = np.full(n, ref_block.size, dtype=np.int64)
    np.minimum.at(first_ref, ref_block, np.arange(ref_block.size, dtype=np.int64))
    group_first = np.full(n_groups, ref_block.size + 1, dtype=np.int64)
    np.minimum.at(group_first, label, first_ref)
    renumber = np.empty(n_groups, dtype=np.int64)
    renumber[np.argsort(group_first, kind="stable")] = np.arange(n_groups)
    block_group = renumber[label]

    slots = problem.slot_bytes
    order = np.lexsort((np.arange(n), -slots, block_group))
    block_ptr = np.concatenate(([0], np.cumsum(np.bincount(block_group, minlength=n_groups))))

    pair_keys, pair_counts = np.unique(
        block_group[ref_block] * max(n_tensors, 1) + ref_tensor, return_counts=True
    )
    pair_group = pair_keys // max(n_tensors, 1)
    group_size = np.diff(block_ptr)
    set_size = np.bincount(pair_group, minlength=n_groups)
    group_degree = np.zeros(n_groups, dtype=np.int64)
    group_degree[block_group] = degree
    if np.any(pair_counts != group_size[pair_group]) or np.any(set_size != group_degree):
        raise RuntimeError("sharing-set hash collision; please report this (it should never happen)")

    return SharingGroups(
        block_group=block_group,
        block_ptr=block_ptr.astype(np.int64),
        blocks=order.astype(np.int64),
        tensor_ptr=np.concatenate(([0], np.cumsum(set_size))).astype(np.int64),
        tensors=(pair_keys % max(n_tensors, 1)).astype(np.int64),
        slot_bytes=np.bincount(block_group, weights=slots, minlength=n_groups).astype(np.int64),
    )
