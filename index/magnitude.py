"""Magnitude scores: which blocks matter least, and so are replaced first.

Following Zhou et al. (VLDB 2022), a block's score is an aggregate of its absolute values
divided by the same aggregate over its whole tensor. Normalising per tensor makes scores of
blocks from layers of very different scales comparable: a block is "small" when it is small
*for its tensor*. Low scores come first in the dedup order.

Statistics (``statistic=``):

``"max_abs"`` (default)
    largest ``|x|``. Chosen by measurement (``python -m tensorstore_index.magnitude_study``, see
    ``docs/index.md``): it kept accuracy best in every setting tried, including after a
    function-preserving rescale that plants an outlier unit.
``"rms"``
    root mean square, ``sqrt(mean x^2)``.
``"mean_abs"``
    mean ``|x|`` (the example statistic of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensorstore_index.errors import InvalidArgumentError, InvalidTypeError

STATISTICS = ("max_abs", "rms", "mean_abs")
DEFAULT_STATISTIC = "max_abs"


def magnitude_scores(
    blocks: np.ndarray | Sequence[np.ndarray], statistic: str = DEFAULT_STATISTIC
) -> np.ndarray:
    """Score every block of one tensor by its magnitude relative to the whole tensor.

    Parameters
    ----------
    blocks : 2-D array or sequence of 1-D arrays
        The blocks of one tensor. A sequence may hold blocks of different lengths (a short
        last block); the tensor statistic then weighs every element once.
    statistic : {"max_abs", "rms", "mean_abs"}
        The aggregate of absolute values.

    Returns
    -------
    np.ndarray
        float64 score per block: ``stat(block) / stat(tensor)``; all zeros for an all-zero
        tensor. A block holding NaN or inf scores ``inf`` (it goes last: never replace what
        cannot be measured), and it is left out of the tensor statistic.
    """
    if statistic not in STATISTICS:
        raise InvalidArgumentError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    flat, starts = _flatten(blocks)
    n = starts.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    sizes = np.diff(np.append(starts, flat.shape[0])).astype(np.float64)
    absolute = np.abs(flat)
    finite = np.logical_and.reduceat(np.isfinite(flat), starts)
    if statistic == "mean_abs":
        totals = np.add.reduceat(absolute, starts, dtype=np.float64)
        block_stat = totals / sizes
        tensor_stat = totals[finite].sum() / sizes[finite].sum() if finite.any() else 0.0
    elif statistic == "rms":
        totals = np.add.reduceat(np.square(absolute, dtype=np.float64), starts)
        block_stat = np.sqrt(totals / sizes)
        mean_square = totals[finite].sum() / sizes[finite].sum() if finite.any() else 0.0
        tensor_stat = np.sqrt(mean_square)
    else:
        block_stat = np.maximum.reduceat(absolute, starts).astype(np.float64)
        tensor_stat = block_stat[finite].max() if finite.any() else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = block_stat / tensor_stat if tensor_stat > 0 else np.zeros(n)
    scores[~finite] = np.inf
    return scores


def magnitude_order(scores: np.ndarray) -> np.ndarray:
    """Indices that put ``scores`` in increasing order (low magnitude first).

    The sort is stable, so equal scores keep their given order (for example, position in
    the model): the order is deterministic. NaN sorts last.
    """
    array = np.asarray(scores)
    if array.ndim != 1:
        raise InvalidArgumentError(f"scores must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InvalidTypeError(f"scores must be numeric, got dtype {array.dtype}")
    return np.argsort(array, kind="stable")


def _flatten(blocks: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All elements as one float32 array, and the offset where each block starts."""
    if isinstance(blocks, np.ndarray):
        if blocks.ndim != 2:
            raise InvalidArgumentError(
                f"blocks must be a 2-D array (n_blocks, block_len), got shape {blocks.shape}"
            )
        rows: list[np.ndarray] = list(blocks)
    elif isinstance(blocks, Sequence) and not isinstance(blocks, (str, bytes)):
        rows = [np.asarray(b) for b in blocks]
    else:
        raise InvalidTypeError(
            f"blocks must be a 2-D array or a sequence of arrays, got {type(blocks).__name__}"
        )
    for i, row in enumerate(rows):
        if row.dtype.kind in "OSUMmbc":  # objects, text, times, bools, complex
            raise InvalidTypeError(f"block {i} must be numeric, got dtype {row.dtype}")
        if row.size == 0:
            raise InvalidArgumentError(f"block {i} is empty")
    sizes = np.array([row.size for row in rows], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    if not rows:
        return np.empty(0, dtype=np.float32), sizes
    try:
        flat = np.concatenate([row.ravel() for row in rows]).astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"blocks cannot be cast to float32: {exc}") from exc
    return flat, starts
