"""Classic one-dimensional bin-packing heuristics on arrays of sizes.

Both return, for each item, the index of the bin (page) it goes in; bins are numbered
``0, 1, ...`` in the order they are opened.
"""

from __future__ import annotations

import bisect

import numpy as np


def next_fit(sizes: np.ndarray, capacity: int, starts: np.ndarray | None = None) -> np.ndarray:
    """Fill bins in item order, opening a new bin when the next item does not fit.

    Parameters
    ----------
    sizes : numpy.ndarray
        Item sizes, each at most `capacity`.
    capacity : int
        Bin capacity.
    starts : numpy.ndarray, optional
        Item positions that must open a new bin (segment starts).

    Returns
    -------
    numpy.ndarray
        ``(len(sizes),)`` int64 bin of each item.
    """
    n = sizes.size
    bins = np.empty(n, dtype=np.int64)
    cum = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
    breaks = np.unique(np.concatenate(([n], [] if starts is None else starts))).astype(np.int64)
    i, b = 0, 0
    # One iteration per bin: the items that fit are found by binary search on the
    # running total, so the loop costs O(bins log n), not O(items).
    while i < n:
        end = int(np.searchsorted(cum, cum[i] + capacity, side="right")) - 1
        segment_end = int(breaks[np.searchsorted(breaks, i, side="right")])
        end = max(min(end, segment_end), i + 1)
        bins[i:end] = b
        b += 1
        i = end
    return bins


def best_fit_decreasing(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """Put each item, largest first, in the open bin it fills most tightly.

    Parameters
    ----------
    sizes : numpy.ndarray
        Item sizes, each at most `capacity`.
    capacity : int
        Bin capacity.

    Returns
    -------
    numpy.ndarray
        ``(len(sizes),)`` int64 bin of each item.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    bins = np.empty(n, dtype=np.int64)
    if n == 0:
        return bins
    order = np.lexsort((np.arange(n), -sizes))  # largest first, ties by position
    smallest = int(sizes.min())  # no later item is smaller than this
    free: list[int] = []  # free space of the open bins, ascending
    ids: list[int] = []  # bin id of each entry of `free`
    n_bins = 0
    for i in order.tolist():
        s = int(sizes[i])
        k = bisect.bisect_left(free, s)
        if k < len(free):
            b, left = ids.pop(k), free.pop(k) - s
        else:
            b, left = n_bins, capacity - s
            n_bins += 1
        bins[i] = b
        if left >= smallest:  # a bin no item can enter again is closed for good
            k = bisect.bisect_left(free, left)
            free.insert(k, left)
            ids.insert(k, b)
    return bins
