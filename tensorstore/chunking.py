"""Chunking: a tensor's bytes cut into blocks, and the blocks put back together.

Blocks are *row-aligned contiguous* runs of the tensor's C-order bytes: a block holds as
many whole rows (slices along the first axis) as fit in ``block_bytes``; a row longer than
a block is cut at element boundaries. Only a tensor's last block may be shorter, so small
tensors and tails cost their own size and no padding. ``docs/chunking.md`` has the
measurement behind this choice over the 2-D tiles of the VLDB paper.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import numpy as np

from .dtypes import dtype_name, DTYPES
from .errors import InvalidTensorError


def block_step(shape: tuple[int, ...], itemsize: int, block_bytes: int) -> int:
    """Bytes in each full block of a tensor of ``shape`` (the last block may be shorter).

    Rows (slices along axis 0) are kept whole when one fits in a block, so that blocks of
    a matrix line up with its rows, the unit fine-tuning tends to change or leave alone.
    """
    row = itemsize * math.prod(shape[1:]) if len(shape) >= 2 else itemsize
    if 0 < row <= block_bytes:
        return (block_bytes // row) * row
    return max(itemsize, (block_bytes // itemsize) * itemsize)


def block_spans(nbytes: int, step: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` byte offsets of the blocks of an ``nbytes`` tensor."""
    for start in range(0, nbytes, step):
        yield start, min(start + step, nbytes)


def canonical(value: object, what: str) -> np.ndarray:
    """Return ``value`` as a C-contiguous little-endian array of a supported dtype.

    Accepts numpy arrays, torch tensors of every dtype the store keeps (on any device, see
    :mod:`tensorstore.torch`), and anything exposing ``__array__``, the array interface or
    the buffer protocol (numpy scalars, memoryviews). Python lists, strings
    and other objects are refused rather than guessed at: a storage engine should not
    choose a dtype for the caller.
    """
    torch = sys.modules.get("torch")  # a torch tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        from .torch import to_numpy  # bf16/fp8 bits, any device, autograd state dropped

        value = to_numpy(value, what)
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (str, bytes, bytearray)) or not (
        hasattr(value, "__array__") or hasattr(value, "__array_interface__") or isinstance(value, memoryview)
    ):
        raise InvalidTensorError(
            f"{what} is a {type(value).__name__}, not an array; pass a numpy array "
            "(or an object with __array__, such as a CPU torch tensor)"
        )
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # a foreign object whose __array__ fails
            raise InvalidTensorError(f"{what} could not be converted to a numpy array: {exc}") from exc
    if arr.dtype.hasobject:
        raise InvalidTensorError(f"{what} has dtype {arr.dtype} (Python objects); only numeric and bool arrays can be stored")
    if arr.dtype.kind in "USMm":
        raise InvalidTensorError(
            f"{what} has dtype {arr.dtype} (strings, raw bytes or dates); only numeric and bool arrays can be stored"
        )
    target = DTYPES[dtype_name(arr.dtype)]
    if arr.dtype != target:  # non-native byte order: store little-endian values
        arr = arr.astype(target)
    # Not np.ascontiguousarray: it turns a 0-d array into a 1-d one.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def as_bytes(arr: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (no copy)."""
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
