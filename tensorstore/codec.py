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
    The difference of the block and a *reference block* of the same dtype and length,
    element by element as integers of the element's width (modulo 2^bits; zigzag, so the
    sign sits in the lowest bit), then split into planes and compressed as above. Where a
    fine-tune moved a weight a little, the difference is a small integer: its high bytes
    are zero. ZipLLM's BitX XORs instead; a carry out of the low mantissa bits sets the
    XOR's higher bits, so the difference keeps fine-tuned MiniLM's deltas 4.4-4.7% smaller
    (``docs/benchmarks.md``, Encoded blocks). Format 3 and earlier wrote XOR deltas; they
    still decode (a difference starts with the byte 3, which no XOR delta can).

Every encoding is lossless, bit for bit, for every dtype (NaN payloads, -0.0, subnormals):
the transforms are permutations of bits, XOR and addition modulo 2^bits. An encoded
payload is::

    [0x03]             (a delta that is a difference; kind 3 is no plane header's)
    plane header * k   (LEB128 varint: body length << 2 | kind; kind 0: a zstd frame
                        without magic number, 1: the plane as it is, 2: all zeros, no body)
    plane bodies, in order
    tail               (bytes past the last whole element, XOR-ed for a delta: never
                        from the store, whose blocks hold whole elements)

Blocks are small (64 KiB) and many, so the fixed cost of each is kept down: a few bytes of
header, frames without the 4-byte magic, nothing for a plane a delta left all zero. On
the sparse-embedding family this keeps a block-wise delta within about 2% of one delta of
the whole tensor (``docs/benchmarks.md``, Encoded blocks, per-block against per-tensor).

This module knows bytes and dtypes' widths; it knows nothing of pages, blocks or models.
Its numpy code below is the specification. Where the package was built with a C compiler,
``_codec_kernel.c`` does the same work (the tests hold both to the same bytes and the same
errors) in one call a block that lets go of the GIL (decode 2.4x, encode 1.4-1.6x faster on
one core: ``python -m tensorstore.bench.codec_speed``), and batches
of blocks are spread over threads (``choose_many``, ``decode_many``). ``KERNEL`` is the
kernel, or None where numpy does the work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import threads, zstdframes

try:  # the same work in C, one GIL-free call a block (_codec_kernel.c): built at install
    from . import _codec_kernel as KERNEL
except ImportError:  # pragma: no cover - installed where nothing compiled it
    KERNEL = None
if KERNEL is not None and (zstdframes.functions() is None or sys.byteorder != "little"):
    KERNEL = None  # pragma: no cover - python-zstandard without cffi, or a big-endian machine
if KERNEL is not None:
    KERNEL.set_zstd(*zstdframes.functions())

RAW, PACKED, DELTA = 0, 1, 2
NAMES = ("raw", "packed", "delta")
LEVEL = zstdframes.LEVEL
# Keep a block raw unless an encoding saves at least this fraction: a decode costs time at
# every cold load, a few bytes saved do not pay for it.
MIN_SAVING = 0.05

_ZSTD, _AS_IS, _ZEROS = 0, 1, 2
# The first byte of a delta that is an arithmetic difference; no plane header is 3 (kind 3
# is unused), so a delta without it is the XOR of format 3 and earlier.
_DIFF = b"\x03"
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
# Blocks a share of ``choosing`` encodes in one kernel call: about 4 ms of work, small
# enough that the caller, once free, finds shares left to take over, large enough that a
# pool thread seldom waits for the GIL (up to 5 ms each time while the caller runs Python).
_SHARE = 32


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
    heads, bodies = [], []
    for plane in planes:
        if plane is None or not plane.any():
            heads.append(_varint(_ZEROS))
            continue
        raw = plane.data
        z = zstdframes.compress(plane)
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


_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_PLAIN = {w: Layout(w, False) for w in _UINT}  # a difference's planes: whole integers, no rotation


def _difference(data, ref, layout: Layout) -> tuple[list[np.ndarray], np.ndarray]:
    """The planes of ``data - ref`` element by element (integers modulo 2^bits, zigzag:
    the sign in the lowest bit) and the XOR of their tails."""
    width = layout.width
    n = len(data)
    whole = n - n % width
    z = _words(data, width, whole) - _words(ref, width, whole)
    s = z.view(_SIGNED[width])
    sign = s >> (8 * width - 1)
    s <<= 1
    s ^= sign
    tail = np.frombuffer(data, dtype=np.uint8, offset=whole) ^ np.frombuffer(ref, dtype=np.uint8, offset=whole)
    return _planes(z, _PLAIN[width]), tail


def encode(data, layout: Layout, ref=None) -> bytes:
    """The ``packed`` encoding of ``data`` (bytes-like), or ``delta`` against ``ref``
    (bytes-like of the same length) when it is given.

    A length that is not a multiple of the element width (never from the store) keeps
    its last bytes as a raw tail.
    """
    if ref is not None and len(ref) != len(data):
        raise ValueError(f"a delta reference must be as long as the block ({len(ref)} != {len(data)} bytes)")
    return _encoded(data, layout, ref, RAW)


def _encoded(data, layout: Layout, ref, encoding: int) -> bytes:
    """``encode`` against a reference as stored (``RAW`` or ``PACKED`` bytes), or packed."""
    if KERNEL is not None:
        return KERNEL.encode(data, layout.width, layout.is_float, ref, encoding == PACKED, *zstdframes.contexts())
    if ref is None:
        return _pack(*_split(data, layout))
    if encoding == PACKED:
        ref = _unpacked(ref, len(data), layout, np.empty(len(data), dtype=np.uint8))
    return _DIFF + _pack(*_difference(data, ref, layout))


def encode_xor(data, layout: Layout, ref) -> bytes:
    """A delta as the XOR of ``data`` and ``ref``, packed: what format 3 and earlier
    stored (``decode`` reads it still), and ZipLLM's BitX (the baseline of the benchmarks)."""
    if len(ref) != len(data):
        raise ValueError(f"a delta reference must be as long as the block ({len(ref)} != {len(data)} bytes)")
    (mine, tail), (theirs, ref_tail) = _split(data, layout), _split(ref, layout)
    return _pack([a ^ b for a, b in zip(mine, theirs)], tail ^ ref_tail)


def _bodies(payload, width: int) -> tuple[list[tuple[int, memoryview]], memoryview]:
    """An ``encode`` payload's planes as ``(kind, body)`` and its tail."""
    payload = memoryview(payload)
    heads, at = [], 0
    for _ in range(width):
        head, at = _read_varint(payload, at)
        heads.append(head)
    planes = []
    for head in heads:
        kind, size = head & 3, head >> 2
        body = payload[at : at + size]
        if len(body) != size or kind not in (_ZSTD, _AS_IS, _ZEROS):
            raise ValueError("an encoded block is cut short or malformed")
        planes.append((kind, body))
        at += size
    return planes, payload[at:]


def _unpack(payload, n: int, layout: Layout) -> tuple[list[np.ndarray | None], np.ndarray]:
    """The planes of an ``encode`` payload (None for a plane of zeros) and its tail.

    A compressed plane is decompressed into a new array; a plane kept as it is is a view
    of ``payload``.
    """
    width = layout.width
    count = n // width
    bodies, tail = _bodies(payload, width)
    planes: list[np.ndarray | None] = []
    scratch = None
    for j, (kind, body) in enumerate(bodies):
        if kind == _ZEROS:
            planes.append(None)
        elif kind == _ZSTD:
            if scratch is None:
                scratch = np.empty((width, count), dtype=np.uint8)
            zstdframes.decompress_into(body, scratch[j])
            planes.append(scratch[j])
        elif len(body) != count:
            raise ValueError(f"a plane holds {len(body)} bytes where {count} are needed")
        else:
            planes.append(np.frombuffer(body, dtype=np.uint8))
    tail = np.frombuffer(tail, dtype=np.uint8)
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
    or as the ``packed`` payload it is stored as (``ref_payload``).

    Raises ``ValueError`` when the payload does not decode to exactly ``n`` bytes.
    """
    out = np.empty(n, dtype=np.uint8) if out is None else out
    if KERNEL is not None:
        if len(out) != n:
            raise ValueError(f"the output holds {len(out)} bytes where {n} are needed")
        stored = ref_payload if ref_payload is not None else ref
        KERNEL.decode(payload, out, layout.width, layout.is_float, stored, ref_payload is not None,
                      zstdframes.contexts()[1])
        return out
    if (ref is not None or ref_payload is not None) and payload[:1] == _DIFF:
        return _add_difference(memoryview(payload)[1:], n, layout, ref, out, ref_payload)
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


def _unpacked(payload, n: int, layout: Layout, out: np.ndarray) -> np.ndarray:
    """A ``packed`` payload (no reference) decoded into ``out``."""
    return _interleave(*_unpack(payload, n, layout), layout, out)


def _add_difference(payload, n: int, layout: Layout, ref, out: np.ndarray, ref_payload) -> np.ndarray:
    """``out`` = the reference + the zigzag differences of ``payload``."""
    width = layout.width
    whole = n - n % width
    if ref_payload is not None:
        _unpacked(ref_payload, n, layout, out)
    else:
        out[:] = np.frombuffer(ref, dtype=np.uint8, count=n)
    plain = _PLAIN[width]
    planes, tail = _unpack(payload, n, plain)
    z = _interleave(planes, np.empty(0, dtype=np.uint8), plain, np.empty(whole, dtype=np.uint8)).view(_UINT[width])
    low = z & 1
    z >>= 1
    np.negative(low, out=low)  # 0 or every bit set
    z ^= low
    words = out[:whole].view(_UINT[width])
    words += z
    out[whole:] ^= tail
    return out


def choose(data, layout: Layout, refs=()) -> tuple[int, bytes | None, int]:
    """The smallest encoding of ``data``: ``(encoding, payload, index of the reference)``.

    Tries ``packed`` and ``delta`` against each of ``refs`` (bytes-like, raw); returns
    ``(RAW, None, -1)`` unless one saves at least ``MIN_SAVING`` of the block's bytes.
    """
    return _choose(data, layout, [(ref, RAW) for ref in refs])


def _choose(data, layout: Layout, refs: list[tuple[object, int]]) -> tuple[int, bytes | None, int]:
    """``choose`` against references as stored (``RAW`` or ``PACKED`` bytes)."""
    n = len(data)
    best, payload, which = RAW, None, -1
    limit = n * (1 - MIN_SAVING)
    for i, (ref, encoding) in enumerate(refs):
        if len(ref) != n and encoding == RAW:
            raise ValueError(f"a delta reference must be as long as the block ({len(ref)} != {n} bytes)")
        z = _encoded(data, layout, ref, encoding)
        if len(z) <= limit:
            best, payload, which, limit = DELTA, z, i, len(z)
    # Packing keeps 0.8-0.9 of trained float32 weights: a delta under three quarters of the
    # block will beat it, so skip the attempt (it would cost as much time again).
    if best != DELTA or limit > 0.75 * n:
        z = _encoded(data, layout, None, RAW)
        if len(z) <= limit:
            best, payload, which = PACKED, z, -1
    return best, payload, which


# -- many blocks at once --------------------------------------------------------------
#
# With the C kernel a block is one call that lets go of the GIL, so blocks are spread over
# threads (``threads.spread``). Without it they stay in the calling thread: numpy's dozen
# short calls a block passed the GIL back and forth more than the work overlapped
# (``python -m tensorstore.bench.codec_speed``, docs/benchmarks.md).

@dataclass(frozen=True, slots=True)
class Job:
    """One new block to encode: its bytes and the candidate references, each as stored
    (``stored`` bytes in ``encoding``, ``RAW`` or ``PACKED``; never a delta)."""

    data: object
    refs: list[tuple[object, int]]


def choose_many(jobs: list[Job], layout: Layout) -> list[tuple[int, bytes | None, int]]:
    """``choose`` for each job, on this process's threads, or on the executor of
    ``tensorstore.executor.encoding_on`` (e.g. Ray workers)."""
    return [r[:3] for r in choosing(jobs, layout).results()]


def choosing(jobs: list[Job], layout: Layout, digest: Callable[[object], bytes] | None = None) -> Chosen:
    """``choose_many``, begun, and ``digest`` of each block that is not kept raw (b"" for
    the others, or for every block without ``digest``).

    With the kernel the jobs are encoded on the pool's threads (``threads.start``), each
    block's digest taken in the thread that encoded it, while the caller goes on with other
    work until it asks for the ``results()``; without the kernel, or on an executor
    elsewhere, the work is done before this returns.
    """
    from .executor import encoding_executor, run_chunked

    elsewhere = encoding_executor()
    if elsewhere is not None and jobs:
        portable = [Job(bytes(j.data), [(bytes(stored), enc) for stored, enc in j.refs]) for j in jobs]
        chosen = run_chunked(elsewhere, choose_jobs, portable, layout)
        return Chosen(_digested(chosen, [j.data for j in jobs], digest))
    if KERNEL is None or not jobs:
        return Chosen(_digested([_choose(j.data, layout, j.refs) for j in jobs], [j.data for j in jobs], digest))
    return Chosen(_start(jobs, layout, digest))


def _digested(chosen: list, blocks: list, digest: Callable[[object], bytes] | None) -> list:
    return [(e, payload, which, digest(data) if digest is not None and e != RAW else b"")
            for (e, payload, which), data in zip(chosen, blocks)]


def choose_jobs(jobs: list[Job], layout: Layout) -> list[tuple[int, bytes | None, int]]:
    """``choose`` for each job, on this process's threads (a task of ``choose_many`` elsewhere)."""
    if KERNEL is None:
        return [_choose(j.data, layout, j.refs) for j in jobs]
    if len(jobs) <= _SHARE:  # one share: handing it to a pool thread and back only adds the handoff
        return [r[:3] for r in _share(_kernel_args(jobs), layout, None)]
    return [r[:3] for r in Chosen(_start(jobs, layout, None)).results()]


def _kernel_args(jobs: list[Job]) -> list:
    return [(j.data, [(stored, encoding == PACKED) for stored, encoding in j.refs]) for j in jobs]


def _share(part: list, layout: Layout, digest: Callable[[object], bytes] | None) -> list:
    """One kernel call choosing the encodings of ``part`` (``_kernel_args``), then the digests."""
    chosen = KERNEL.choose_all(part, layout.width, layout.is_float, MIN_SAVING, *zstdframes.contexts())
    return _digested(chosen, [data for data, _ in part], digest)


def _start(jobs: list[Job], layout: Layout, digest: Callable[[object], bytes] | None) -> threads.Started:
    """The jobs handed to the pool in shares of ``_SHARE`` blocks (fewer for a short list,
    so both cores take part), each share one kernel call that holds no GIL from its first
    block to its last."""
    args = _kernel_args(jobs)
    step = max(1, min(_SHARE, -(-len(args) // 2)))
    return threads.start(lambda part: _share(part, layout, digest), [args[i : i + step] for i in range(0, len(args), step)])


class Chosen:
    """The encodings ``choosing`` began (a ``threads.Started`` of shares) or made."""

    def __init__(self, work: threads.Started | list) -> None:
        self._work = work

    def results(self) -> list[tuple[int, bytes | None, int, bytes]]:
        """``(encoding, payload, index of the reference, digest)`` of each job, in order.
        Raises ``ValueError`` if a reference does not decode."""
        if isinstance(self._work, list):
            return self._work
        return [r for share in self._work.results() for r in share]

    def cancel(self) -> None:
        """Drop the shares no thread has begun: their results are not wanted."""
        if not isinstance(self._work, list):
            self._work.cancel()


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
    """Decode each job into its ``out``. Raises ``ValueError`` naming the first job that
    does not decode."""
    if KERNEL is None:
        for job in jobs:
            try:
                _decode_job(job)
            except ValueError as exc:
                raise ValueError(f"{job.what}: {exc}") from None
        return
    for job in jobs:
        if len(job.out) != job.out.nbytes:
            raise ValueError(f"{job.what}: the output must be a uint8 array")
    # Each thread decodes its share in one kernel call: no GIL between blocks.
    args = [(j.payload, j.out, j.layout.width, j.layout.is_float, None if j.ref is None else j.ref[0],
             j.ref is not None and j.ref[1] == PACKED) for j in jobs]
    k = max(1, min(threads.default_threads(), len(jobs) // 4))
    shares = threads.spread(lambda i: KERNEL.decode_all(args[i::k], zstdframes.contexts()[1]), list(range(k)),
                            threads=k, least=1)
    failures = []
    for i, result in enumerate(shares):
        if isinstance(result, BaseException):
            raise result
        if result is not None:
            failures.append((i + k * result[0], result[1]))
    if failures:
        at, message = min(failures)
        raise ValueError(f"{jobs[at].what}: {message}")


def _decode_job(job: DecodeJob) -> None:
    raw_ref = packed_ref = None
    if job.ref is not None:
        stored, encoding = job.ref
        raw_ref, packed_ref = (stored, None) if encoding == RAW else (None, stored)
    decode(job.payload, len(job.out), job.layout, raw_ref, job.out, packed_ref)
