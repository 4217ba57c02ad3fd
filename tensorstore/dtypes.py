"""The dtypes the store accepts, and their stable names in the catalog.

Names follow the safetensors file format (``F32``, ``BF16`` ...) so that a catalog row
reads the same as a safetensors header. Values are stored little-endian whatever the
byte order of the array handed in; loads return native-order arrays.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .errors import InvalidTensorError

# name -> numpy dtype (little-endian). The order is part of nothing; names are.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
# A small stable integer per dtype: the block class that seeds its content hash.
DTYPE_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(DTYPES)}

_BY_KEY = {(dt.kind, dt.itemsize, dt.name): n for n, dt in DTYPES.items()}


def dtype_name(dtype: np.dtype) -> str:
    """Return the catalog name of ``dtype``, or raise ``InvalidTensorError``."""
    dtype = np.dtype(dtype)
    name = _BY_KEY.get((dtype.kind, dtype.itemsize, dtype.newbyteorder("=").name))
    if name is None or dtype.fields is not None or dtype.subdtype is not None:
        supported = ", ".join(str(dt) for dt in DTYPES.values())
        raise InvalidTensorError(f"dtype {dtype} is not supported; use one of: {supported}")
    return name


def dtype_from_name(name: str) -> np.dtype:
    """Return the little-endian numpy dtype of a catalog dtype name."""
    try:
        return DTYPES[name]
    except KeyError:
        raise InvalidTensorError(f"unknown dtype name {name!r}; known: {', '.join(DTYPES)}") from None
