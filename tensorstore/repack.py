"""``Store.repack()``: rewrite every page to a layout chosen by ``packing``.

The store hands ``packing`` plain data: each tensor as the list of the distinct blocks a
load of it reads (its own blocks, and the reference of each of them that is a delta), the
blocks' sizes as stored (encoded), the page size and which tensors make up each model. It gets back a page
and offset for every block, writes the new pages under fresh ids, moves every block record
to its new place and deletes the old pages: all of it in one write transaction, so a
crash leaves the old layout whole.

A repack never leaves a worse layout than the one it replaces: when no block changed
(``compact`` passes re-encoded blocks, whose old places say nothing), the current layout is
scored by ``packing`` the same way, and the new one is written only if it scores better on
the packer's objective and reads no more pages per model load (rate-weighted); otherwise
nothing is written and the report's status says the layout was kept.
"""

from __future__ import annotations

from dataclasses import replace

import lmdb

import tensorstore_packing as packing

from . import catalog as cat
from .blockwriter import ALIGN, OPEN_ROOM_FRACTION
from .catalog import BlockRecord, PageRecord, id_key
from .reports import PackReport


def catalog_problem(store, txn: lmdb.Transaction):
    """The store's layout question as plain data for ``packing``.

    Returns ``(models, tensors, blocks)``: model -> its tensor keys, tensor key -> the
    distinct block ids its load reads in order (a delta's reference right after it), block
    id -> its record.
    """
    blocks = all_blocks(store, txn)
    models, tensors = read_sets(store, txn, blocks)
    return models, tensors, blocks


def all_blocks(store, txn: lmdb.Transaction) -> dict[int, BlockRecord]:
    """Every block record, by id."""
    blocks: dict[int, BlockRecord] = {}
    with txn.cursor(db=store.env.dbs["blocks"]) as cur:
        for k, v in cur:
            block_id = cat.ID.unpack(bytes(k))[0]
            blocks[block_id] = cat.decode_block(block_id, v)
    return blocks


def read_sets(store, txn: lmdb.Transaction, blocks: dict[int, BlockRecord]):
    """``(models, tensors)``: model -> its tensor keys; tensor key -> the distinct blocks a
    load of it reads, in order (a delta's reference right after it)."""
    models: dict[str, list[str]] = {}
    tensors: dict[str, list[int]] = {}
    for m in store.records(txn):
        keys = []
        for t in m.tensors:
            key = f"{m.name}\x00{t.name}"
            read = []
            for i in t.block_ids.tolist():
                read.append(i)
                if blocks[i].ref:
                    read.append(blocks[i].ref)
            tensors[key] = list(dict.fromkeys(read))  # distinct, in order
            keys.append(key)
        models[m.name] = keys
    return models, tensors


def packing_problem(store, models, tensors, blocks) -> "packing.PackingProblem":
    return packing.PackingProblem.from_tensors(
        tensors, {i: b.stored for i, b in blocks.items()}, store.page_size, models=models, alignment=ALIGN
    )


