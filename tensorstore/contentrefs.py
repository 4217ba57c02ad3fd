"""Delta references found by content: stored blocks near a new block in an LSH index (§4a).

A new block's reference is first looked for by position: the parent's block at the same
tensor name and index. A block that has none (its tensor is new to the parent, or was
renamed: a fine-tune re-exported under other names), or whose position may have moved
(the parent's tensor of that name has another shape: rows inserted into a vocabulary table
shift every later block), is looked up here, by content, among the stored blocks of its
dedup domain, dtype and length that are not themselves deltas (a reference is never a
delta: decode depth 1).

The lookup is the near-duplicate pass's sign-random-projection LSH
(:class:`tensorstore_index.LSHIndex`, one per block class): the :data:`CANDIDATES`
stored blocks whose codes are nearest in Hamming distance, and within
:data:`MAX_DISTANCE` bits, are offered to the codec, which tries a delta against each and
keeps the smallest encoding (a delta only when it beats packing the block alone). The LSH
proposes; the codec's byte count decides, so a poor proposal costs an encode attempt,
never a byte.

A block is represented by every ``s``-th element (``s`` a power of two, so at most
:data:`VECTOR_DIM` elements), zero-padded to :data:`VECTOR_DIM`: a fine-tuned block and
its parent agree element by element, so a sample shows it as well as the whole, at a
sixteenth of the projection work for 64 KiB of float32; a power-of-two stride divides the
row length of usual layers (multiples of 64), so blocks whose rows moved by whole rows
still sample the same elements. One fixed dimension also keeps FAISS's projection cheap
to set up (milliseconds, where 16,128 took most of a second).

Off by default (``open(..., content_refs=True)``), because of what it costs: nothing
when no new block lacks a positional reference (a fine-tune under
its parent's names) or when no stored block has the class of one (a base model into an
empty store). Otherwise one scan of the block catalog, and a code for each stored block
of the classes asked for that the handle has not coded before (read, decoded if packed,
sampled, projected): the indexes live in the store handle (:class:`ContentIndex`) and are
brought in step with each ingest's snapshot, so a handle that adds many models codes each
stored block once, but a new process codes them again: codes are not kept in the store,
so the cost of a lookup grows with the store. ``docs/benchmarks.md`` (Content references)
has the measurements.

This module composes the store's catalog and pages with ``tensorstore_index``; the index
knows vectors, not blocks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from . import catalog as cat
from . import codec
from .dtypes import DTYPE_CODES, DTYPES, FLOAT_NAMES, layout_of_code
from .errors import CorruptionError

#: References tried per block: a block whose rows moved overlaps two stored blocks, and a
#: renamed fine-tune's block is nearest its own parent block; a third covers near ties.
CANDIDATES = 3
#: Largest Hamming distance (of the 64 code bits) of a proposal worth an encode attempt.
#: Measured on MiniLM: a fine-tuned block lies 0-3 bits from its parent's; unrelated
#: blocks of a layer 24-33 apart, word-embedding blocks 9-31 (their rows share a mean).
MAX_DISTANCE = 6
#: Elements a block is represented by (sampled with a power-of-two stride, zero-padded).
VECTOR_DIM = 1024
_NBITS = 64
_CHUNK_BYTES = 32 << 20  # bound on the stored blocks decoded at once
_FLOAT_DTYPES = {DTYPE_CODES[n]: DTYPES[n] for n in FLOAT_NAMES if n in DTYPE_CODES}

Class = tuple[int, int, int]  # (dedup domain, dtype code, bytes)


@dataclass(frozen=True, slots=True)
class Query:
    """A new block to find references for: the caller's ``key`` for it, its bytes (a
    bytes-like of whole elements) and its dtype code."""

    key: object
    data: object
    dtype_code: int


class ContentIndex:
    """LSH indexes of a store's reference-eligible blocks, one per block class, kept by a
    store handle between ingests and synced to each ingest's snapshot.

    Block ids are never reused and a block's content never changes under its id, so a
    block once coded stays right while it lives; the digest is compared anyway, and a block
    that became a delta (``compact``) or left the store is removed. Thread-safe.
    """

    def __init__(self, *, candidates: int = CANDIDATES, max_distance: int = MAX_DISTANCE) -> None:
        self.candidates = candidates
        self.max_distance = max_distance
        self._lock = threading.Lock()
        self._indexes: dict[Class, object] = {}
        self._known: dict[int, tuple[Class, bytes]] = {}  # id -> (class, digest)

    def find(self, writer, queries: list[Query]) -> dict[object, list[int]]:
        """Stored blocks near each query, nearest first: ``{query key: [block id, ...]}``.

        Parameters
        ----------
        writer : tensorstore.blockwriter.BlockWriter
            The ingest's writer: its transaction's catalog and pages, its dedup domain.
        queries : list of Query
            New blocks without a reference by position; non-float ones are skipped.

        Returns
        -------
        dict
            Only the queries with a proposal; ids of live, non-delta blocks of the query's
            domain, dtype and length, committed before this transaction.
        """
        wanted: dict[Class, list[Query]] = {}
        for q in queries:
            if q.dtype_code in _FLOAT_DTYPES and len(q.data):
                wanted.setdefault((writer.domain, q.dtype_code, len(q.data)), []).append(q)
        if not wanted:
            return {}
        with self._lock:
            self._sync(writer, set(wanted))
            out: dict[object, list[int]] = {}
            for cls, qs in wanted.items():
                lsh = self._indexes.get(cls)
                if lsh is None or len(lsh) == 0:
                    continue
                found = lsh.search(_vectors([q.data for q in qs], cls[1]), self.candidates)
                close = (found.ids >= 0) & (found.distances <= self.max_distance)
                for q, ids, keep in zip(qs, found.ids, close):
                    if keep.any():
                        out[q.key] = ids[keep].tolist()
            return out

    def _sync(self, writer, classes: set[Class]) -> None:
        """Bring the indexes of ``classes`` in step with the writer's snapshot: the live,
        non-delta blocks committed before its transaction (as the writer sees them now:
        their pages may have moved in it)."""
        import tensorstore_index as index

        eligible: dict[Class, list[cat.BlockRecord]] = {}
        with writer.txn.cursor(db=writer.dbs["blocks"]) as cur:
            for k, v in cur:
                b = cat.decode_block(cat.ID.unpack(bytes(k))[0], bytes(v))
                cls = (b.domain, b.dtype_code, b.nbytes)
                if cls in classes and not b.ref and b.refs > 0:
                    eligible.setdefault(cls, []).append(b)
        live = {b.block_id: b for records in eligible.values() for b in records}
        gone: dict[Class, list[int]] = {}
        for block_id, (cls, digest) in self._known.items():
            if cls in classes:
                b = live.get(block_id)
                if b is None or b.digest != digest:
                    gone.setdefault(cls, []).append(block_id)
        for cls, ids in gone.items():
            self._indexes[cls].remove(np.array(ids, dtype=np.int64))
            for block_id in ids:
                del self._known[block_id]
        for cls, records in eligible.items():
            new = [b for b in records if b.block_id not in self._known]
            if not new:
                continue
            lsh = self._indexes.get(cls)
            if lsh is None:
                lsh = self._indexes[cls] = index.LSHIndex(VECTOR_DIM, nbits=_NBITS, keep_vectors=False)
            rows = max(1, _CHUNK_BYTES // cls[2])
            for start in range(0, len(new), rows):
                chunk = [writer.block(b.block_id) for b in new[start : start + rows]]
                lsh.add(np.array([b.block_id for b in chunk], dtype=np.int64),
                        _vectors(_decoded(writer, chunk), cls[1]), copy=False)
                for b in chunk:
                    self._known[b.block_id] = (cls, b.digest)


def _decoded(writer, blocks: list[cat.BlockRecord]) -> list:
    """The decoded bytes of raw or packed blocks of one class, as this transaction sees them."""
    out: list = []
    jobs = []
    layout = layout_of_code(blocks[0].dtype_code)
    for b in blocks:
        view = writer.stored_view(b)
        if b.encoding == codec.RAW:
            out.append(view)
        else:
            row = np.empty(b.nbytes, dtype=np.uint8)
            jobs.append(codec.DecodeJob(view, None, layout, row, f"block {b.block_id}"))
            out.append(row)
    try:
        codec.decode_many(jobs)
    except ValueError as exc:
        raise CorruptionError(f"a stored block does not decode ({exc}); nothing was stored: "
                              "`tensorstore verify STORE` names the models that hold it") from None
    return out


def _vectors(blocks: list, dtype_code: int) -> np.ndarray:
    """The LSH vectors of blocks (bytes-like) of one class: every ``s``-th element, as
    float32, zero-padded to :data:`VECTOR_DIM`."""
    dtype = _FLOAT_DTYPES[dtype_code]
    n = len(blocks[0]) // dtype.itemsize
    stride = 1
    while -(-n // stride) > VECTOR_DIM:
        stride *= 2
    out = np.zeros((len(blocks), VECTOR_DIM), dtype=np.float32)
    width = -(-n // stride)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 past float32's range: inf, zeroed below
        for row, data in enumerate(blocks):
            out[row, :width] = np.frombuffer(data, dtype=dtype, count=n)[::stride]
    # A non-finite value would turn every projection NaN; as zero it only blurs the
    # proposal, and the codec's byte count decides anyway.
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
