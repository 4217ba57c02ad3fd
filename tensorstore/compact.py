"""``Store.compact()``: every block re-encoded in its smallest form, every page rewritten.

A store written with ``codec="raw"`` (or by a version without encodings), or one whose
models arrived before their parents, keeps blocks larger than they need be. ``compact``
takes the models oldest first; each block not yet a delta is offered, as at ingest, the
packed encoding and a delta against the block at the same tensor and position in the
model's parent (the older model of its domain sharing the most blocks with it). A block
that other deltas use as their reference stays what it is, so a decode never goes
deeper than one reference. The blocks are then laid out anew by ``repack``.

Everything happens in one write transaction: a crash leaves the store as it was. The new
payloads are held in memory until the commit (at most the store's distinct bytes).
"""

from __future__ import annotations

from dataclasses import replace

import lmdb
from tensorstore_index.exact import strong_digest

from . import codec, dtypes
from .catalog import BlockRecord, ModelRecord
from .reports import CompactReport
from .repack import all_blocks, repack


def compact(store, txn: lmdb.Transaction, algorithm: str, read_weight: float, time_limit: float) -> CompactReport:
    from .readpath import ReadPath

    blocks = all_blocks(store, txn)
    original = dict(blocks)  # where and how each block lies now: what reads must use
    before_bytes = sum(b.stored for b in blocks.values())
    before = [sum(b.encoding == e for b in blocks.values()) for e in range(len(codec.NAMES))]
    reader = ReadPath(store, txn, verify=True)
    records = sorted(store.records(txn), key=lambda m: m.model_id)
    is_ref = {b.ref for b in blocks.values() if b.ref}
    seen: set[int] = set()
    payloads: dict[int, bytes] = {}
    for i, m in enumerate(records):
        parent = _parent(m, records[:i], blocks)
        for t in m.tensors:
            theirs = parent.tensor(t.name) if parent is not None else None
            theirs = theirs.block_ids.tolist() if theirs is not None and theirs.dtype == t.dtype and theirs.step == t.step else []
            todo: list[tuple[BlockRecord, int | None]] = []
            for k, block_id in enumerate(t.block_ids.tolist()):
                if block_id in seen:
                    continue
                seen.add(block_id)
                b = blocks[block_id]
                if b.encoding == codec.DELTA:
                    continue
                ref = _reference(theirs[k] if k < len(theirs) else None, b, blocks)
                if block_id in is_ref:
                    ref = None  # deltas depend on it: it must not become one
                todo.append((b, ref))
            if not todo:
                continue
            jobs = [codec.Job(reader.block_bytes(b).tobytes(),
                              [] if r is None else [(bytes(reader.stored(original[r])), original[r].encoding)])
                    for b, r in todo]
            for (b, ref), job, (encoding, payload, _) in zip(todo, jobs, codec.choose_many(jobs, dtypes.layout(t.dtype))):
                if encoding == codec.RAW or len(payload) > b.stored * (1 - codec.MIN_SAVING):
                    continue  # no better than it is
                new_ref = ref if encoding == codec.DELTA else 0
                strong = b.strong or strong_digest(job.data)
                blocks[b.block_id] = replace(b, encoding=encoding, stored=len(payload), ref=new_ref, strong=strong)
                payloads[b.block_id] = payload
                if new_ref:
                    is_ref.add(new_ref)
                    seen.add(new_ref)  # a reference is never made a delta later on
                    r = blocks[new_ref]
                    blocks[new_ref] = replace(r, refs=r.refs + 1)
    pack = repack(store, txn, algorithm, read_weight, time_limit, blocks=blocks, payloads=payloads)
    return CompactReport(
        encoded_bytes_before=before_bytes,
        encoded_bytes_after=sum(b.stored for b in blocks.values()),
        reencoded_blocks=len(payloads),
        encodings_before=dict(zip(codec.NAMES, before)),
        encodings_after={name: sum(b.encoding == e for b in blocks.values()) for e, name in enumerate(codec.NAMES)},
        pack=pack,
    )


def _parent(m: ModelRecord, older: list[ModelRecord], blocks: dict[int, BlockRecord]) -> ModelRecord | None:
    """The older model of ``m``'s domain sharing the most blocks with it at the same
    tensor and position, then the most tensor names, dtypes and shapes, then the oldest."""
    best, best_score = None, None
    mine = {t.name: t for t in m.tensors}
    for o in older:
        if o.domain != m.domain:
            continue
        shared = same = 0
        for t in o.tensors:
            x = mine.get(t.name)
            if x is None or x.dtype != t.dtype:
                continue
            same += x.shape == t.shape
            n = min(len(x.block_ids), len(t.block_ids))
            shared += int((x.block_ids[:n] == t.block_ids[:n]).sum())
        score = (shared, same, -o.model_id)
        if same and (best_score is None or score > best_score):
            best, best_score = o, score
    return best


def _reference(candidate: int | None, b: BlockRecord, blocks: dict[int, BlockRecord]) -> int | None:
    """``candidate`` (a delta replaced by its own reference) if ``b`` may be a delta of it."""
    if candidate is None:
        return None
    r = blocks[candidate]
    if r.ref:
        r = blocks[r.ref]
    if r.block_id == b.block_id or r.nbytes != b.nbytes or r.dtype_code != b.dtype_code or r.domain != b.domain:
        return None
    return r.block_id
