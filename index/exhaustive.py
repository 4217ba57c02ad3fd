"""Exhaustive (brute-force) near-duplicate matching: the reference the LSH is measured against.

It finds, for every query, the stored block with the lowest exact error over *all* stored
blocks, using the same tolerance objects (and so the same arithmetic) as
:meth:`index.lsh.LSHIndex.match`. Cost is ``queries x stored x dim``: for tests and
measurement, not for production use.
"""

from __future__ import annotations

import numpy as np

from tensorstore_index.checks import as_ids, as_vectors
from tensorstore_index.errors import InvalidArgumentError
from tensorstore_index.lsh import Matches
from tensorstore_index.tolerance import RelativeL2, Tolerance, as_tolerance

_CHUNK_BYTES = 64 << 20


def exhaustive_match(
    ids: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    tolerance: Tolerance | float,
    *,
    query_ids: np.ndarray | None = None,
) -> Matches:
    """Best stored vector within ``tolerance`` for each query, searching every pair.

    Parameters
    ----------
    ids : array of n ints
        Ids of the stored vectors.
    vectors : array, shape (n, d)
        Stored vectors.
    queries : array, shape (m, d)
        Query vectors.
    tolerance : Tolerance or float
        As in :meth:`index.lsh.LSHIndex.match`.
    query_ids : array of m ints, optional
        Each query's own id, never matched with itself.

    Returns
    -------
    Matches
        ``checked`` counts the pairs whose exact error was computed.
    """
    tol = as_tolerance(tolerance)
    stored = as_vectors(vectors)
    stored_ids = as_ids(ids, stored.shape[0])
    q = as_vectors(queries, "queries", dim=stored.shape[1])
    own = None if query_ids is None else as_ids(query_ids, q.shape[0], "query_ids")
    if stored.shape[0] != np.unique(stored_ids).shape[0]:
        raise InvalidArgumentError("ids must be unique")
    best_ids = np.full(q.shape[0], -1, dtype=np.int64)
    best_errors = np.full(q.shape[0], np.inf)
    checked = 0
    stored64 = stored.astype(np.float64)
    stored_sq = np.einsum("ij,ij->i", stored64, stored64)
    rows_per_chunk = max(1, _CHUNK_BYTES // (8 * max(1, stored.shape[0])))
    for start in range(0, q.shape[0], rows_per_chunk):
        block = q[start : start + rows_per_chunk]
        q_at, s_at = _shortlist(block, stored64, stored_sq, tol)
        q_at = q_at + start
        if own is not None:
            keep = stored_ids[s_at] != own[q_at]
            q_at, s_at = q_at[keep], s_at[keep]
        errors = np.empty(q_at.shape[0])
        pairs_per_chunk = max(1, _CHUNK_BYTES // (4 * q.shape[1]))
        for p in range(0, q_at.shape[0], pairs_per_chunk):
            part = slice(p, p + pairs_per_chunk)
            errors[part] = tol.errors(q[q_at[part]], stored[s_at[part]])
        checked += int(q_at.shape[0])
        accepted = errors <= tol.limit
        q_at, s_at, errors = q_at[accepted], s_at[accepted], errors[accepted]
        # Lowest error per query; among equal errors the earliest stored vector.
        order = np.lexsort((s_at, errors, q_at))
        queries_hit, first = np.unique(q_at[order], return_index=True)
        best_errors[queries_hit] = errors[order][first]
        best_ids[queries_hit] = stored_ids[s_at[order][first]]
    return Matches(ids=best_ids, errors=best_errors, checked=checked)


def _shortlist(
    queries: np.ndarray, stored64: np.ndarray, stored_sq: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, stored row) pairs that might be within tolerance.

    For relative L2, squared distances from one float64 matrix product rule out the pairs
    clearly beyond the limit (the slack covers float64 rounding); any other measure gets
    every pair.
    """
    if not isinstance(tol, RelativeL2):
        grid = np.indices((queries.shape[0], stored64.shape[0]))
        return grid[0].ravel(), grid[1].ravel()
    q = queries.astype(np.float64)
    q_sq = np.einsum("ij,ij->i", q, q)[:, None]
    squared = q_sq + stored_sq[None, :] - 2.0 * (q @ stored64.T)
    bound = (tol.max_error**2) * q_sq + 1e-9 * (q_sq + stored_sq[None, :]) + 1e-30
    return np.nonzero(squared <= bound)
