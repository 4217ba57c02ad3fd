"""Exact duplicate detection: a 128-bit content hash per block.

Two blocks are the same block when their bytes and their *class* are equal. The class
(an integer the caller derives from dtype and row length) seeds the hash, so equal bytes
of a float32 block and an int32 block never collide into one representative: they are
different data that happen to share a bit pattern, and near-duplicate search must never
compare them.
"""

from __future__ import annotations

import mmh3

DIGEST_BYTES = 16


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
