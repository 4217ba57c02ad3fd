"""Input checks shared by the modules of ``index``: arrays, ids and plain numbers.

Kept in one place so that every public function rejects bad input with the same wording.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from tensorstore_index.errors import InvalidArgumentError, InvalidTypeError


def as_vectors(vectors: object, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 matrix of shape ``(n, d)``.

    Any numeric dtype numpy can cast to float32 is accepted (float16, bfloat16 from
    ml_dtypes, integers), so the caller can pass blocks as they are stored.

    Raises
    ------
    InvalidTypeError
        If the input is not array-like or its dtype cannot be cast to float32.
    InvalidArgumentError
        If it is not two-dimensional, or ``dim`` is given and the width differs.
    """
    try:
        array = np.asarray(vectors)
    except Exception as exc:  # ragged lists and the like
        raise InvalidTypeError(f"{name} must be a 2-D numeric array: {exc}") from exc
    if array.dtype.kind in "OSUMmbc":  # objects, text, times, bools, complex
        raise InvalidTypeError(f"{name} must be numeric, got dtype {array.dtype}")
    if array.ndim != 2:
        raise InvalidArgumentError(
            f"{name} must be 2-D (n, d), got shape {array.shape}"
        )
    if dim is not None and array.shape[1] != dim:
        raise InvalidArgumentError(
            f"{name} have dimension {array.shape[1]} but this index holds dimension {dim}; "
            "keep one index per block class (dtype and block length)"
        )
    try:
        return np.ascontiguousarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} of dtype {array.dtype} cannot be cast to float32") from exc


def as_ids(ids: object, n: int, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array of length ``n`` with no negative entry.

    ``-1`` is this package's "no candidate" marker, so ids must be non-negative.
    """
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} must be integers, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != n:
        raise InvalidArgumentError(
            f"{name} must be 1-D with one id per vector ({n}), got shape {array.shape}"
        )
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"{name} must fit in int64")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise InvalidArgumentError(f"{name} must be non-negative (-1 means 'no candidate')")
    return array


def as_real(value: object, name: str) -> float:
    """Return ``value`` as a finite float; bools and non-numbers are a type error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidArgumentError(f"{name} must be finite, got {result}")
    return result


def as_count(value: object, name: str, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` that is at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    result = int(value)
    if result < minimum:
        raise InvalidArgumentError(f"{name} must be at least {minimum}, got {result}")
    return result
