"""Exact duplicate detection: a 128-bit content hash per block.

Two blocks are the same block when their bytes and their *class* are equal. The class
(an integer the caller derives from dtype and row length) seeds the hash, so equal bytes
of a float32 block and an int32 block never collide into one representative: they are
different data that happen to share a bit pattern, and near-duplicate search must never
compare them.
"""

from __future__ import annotations

import ctypes

import blake3
import mmh3
import numpy as np

DIGEST_BYTES = 16
STRONG_DIGEST_BYTES = 32


def block_digest(data, block_class: int = 0) -> bytes:
    """Return the 16-byte MurmurHash3 x64-128 digest of ``data`` seeded by its class.

    Parameters
    ----------
    data : bytes-like
        The block's bytes (``bytes``, a C-contiguous ``memoryview`` or numpy array).
    block_class : int
        A 32-bit unsigned class id; blocks of different classes never share a digest.
    """
    return mmh3.mmh3_x64_128_digest(data, block_class & 0xFFFFFFFF)


def strong_digest(data) -> bytes:
    """Return the 32-byte BLAKE3 digest of ``data``.

    MurmurHash3 finds candidates fast but is not collision resistant: blocks with equal
    digests and different bytes can be constructed. Where comparing the bytes themselves
    would cost a decode, this digest confirms a match instead (4 GB/s on one core here,
    against 1.2 for SHA-256).
    """
    return blake3.blake3(data).digest()


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def same_bytes(a, b) -> bool:
    """Whether two bytes-like objects hold the same bytes (libc ``memcmp``: about 3x
    faster than ``bytes(a) == bytes(b)``, 40x faster than comparing memoryviews)."""
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    return len(x) == len(y) and (len(x) == 0 or _memcmp(x.ctypes.data, y.ctypes.data, len(x)) == 0)
