"""Block encodings: how a distinct block's bytes are kept in its page.

Three encodings, chosen per block at write time, whichever is smallest:

``raw``
    The bytes as they are.
``packed``
    The bytes split into *byte planes* by position within the element (plane ``j`` holds
    byte ``j`` of every element), each plane compressed with zstd. Float bits are first
    rotated left by one, so the sign moves to the lowest bit and the exponent fills the
    top byte: exponents of trained weights take few values and compress well, mantissa
    bytes look random and stay about their size (ZipNN's byte grouping).
``delta``
    The XOR of the block with a *reference block* of the same dtype and length, then
    packed as above. Where a fine-tune moved a weight a little, sign, exponent and the top
    mantissa bits are equal and XOR to zero (ZipLLM's BitX).

Every encoding is lossless, bit for bit, for every dtype (NaN payloads, -0.0, subnormals):
the transforms are permutations of bits and XOR. An encoded payload is::

    plane header * k   (LEB128 varint: body length << 2 | kind; kind 0: a zstd frame
                        without magic number, 1: the plane as it is, 2: all zeros, no body)
    plane bodies, in order
    tail               (bytes past the last whole element, XOR-ed for a delta: never
                        from the store, whose blocks hold whole elements)

Blocks are small (64 KiB) and many, so the fixed cost of each is kept down: a few bytes of
header, frames without the 4-byte magic, nothing for a plane a delta left all zero. On
the sparse-embedding family this keeps a block-wise delta within about 2% of one delta of
the whole tensor (``docs/benchmarks.md``, Encodings).

This module knows bytes and dtypes' widths; it knows nothing of pages, blocks or models.
It encodes and decodes in the calling thread (see ``decode_many`` and ``choose_many`` for
the measurements that say why).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import zstandard

RAW, PACKED, DELTA = 0, 1, 2
NAMES = ("raw", "packed", "delta")
# zstd level 1: levels 3 and 6 keep 0.1-0.4% fewer bytes of MiniLM weights and deltas
# and encode 1.6-2.8x slower (docs/benchmarks.md, Encodings).
LEVEL = 1
# Keep a block raw unless an encoding saves at least this fraction: a decode costs time at
# every cold load, a few bytes saved do not pay for it.
MIN_SAVING = 0.05

_ZSTD, _AS_IS, _ZEROS = 0, 1, 2
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:  # zstd contexts are not thread-safe: one per thread
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
            write_dict_id=False,
        )
        c = _local.c = zstandard.ZstdCompressor(compression_params=params)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    return d


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if at >= len(buf) or shift > 35:
            raise ValueError("an encoded block's header is cut short or malformed")
        byte = buf[at]
        n |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return n, at
        shift += 7


class Layout:
    """How a dtype's elements are split: ``width`` bytes per element (1 for bool and
    8-bit types: one plane, compressed as is) and whether the bits are a float's."""

    __slots__ = ("width", "is_float")

    def __init__(self, width: int, is_float: bool) -> None:
        if width not in _UINT:
            raise ValueError(f"element width must be 1, 2, 4 or 8 bytes, not {width}")
        self.width = width
        self.is_float = is_float and width > 1

    def __repr__(self) -> str:
        return f"Layout(width={self.width}, is_float={self.is_float})"


