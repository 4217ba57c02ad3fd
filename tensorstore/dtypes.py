"""The dtypes the store accepts, and their stable names in the catalog.

Names follow the safetensors file format (``F32``, ``BF16`` ...) so that a catalog row
reads the same as a safetensors header. Values are stored little-endian whatever the
byte order of the array handed in; loads return native-order arrays.
"""

from __future__ import annotations

import functools

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
    # 8-bit floats (OCP FP8, as torch and safetensors name them); added last so that the
    # codes of the types above stay what stores already hold.
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
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


FLOAT_NAMES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})


@functools.lru_cache(maxsize=None)
def layout(name: str):
    """How ``codec`` splits blocks of dtype ``name`` into byte planes."""
    from .codec import Layout

    return Layout(DTYPES[name].itemsize, name in FLOAT_NAMES)


def layout_of_code(code: int):
    """``layout`` of the dtype with catalog code ``code``."""
    return layout(_BY_CODE[code])


_BY_CODE = {code: name for name, code in DTYPE_CODES.items()}
