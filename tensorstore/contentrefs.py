"""Delta references found by content: stored blocks near a new block in an LSH index (§4a).

A new block's reference is first looked for by position: the parent's block at the same
tensor name and index. A block that has none (its tensor is new to the parent, or was
renamed: a fine-tune re-exported under other names), or whose position may have moved
(the parent's tensor of that name has another shape: rows inserted into a vocabulary table
shift every later block), is looked up here, by content, among the stored blocks of its
dedup domain, dtype and length that are not themselves deltas (a reference is never a
delta: decode depth 1).

The lookup uses the near-duplicate pass's sign-random-projection LSH
(:class:`tensorstore_index.LSHIndex`'s projection, 64 bits): the :data:`CANDIDATES`
stored blocks of the class whose codes are nearest in Hamming distance (then the oldest),
and within :data:`MAX_DISTANCE` bits, are offered to the codec, which tries a delta against each and
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

On by default (``open(..., content_refs=False)`` turns it off). What it costs: nothing
when no new block lacks a positional reference (a fine-tune under its parent's names) or
when no stored block has the class of one; otherwise one code per looked-up block
(sampled, projected) and 7 key lookups in the store's content index
(:mod:`tensorstore.contentcodes`), where every coded block's code is kept from the
transaction that wrote it. No stored block is read or coded by a lookup, so its cost does
not grow with the store (``docs/benchmarks.md``, Content references, measures it at 10^3
to 10^5 stored blocks). A store written before codes were kept is coded once, in
resumable steps, before the first add that may look blocks up (:func:`contentcodes.backfill`).

This module composes the store's catalog with its content codes; the projection is
``tensorstore_index``'s, which knows vectors, not blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import catalog as cat
from . import contentcodes
from .contentcodes import VECTOR_DIM, vectors as _vectors  # noqa: F401  (the sampling, documented above)

#: References tried per block: a block whose rows moved overlaps two stored blocks, and a
#: renamed fine-tune's block is nearest its own parent block; a third covers near ties.
CANDIDATES = 3
#: Largest Hamming distance (of the 64 code bits) of a proposal worth an encode attempt.
#: Measured on MiniLM: a fine-tuned block lies 0-3 bits from its parent's; unrelated
#: blocks of a layer 24-33 apart, word-embedding blocks 9-31 (their rows share a mean).
#: At most 6: the content index finds every code within 6 bits (7 pieces), no further.
MAX_DISTANCE = 6
#: Index hits examined per block for its CANDIDATES: stale entries (of freed blocks) and
#: blocks that became deltas are skipped past.
_EXAMINED = 32


@dataclass(frozen=True, slots=True)
class Query:
    """A new block to find references for: the caller's ``key`` for it, its bytes (a
    bytes-like of whole elements), its dtype code and its content digest (its code is
    kept by that in the writer's code log, so a block stored after a lookup is not coded
    twice)."""

    key: object
    data: object
    dtype_code: int
    digest: bytes | None = None


def find(writer, queries: list[Query], *, candidates: int = CANDIDATES,
         max_distance: int = MAX_DISTANCE) -> dict[object, list[int]]:
    """Stored blocks near each query, nearest first: ``{query key: [block id, ...]}``.

    Parameters
    ----------
    writer : tensorstore.blockwriter.BlockWriter
        The ingest's writer: its transaction, its dedup domain.
    queries : list of Query
        New blocks without a reference by position; those of a class that is not coded
        (not float, or shorter than ``contentcodes.MIN_CODED_BYTES``) are skipped.

    Returns
    -------
    dict
        Only the queries with a proposal; ids of live, non-delta blocks of the query's
        domain, dtype and length, committed before this transaction.
    """
    dbs = writer.dbs
    wanted: dict[contentcodes.Class, list[Query]] = {}
    for q in queries:
        if contentcodes.eligible(q.dtype_code, len(q.data)):
            wanted.setdefault((writer.domain, q.dtype_code, len(q.data)), []).append(q)
    if not wanted or not contentcodes.available(dbs):
        return {}
    out: dict[object, list[int]] = {}
    usable: dict[int, bool] = {}
    for cls, qs in wanted.items():
        if not contentcodes.has_class(writer.txn, dbs, cls):
            continue  # nothing to find (a base into a store without its kind): no code made twice
        codes = contentcodes.codes_of([q.data for q in qs], cls[1])
        writer.code_log.known.update((q.digest, c) for q, c in zip(qs, codes.tolist()) if q.digest is not None)
        stale: dict[int, int] = {}
        for q, hits in zip(qs, contentcodes.near(writer.txn, dbs, cls, codes, max_distance, _EXAMINED)):
            ids = []
            for _, i, code in hits:
                if i not in usable:
                    if not contentcodes.is_coded(writer.txn, dbs, i):
                        stale[i] = code  # its block was freed: the entry goes now
                        usable[i] = False
                    else:
                        # The index is checked against the catalog, not trusted: a damaged
                        # entry costs a proposal, never the add.
                        usable[i] = _usable(writer, i, cls)
                if usable[i]:
                    ids.append(i)
                    if len(ids) == candidates:
                        break
            if ids:
                out[q.key] = ids
        contentcodes.drop_stale(writer.txn, dbs, cls, list(stale.items()))
    return out


def _usable(writer, block_id: int, cls: contentcodes.Class) -> bool:
    value = writer.txn.get(cat.id_key(block_id), db=writer.dbs["blocks"])
    if value is None:
        return False
    b = cat.decode_block(block_id, value)
    return b.refs > 0 and contentcodes.coded(b) and contentcodes.class_of(b) == cls