def _words(data, width: int, n: int) -> np.ndarray:
    return np.frombuffer(data, dtype=_UINT[width], count=n // width)


def _rotl(words: np.ndarray, width: int) -> np.ndarray:
    bits = 8 * width
    return (words << 1) | (words >> (bits - 1))


def _planes(words: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """Byte ``j`` of every element, for each ``j``: one contiguous plane each."""
    if layout.is_float:
        words = _rotl(words, layout.width)
    grid = words.view(np.uint8).reshape(-1, layout.width)
    # One strided copy per plane: 6x faster than a transposed copy of the whole grid.
    return [grid[:, j].copy() for j in range(layout.width)]


def _pack(planes: list[np.ndarray | None], tail) -> bytes:
    """The payload of planes (None: a plane of zeros) and a tail (bytes-like)."""
    c = _compressor()
    heads, bodies = [], []
    for plane in planes:
        if plane is None or not plane.any():
            heads.append(_varint(_ZEROS))
            continue
        raw = plane.data
        z = c.compress(raw)
        if len(z) < len(plane):
            heads.append(_varint(len(z) << 2 | _ZSTD))
            bodies.append(z)
        else:
            heads.append(_varint(len(plane) << 2 | _AS_IS))
            bodies.append(raw)
    return b"".join([*heads, *bodies, bytes(tail)])


def _split(data, layout: Layout) -> tuple[list[np.ndarray], np.ndarray]:
    """The planes of ``data`` (bytes-like) and its tail (bytes past the last element)."""
    n = len(data)
    whole = n - n % layout.width
    return _planes(_words(data, layout.width, whole), layout), np.frombuffer(data, dtype=np.uint8, offset=whole)


def _xor(planes: list, tail: np.ndarray, ref_planes: list, ref_tail: np.ndarray) -> tuple[list, np.ndarray]:
    """Planes XOR-ed with a reference's (None: a plane of zeros)."""
    out = [r if p is None else p if r is None else p ^ r for p, r in zip(planes, ref_planes)]
    return out, tail ^ ref_tail


def encode(data, layout: Layout, ref=None) -> bytes:
    """The ``packed`` encoding of ``data`` (bytes-like), or ``delta`` against ``ref``
    (bytes-like of the same length) when it is given.

    A length that is not a multiple of the element width (never from the store) keeps
    its last bytes as a raw tail.
    """
    planes, tail = _split(data, layout)
    if ref is not None:
        if len(ref) != len(data):
            raise ValueError(f"a delta reference must be as long as the block ({len(ref)} != {len(data)} bytes)")
        planes, tail = _xor(planes, tail, *_split(ref, layout))
    return _pack(planes, tail)


def _unpack(payload, n: int, layout: Layout) -> tuple[list[np.ndarray | None], np.ndarray]:
    """The planes of an ``encode`` payload (None for a plane of zeros) and its tail."""
    width = layout.width
    count = n // width
    payload = memoryview(payload)
    heads, at = [], 0
    for _ in range(width):
        head, at = _read_varint(payload, at)
        heads.append(head)
    d = _decompressor()
    planes: list[np.ndarray | None] = []
    for head in heads:
        kind, size = head & 3, head >> 2
        if kind == _ZEROS:
            planes.append(None)
            continue
        plane = payload[at : at + size]
        if len(plane) != size or kind not in (_ZSTD, _AS_IS):
            raise ValueError("an encoded block is cut short or malformed")
        if kind == _ZSTD:
            try:
                plane = d.decompress(plane, max_output_size=count)
            except zstandard.ZstdError as exc:
                raise ValueError(f"a plane does not decompress ({exc})") from None
        if len(plane) != count:
            raise ValueError(f"a plane holds {len(plane)} bytes where {count} are needed")
        planes.append(np.frombuffer(plane, dtype=np.uint8))
        at += size
    tail = np.frombuffer(payload[at:], dtype=np.uint8)
    if len(tail) != n - count * width:
        raise ValueError(f"an encoded block of {n} bytes has {len(tail)} tail bytes")
    return planes, tail


def _interleave(planes: list[np.ndarray | None], tail: np.ndarray, layout: Layout, out: np.ndarray,
                ref_planes: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Put planes back together into elements (undoing the float rotation) in ``out``,
    each XOR-ed on the way with the matching plane of ``ref_planes`` if given."""
    width = layout.width
    count = (len(out) - len(tail)) // width
    body = out[: count * width]
    grid = body.reshape(count, width)
    for j, plane in enumerate(planes):
        # Planes are written into place as strided columns: 6x faster than a transpose;
        # a reference's plane is XOR-ed in the same pass.
        theirs = None if ref_planes is None else ref_planes[j]
        if plane is not None and theirs is not None:
            np.bitwise_xor(plane, theirs, out=grid[:, j])
        else:
            mine = plane if plane is not None else theirs
            grid[:, j] = 0 if mine is None else mine
    out[count * width :] = tail
    if layout.is_float:
        words = body.view(_UINT[width])
        low = words >> 1
        words <<= 8 * width - 1
        words |= low
    return out


def decode(payload, n: int, layout: Layout, ref=None, out: np.ndarray | None = None, ref_payload=None) -> np.ndarray:
    """Decode an ``encode`` payload of an ``n``-byte block into ``out`` (uint8, ``n``
    long; a new array if not given). A delta needs its reference: as bytes (``ref``),
    or as the ``packed`` payload it is stored as (``ref_payload``: XOR-ed plane by plane,
    so the reference is never put together on its own).

    Raises ``ValueError`` when the payload does not decode to exactly ``n`` bytes.
    """
    out = np.empty(n, dtype=np.uint8) if out is None else out
    planes, tail = _unpack(payload, n, layout)
    ref_planes = None
    if ref_payload is not None:
        # XOR commutes with the plane split and the rotation: planes are combined as
        # they are interleaved, once.
        ref_planes, ref_tail = _unpack(ref_payload, n, layout)
        tail = tail ^ ref_tail
    _interleave(planes, tail, layout, out, ref_planes)
    if ref is not None:
        width = layout.width
        whole = n - n % width
        words = out[:whole].view(_UINT[width])
        words ^= _words(ref, width, whole)
        out[whole:] ^= np.frombuffer(ref, dtype=np.uint8, offset=whole)
    return out


def choose(data, layout: Layout, refs=()) -> tuple[int, bytes | None, int]:
    """The smallest encoding of ``data``: ``(encoding, payload, index of the reference)``.

    Tries ``packed`` and ``delta`` against each of ``refs`` (bytes-like, raw); returns
    ``(RAW, None, -1)`` unless one saves at least ``MIN_SAVING`` of the block's bytes.
    """
    return _choose(data, layout, [(ref, RAW) for ref in refs])


def _choose(data, layout: Layout, refs: list[tuple[object, int]]) -> tuple[int, bytes | None, int]:
    """``choose`` against references as stored (``RAW`` or ``PACKED`` bytes). The block
    is split into planes once; a packed reference is only unpacked (its planes XOR the
    block's), never put back together."""
    n = len(data)
    planes, tail = _split(data, layout)
    best, payload, which = RAW, None, -1
    limit = n * (1 - MIN_SAVING)
    for i, (ref, encoding) in enumerate(refs):
        if len(ref) != n and encoding == RAW:
            raise ValueError(f"a delta reference must be as long as the block ({len(ref)} != {n} bytes)")
        theirs = _split(ref, layout) if encoding == RAW else _unpack(ref, n, layout)
        z = _pack(*_xor(planes, tail, *theirs))
        if len(z) <= limit:
            best, payload, which, limit = DELTA, z, i, len(z)
    # Packing keeps 0.8-0.9 of trained float32 weights: a delta under three quarters of the
    # block will beat it, so skip the attempt (it would cost as much time again).
    if best != DELTA or limit > 0.75 * n:
        z = _pack(planes, tail)
        if len(z) <= limit:
            best, payload, which = PACKED, z, -1
    return best, payload, which


# -- many blocks at once --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Job:
    """One new block to encode: its bytes and the candidate references, each as stored
    (``stored`` bytes in ``encoding``, ``RAW`` or ``PACKED``; never a delta)."""

    data: object
    refs: list[tuple[object, int]]


def choose_many(jobs: list[Job], layout: Layout) -> list[tuple[int, bytes | None, int]]:
    """``choose`` for each job, in this thread, or on the executor of
    ``tensorstore.executor.encoding_on`` (e.g. Ray workers)."""
    from .executor import encoding_executor, run_chunked

    elsewhere = encoding_executor()
    if elsewhere is not None and jobs:
        portable = [Job(bytes(j.data), [(bytes(stored), enc) for stored, enc in j.refs]) for j in jobs]
        return run_chunked(elsewhere, choose_jobs, portable, layout)

    # In this thread: python-zstandard 0.25 holds the GIL while it compresses, so threads
    # only added handoffs (800 MiniLM blocks, quiet 2 cores: 217-283 us a block in one
    # thread, 277-349 on two).
    return [_choose(j.data, layout, j.refs) for j in jobs]


def choose_jobs(jobs: list[Job], layout: Layout) -> list[tuple[int, bytes | None, int]]:
    """``choose`` for each job, one after another (a task of ``choose_many`` elsewhere)."""
    return [_choose(j.data, layout, j.refs) for j in jobs]


@dataclass(frozen=True, slots=True)
class DecodeJob:
    """One encoded block to decode into ``out`` (a uint8 view as long as the block): its
    payload, its dtype's ``layout`` and, for a delta, its reference as stored
    (``(bytes, RAW or PACKED)``). ``what`` names it in an error."""

    payload: object
    ref: tuple[object, int] | None
    layout: Layout
    out: np.ndarray
    what: str = "a block"


def decode_many(jobs: list[DecodeJob]) -> None:
    """Decode each job into its ``out``, in this thread. Raises ``ValueError`` naming the
    first job that does not decode.

    One thread: a 64 KiB block's decode is a few zstd calls of 20-40 us and numpy copies
    of a few us each, and at that grain two threads pass the GIL back and forth more than
    they overlap (quiet 2-core machine: 170-230 us a delta block in one thread, 300-350 us
    on two; docs/benchmarks.md, Encodings).
    """
    for job in jobs:
        raw_ref = packed_ref = None
        if job.ref is not None:
            stored, encoding = job.ref
            raw_ref, packed_ref = (stored, None) if encoding == RAW else (None, stored)
        try:
            decode(job.payload, len(job.out), job.layout, raw_ref, job.out, packed_ref)
        except ValueError as exc:
            raise ValueError(f"{job.what}: {exc}") from None