def repack(store, txn: lmdb.Transaction, algorithm: str, read_weight: float, time_limit: float,
           blocks: dict[int, BlockRecord] | None = None, payloads: dict[int, bytes] | None = None) -> PackReport:
    """Lay every block out anew (in ``txn``). ``blocks`` and ``payloads`` (``compact``'s)
    replace records and stored bytes of re-encoded blocks; the others are copied as
    they lie."""
    dbs = store.env.dbs
    state = store.state(txn)
    original = all_blocks(store, txn)
    before_models, before_tensors = read_sets(store, txn, original)
    blocks = original if blocks is None else blocks
    payloads = payloads or {}
    models, tensors = read_sets(store, txn, blocks)
    before = _pages_read(before_models, before_tensors, {i: b.page_id for i, b in blocks.items()})
    old_pages = store.page_file.ids(txn)
    if not blocks:
        return PackReport(algorithm, "empty", 0.0, len(old_pages), 0, 0, {}, {}, {})

    problem = packing_problem(store, models, tensors, blocks)
    result = packing.pack(problem, algorithm, read_weight=read_weight, time_limit=time_limit)
    if not payloads and blocks is original:
        current = packing.score(problem, _column(problem, blocks, "page_id"), _column(problem, blocks, "offset"),
                                read_weight=read_weight)
        if not _better(result, current):
            bound = {m: -(-sum(blocks[i].stored for i in _model_blocks(models[m], tensors)) // store.page_size) for m in models}
            return PackReport(
                algorithm=algorithm,
                status=f"kept: the {algorithm} layout (cost {result.cost:.4f}) is no better than the current one "
                       f"(cost {current.cost:.4f}) in cost and pages read per model",
                solve_seconds=result.solve_seconds,
                pages_before=len(old_pages),
                pages_after=len(old_pages),
                lower_bound_pages=result.lower_bound_pages,
                pages_read_before=before,
                pages_read_after=dict(before),
                pages_read_lower_bound=bound,
            )
    placement = result.placement()

    # New pages get fresh ids, so every old page stays readable until it is deleted.
    first = state.next_page_id
    members: dict[int, list[int]] = {}
    for block_id, (page, _) in placement.items():
        members.setdefault(page, []).append(block_id)
    buffer = store.page_file.new_buffer()
    size = store.page_size
    for page, ids in sorted(members.items()):
        ids.sort(key=lambda i: placement[i][1])
        buffer[:] = bytes(len(buffer))
        sources: dict[int, memoryview] = {}
        used = 0
        for block_id in ids:
            b = blocks[block_id]
            offset = placement[block_id][1]
            if block_id in payloads:
                buffer[offset : offset + b.stored] = payloads[block_id]
            else:
                src = sources.get(b.page_id)
                if src is None:
                    src = sources[b.page_id] = store.page_file.read(txn, b.page_id)
                buffer[offset : offset + b.stored] = src[b.offset : b.offset + b.stored]
            used = max(used, offset + b.stored)
        sources.clear()  # views into the map are not to outlive the next write
        page_id = first + page
        store.page_file.write(txn, page_id, buffer)
        txn.put(id_key(page_id), cat.encode_page(PageRecord(page_id, used, sum(blocks[i].stored for i in ids), tuple(ids))),
                db=dbs["pagemeta"])
    for block_id, (page, offset) in placement.items():
        b = blocks[block_id]
        txn.put(id_key(block_id), cat.encode_block(replace(b, page_id=first + page, offset=offset)), db=dbs["blocks"])
    for page_id in old_pages:
        store.page_file.delete(txn, page_id)
        txn.delete(id_key(page_id), db=dbs["pagemeta"])

    new_pages = {i: first + p for i, (p, _) in placement.items()}
    state.pages = len(members)
    state.next_page_id = first + max(members) + 1
    room = {first + p: size - -(-int(result.page_used_bytes[p]) // ALIGN) * ALIGN for p in members}
    state.open_pages = sorted([p, r] for p, r in room.items() if r >= size // OPEN_ROOM_FRACTION)
    state.encoded_bytes = sum(b.stored for b in blocks.values())
    state.encodings = [sum(b.encoding == e for b in blocks.values()) for e in range(len(state.encodings))]
    store.put_state(txn, state)

    after = _pages_read(models, tensors, new_pages)
    bound = {m: -(-sum(blocks[i].stored for i in _model_blocks(models[m], tensors)) // size) for m in models}
    return PackReport(
        algorithm=algorithm,
        status=result.status,
        solve_seconds=result.solve_seconds,
        pages_before=len(old_pages),
        pages_after=len(members),
        lower_bound_pages=result.lower_bound_pages,
        pages_read_before=before,
        pages_read_after=after,
        pages_read_lower_bound=bound,
    )


def _column(problem, blocks: dict[int, BlockRecord], field: str):
    """A block record field for every block of ``problem``, in its (dense) order."""
    import numpy as np

    return np.fromiter((getattr(blocks[i], field) for i in problem.block_ids.tolist()), dtype=np.int64,
                       count=problem.n_blocks)


def _better(new, current) -> bool:
    """Whether ``new`` should replace ``current``: a lower objective, and no more pages
    read per model load (rate-weighted) — the measure a load waits for."""
    rates = packing.objective.model_rates(new.problem) if new.problem.n_models else None
    if rates is not None:
        reads_new = float(rates @ new.model_reads().pages_read)
        reads_now = float(rates @ current.model_reads().pages_read)
        if reads_new > reads_now + 1e-9:
            return False
    return new.cost < current.cost - 1e-12


def _model_blocks(keys: list[str], tensors: dict[str, list[int]]) -> set[int]:
    return {i for k in keys for i in tensors[k]}


def _pages_read(models: dict[str, list[str]], tensors: dict[str, list[int]], page_of: dict[int, int]) -> dict[str, int]:
    """Distinct pages a load of each model reads."""
    return {m: len({page_of[i] for i in _model_blocks(keys, tensors)}) for m, keys in models.items()}
