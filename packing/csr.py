"""Small vectorised helpers for CSR (compressed sparse row) index structures."""

from __future__ import annotations

import numpy as np


def row_of_entries(ptr: np.ndarray) -> np.ndarray:
    """Row index of every entry of a CSR structure with offsets `ptr`."""
    return np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))


def gather_rows(ptr: np.ndarray, data: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the CSR rows `rows`, in that order.

    Returns
    -------
    position : numpy.ndarray
        For each gathered entry, the position in `rows` of the row it came from.
    values : numpy.ndarray
        The gathered entries of `data`.
    """
    rows = np.asarray(rows, dtype=np.int64)
    lengths = ptr[rows + 1] - ptr[rows]
    position = np.repeat(np.arange(rows.size, dtype=np.int64), lengths)
    # index of each gathered entry = its row's start + its rank within the row
    starts = np.repeat(ptr[rows] - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return position, data[starts + np.arange(position.size, dtype=np.int64)]


def unique_pairs(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (row, col) pairs, sorted by row then col."""
    keys = np.unique(rows.astype(np.int64) * max(n_cols, 1) + cols)
    return keys // max(n_cols, 1), keys % max(n_cols, 1)
