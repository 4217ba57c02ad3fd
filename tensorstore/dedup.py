"""``Store.dedup()``: the accuracy-gated near-duplicate pass (SPEC §5).

One :class:`BlockSearch` serves the whole pass: the store's float blocks are read, hashed
and normed once, and before each model the indexes are brought in step with that model's
snapshot (blocks freed by an earlier replacement removed, blocks added meanwhile read).
For each model, in turn:

1. **Candidates**: the model's *private* float blocks (no other model references them:
   replacing a shared block would change the other models too, and save nothing).
2. **Representatives**: every other float block in the store, in one FAISS LSH index per
   block class (dtype and length); a candidate's representative is the one with the
   lowest exact relative L2 error within ``tolerance`` (``index`` verifies every hit).
   The model's private blocks are hidden from the search (``exclude``), not re-indexed.
   Representatives are never candidates in the same pass, so no replacement chains.
3. **Rounds and order**: the pass runs in rounds, one per error level of
   ``index.tolerance_levels(tolerance)`` (0.001, 0.002, 0.005, ... up to the tolerance), each
   round over every model in turn. A round offers the model's candidates within its level
   not yet replaced, ranked by bytes saved per unit of risk (``index.savings_order``): the
   bytes the block takes *as stored* (a good delta is already small, so replacing it
   saves little) over its relative error times its magnitude score (the change on its
   tensor's scale; ``index.magnitude_scores``: low-magnitude blocks matter least). Since a
   pass at a larger tolerance runs every round of a smaller one first, unchanged, and then
   more, it never ends with more bytes than the smaller one (given a deterministic
   evaluator). A model whose round accepts nothing of what it was offered takes no further
   rounds: its budget is spent.
4. **Gate**: ``index.plan_replacements`` finds the longest prefix of a round's order whose
   accuracy, measured by the user's ``evaluate(name, tensors)`` with the earlier rounds'
   replacements applied, stays within ``max_accuracy_drop`` of the original, in
   O(log candidates) evaluations.
5. **Apply**: once every model is planned, one write transaction for the whole pass swaps
   the references, frees the replaced blocks, records every replacement in the
   ``replacements`` table, and checks that each model as stored is byte for byte the one
   the planner evaluated before it commits. A pass that fails anywhere (an evaluator that
   raises on the last model, a conflict, a full disk) leaves the store exactly as it was.
   What it holds meanwhile is each model's plan and a digest of its tensors, not the
   tensors.

Each model is planned in its own snapshot; if a model changed before the apply, the apply
raises ``ConflictError`` and the pass changes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence

import lmdb
import numpy as np
import xxhash

import tensorstore_index as index

from . import catalog as cat
from .blockwriter import BlockWriter
from .catalog import ModelRecord, TensorRecord, id_key
from .dtypes import DTYPE_CODES, DTYPES
from .errors import (
    ConflictError,
    CorruptionError,
    EvaluatorError,
    InvalidArgumentError,
    ModelNotFoundError,
)
from .progress import progress
from .reports import DedupReport, ModelDedup, Replaced

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_FLOAT_CODES = {DTYPE_CODES[n]: DTYPES[n] for n in FLOAT_DTYPES}
#: Tolerance of a pass with an evaluator. The gate bounds the accuracy and a larger
#: tolerance never ends with more bytes, so it only buys bytes for evaluations: 0.1 took
#: nearly all there was on the families measured (docs/benchmarks.md, Near-duplicate pass
#: across tolerances).
GATED_TOLERANCE = 0.1
#: Without an evaluator the tolerance is the only bound on what a block may change: small.
UNCHECKED_TOLERANCE = 0.01
#: ``dedup(tolerance=None)``: :data:`GATED_TOLERANCE` with an evaluator, else
#: :data:`UNCHECKED_TOLERANCE`.
DEFAULT_TOLERANCE = None
_AUDIT_KEY = struct.Struct(">QQ")  # model id, replaced block id
# New blocks are hashed this many at a time at most (and this many bytes of float32).
_HASH_CHUNK_BLOCKS = 4096
_HASH_CHUNK_BYTES = 32 << 20


def run_dedup(
    store,
    models: Sequence[str] | None,
    evaluate: Callable[[str, dict[str, np.ndarray]], float] | None,
    max_accuracy_drop: float,
    tolerance: float | None,
    dry_run: bool,
    progress_bar: bool | None,
    keep_bases: bool = True,
    executor=None,
) -> DedupReport:
    if not (isinstance(max_accuracy_drop, (int, float)) and 0 <= max_accuracy_drop < 1):
        raise InvalidArgumentError(f"max_accuracy_drop must be a number in [0, 1), not {max_accuracy_drop!r}")
    if tolerance is None:
        tolerance = GATED_TOLERANCE if evaluate is not None else UNCHECKED_TOLERANCE
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise InvalidArgumentError(f"tolerance (relative L2 error per block) must be in (0, 1), not {tolerance!r}")
    if evaluate is not None and not callable(evaluate):
        raise InvalidArgumentError(f"evaluate must be a callable evaluate(name, tensors) -> float, not {type(evaluate).__name__}")
    names = store.models() if models is None else list(models)
    missing = [n for n in names if n not in store]
    if missing:
        raise ModelNotFoundError(f"no model {missing[0]!r} in the store at {store.path}")
    if not dry_run:
        store.writable_env()
    search = BlockSearch()
    # The whole pass is planned first and applied in one write transaction, so a pass that
    # fails (an evaluator that raises, a conflict, a full disk) changes nothing. Later
    # models and rounds are planned as the applied pass will find the store: against the
    # blocks earlier replacements free and share (the same for a dry run).
    effects = _Effects()
    levels = index.tolerance_levels(tolerance)
    if executor is not None and evaluate is not None:
        evaluate = _evaluate_ahead(store, names, evaluate, executor, max_accuracy_drop, levels, search, keep_bases)
    states = {name: _ModelState() for name in names}
    with progress(len(names) * len(levels), "dedup", progress_bar) as bar:
        for level in levels:
            for name in names:
                state = states[name]
                if not state.done:
                    new = _plan_round(store, name, evaluate, max_accuracy_drop, level, search, effects, keep_bases, state)
                    effects.add(state.record, new)
                bar.update(1)
    planned_all = [states[name].planned(name, evaluate) for name in names]
    work = [p for p in planned_all if p.result.replaced]
    if not dry_run and work:

        def apply_all(txn: lmdb.Transaction) -> None:
            for planned in work:
                _apply(store, txn, planned, tolerance)

        store.env.write(apply_all)
    return DedupReport([p.result for p in planned_all], float(tolerance), float(max_accuracy_drop), evaluate is not None, dry_run)


def _evaluate_ahead(store, names, evaluate, executor, budget, levels, search, keep_bases):
    """The models' evaluations run on ``executor``, several models at once; the pass then
    finds each of its evaluations done (``tensorstore.executor.evaluate_ahead``). Each
    model is planned ahead through all its rounds against the earlier models planned so
    far; where the pass, which takes the rounds level by level, asks for something else,
    it evaluates that itself."""
    from .executor import evaluate_ahead

    done: dict[int, _ModelState] = {}

    def plan(i: int, evaluator) -> None:
        effects = _Effects()  # of the earlier models planned so far: usually all of them
        for j in sorted(k for k in done if k < i):
            effects.add(done[j].record, done[j].mapping)
        state = _ModelState()
        for level in levels:
            if state.done:
                break
            new = _plan_round(store, names[i], evaluator, budget, level, search, effects, keep_bases, state)
            effects.add(state.record, new)
        done[i] = state

    return evaluate_ahead(names, evaluate, executor, plan)


class _Planned:
    __slots__ = ("record", "result", "digests", "mapping")

    def __init__(self, record: ModelRecord, result: ModelDedup, digests: dict[str, bytes], mapping: dict[int, int]):
        self.record = record
        self.result = result
        # The model as it will be stored (what the evaluator saw), kept as digests: a pass
        # holds every model's plan until its one commit, not every model's tensors.
        self.digests = digests
        self.mapping = mapping  # replaced block id -> representative id


def _digest(arr: np.ndarray) -> bytes:
    return xxhash.xxh3_128_digest(np.ascontiguousarray(arr).view(np.uint8).reshape(-1))


class _ModelState:
    """One model's plan as the rounds build it."""

    def __init__(self) -> None:
        self.record: ModelRecord | None = None
        self.replaced: list[Replaced] = []
        self.positions: dict[int, list[tuple[str, int]]] = {}  # replaced block -> where it is used
        self.mapping: dict[int, int] = {}  # replaced block id -> representative id
        self.candidates: set[int] = set()  # every block offered in some round
        self.rounds: list[dict] = []
        self.evaluations = 0
        self.baseline: float | None = None
        self.accuracy: float | None = None
        self.digests: dict[str, bytes] | None = None  # of the model as planned, once evaluated or replaced
        self.scores: dict[str, np.ndarray] | None = None  # magnitude score of each float tensor's blocks
        self.done = False

    def planned(self, name: str, evaluate) -> _Planned:
        """The model's plan after the last round."""
        if self.record is None:
            raise RuntimeError(f"model {name!r} was never planned")
        result = ModelDedup(
            name, len(self.candidates), list(self.replaced), sum(r.nbytes for r in self.replaced),
            self.evaluations, self.baseline, self.accuracy if self.replaced else self.baseline, list(self.rounds),
        )
        return _Planned(self.record, result, dict(self.digests or {}), dict(self.mapping))


class _Effects:
    """What the replacements planned so far would do to the store's blocks, had they been
    applied: replaced blocks freed, representatives referenced more often."""

    def __init__(self) -> None:
        self.freed: set[int] = set()
        self.extra_refs: Counter[int] = Counter()

    def add(self, record: ModelRecord, mapping: dict[int, int]) -> None:
        if not mapping:
            return
        own = Counter(int(i) for t in record.tensors for i in t.block_ids)
        for replaced, representative in mapping.items():
            self.freed.add(replaced)
            self.extra_refs[representative] += own[replaced]

    def view(self, record: ModelRecord, blocks: dict[int, cat.BlockRecord]) -> tuple[dict[int, cat.BlockRecord], set[int]]:
        """``blocks`` as they would be, and the model's private blocks among them."""
        seen = {
            i: (replace(b, refs=b.refs + self.extra_refs[i]) if i in self.extra_refs else b)
            for i, b in blocks.items()
            if i not in self.freed
        }
        return seen, private_blocks(record, seen)


def _plan_round(
    store, name: str, evaluate, budget: float, level: float, search: BlockSearch, effects: _Effects,
    keep_bases: bool, state: _ModelState,
) -> dict[int, int]:
    """Plan one round for one model (updating ``state``); return the replacements it adds."""
    # The search reads block vectors from the snapshot's pages (nothing of the store is
    # kept in memory): scoring and searching happen while the snapshot is live.
    with store.env.read() as txn:
        record, read_tensors, blocks, private = gather(store, txn, name, search)
        try:
            if state.record is not None and (record.model_id, record.created) != (state.record.model_id, state.record.created):
                raise ConflictError(f"model {name!r} changed while dedup planned it; run dedup again")
            state.record = record
            blocks, private = effects.view(record, blocks)
            hidden = private | effects.freed
            if keep_bases:
                # Only blocks of models that rank as more of a base may represent this
                # model's: a base stays exact, its fine-tunes move toward it.
                rank, best = base_ranks(store, txn)
                hidden = hidden | {i for i, r in best.items() if r >= rank[name]}

            # Candidates with their magnitude score (a block's first position scores it;
            # blocks never change under an id, so the scores are computed once a pass).
            if state.scores is None:
                state.scores = {}
                for t in record.tensors:
                    ids = [int(i) for i in t.block_ids]
                    if ids and DTYPE_CODES.get(t.dtype) in _FLOAT_CODES:
                        state.scores[t.name] = index.magnitude_scores([search.vector(i) for i in ids])
            positions: dict[int, list[tuple[str, int]]] = {}
            score: dict[int, float] = {}
            for t in record.tensors:
                if t.name not in state.scores:
                    continue
                for k, (i, s) in enumerate(zip(t.block_ids.tolist(), state.scores[t.name])):
                    if i in private:
                        positions.setdefault(i, []).append((t.name, k))
                        score.setdefault(i, float(s))
            matches = search.find(blocks, hidden, list(positions), level)
            # The model's tensors are read only when this round needs them.
            needed = matches or state.digests is None or (evaluate is not None and state.baseline is None)
            original = read_tensors() if needed else None
        finally:
            search.release()
    # Bytes saved per unit of risk, most first: a block frees what it takes as stored.
    ids = sorted(matches)
    order = index.savings_order([blocks[i].stored for i in ids], [matches[i][1] * score[i] for i in ids])
    candidates = [index.Replacement(ids[j], matches[ids[j]][0], matches[ids[j]][1]) for j in order.tolist()]
    state.candidates.update(ids)

    rep_bytes = _representative_bytes(store, set(state.mapping.values()) | {c.representative for c in candidates})

    def apply(k: int) -> dict[str, np.ndarray]:
        out = dict(original)
        accepted = [(b, r) for b, r in state.mapping.items()] + [(c.position, c.representative) for c in candidates[:k]]
        where = state.positions | positions
        for block, representative in accepted:
            data = rep_bytes[representative]
            for tname, at in where[block]:
                t = record.tensor(tname)
                if out[tname] is original[tname]:
                    out[tname] = original[tname].copy()
                flat = out[tname].reshape(-1).view(np.uint8)
                start = at * t.step
                flat[start : start + data.size] = data
        return out

    accuracy = None
    if not candidates:
        k = 0
        if evaluate is not None and state.baseline is None:  # one evaluation says where it stands
            state.baseline = _checked(evaluate, name, original)
            state.evaluations += 1
    elif evaluate is None:
        k = len(candidates)
    else:
        try:
            plan = index.plan_replacements(
                candidates, lambda k: evaluate(name, apply(k)), max_accuracy_drop=budget, baseline=state.baseline
            )
        except index.EvaluationError as exc:
            raise EvaluatorError(f"the evaluator raised on model {name!r}: {exc.__cause__!r}; the store was not changed") from exc.__cause__
        except (index.InvalidArgumentError, index.InvalidTypeError) as exc:
            raise EvaluatorError(f"the evaluator's answer for model {name!r} is unusable: {exc}; the store was not changed") from None
        k = plan.k
        state.evaluations += plan.evaluations
        state.baseline = plan.baseline
        accuracy = plan.accuracy if k else state.accuracy
        state.done = k == 0  # the best it was offered did not fit: its budget is spent
    new = {c.position: c.representative for c in candidates[:k]}
    for c in candidates[:k]:
        b = blocks[c.position]
        state.replaced.append(Replaced(positions[c.position], c.position, c.representative, b.nbytes, c.error, b.stored, level))
        state.positions[c.position] = positions[c.position]
    state.mapping.update(new)
    if k:
        state.accuracy = accuracy
    if k or state.digests is None:
        state.digests = {t: _digest(v) for t, v in apply(k).items()}
    state.rounds.append({"level": level, "candidates": len(candidates), "accepted": k,
                         "accuracy": state.accuracy if state.replaced else state.baseline,
                         "evaluations": state.evaluations})
    return new


class BlockSearch:
    """The store's float blocks in FAISS LSH indexes, one per block class, for a dedup pass.

    Hashing every representative for every model cost most of a pass (the index was rebuilt
    per model: 55 MB/s on the MiniLM family, docs/benchmarks.md). Here each block is read,
    hashed and normed once; :meth:`sync` then brings the indexes in step with a snapshot,
    and :meth:`find` hides the querying model's private blocks instead of leaving them out
    of a fresh index. The representatives are thus exactly those of a per-model rebuild.

    Blocks never change content under an id (ids are never reused); the digest is compared
    anyway, and a block whose digest differs is indexed afresh.
    """

    def __init__(self) -> None:
        # The indexes hold codes and norms only (keep_vectors=False): the vectors are read
        # from the store's pages when a pair needs an exact check (_fetch), so the pass's
        # memory does not grow with the store's float bytes.
        self._indexes = index.LSHIndexes(keep_vectors=False)
        self._known: dict[int, tuple[tuple[int, int, int], bytes]] = {}  # id -> (class, digest)
        # id -> (sealed catalog value, its record): an unchanged value is not decoded again.
        self._records: dict[int, tuple[bytes, cat.BlockRecord]] = {}
        # The snapshot of the last sync, while its transaction lives (see release()):
        # where each float block lies now (blocks move when pages are compacted).
        self._blocks: dict[int, cat.BlockRecord] | None = None
        self._reader = None

    def sync(self, store, txn: lmdb.Transaction, reader) -> dict[int, cat.BlockRecord]:
        """Index the float blocks of ``txn``'s snapshot and forget those no longer in it.

        Until :meth:`release` (or the next sync), :meth:`vector` and :meth:`find` read the
        blocks' vectors from this snapshot's pages: ``txn`` must stay open meanwhile.

        Parameters
        ----------
        store : Store
            The store ``txn`` belongs to.
        txn : lmdb.Transaction
            The snapshot to follow.
        reader : tensorstore.readpath.ReadPath
            Reads (and verifies) the pages of ``txn``; share it to read each page once.

        Returns
        -------
        dict
            Every float block of the snapshot, by id.
        """
        self.release()
        blocks = self._float_blocks(store, txn)
        self._blocks, self._reader = blocks, reader
        gone: dict[tuple[int, int, int], list[int]] = {}
        for i, (cls, digest) in self._known.items():
            b = blocks.get(i)
            if b is None or b.digest != digest:
                gone.setdefault(cls, []).append(i)
        for cls, ids in gone.items():
            self._indexes.remove(cls, np.array(ids, dtype=np.int64))
            for i in ids:
                del self._known[i]
        new: dict[tuple[int, int, int], list[cat.BlockRecord]] = {}
        for i, b in blocks.items():
            if i not in self._known:
                new.setdefault(_block_class(b), []).append(b)
        for cls, records in new.items():
            dim = cls[2] // _FLOAT_CODES[cls[1]].itemsize
            # Hashed in bounded chunks: only one chunk of vectors is ever in memory.
            rows = max(1, min(_HASH_CHUNK_BLOCKS, _HASH_CHUNK_BYTES // (4 * dim)))
            buffer = np.empty((min(rows, len(records)), dim), dtype=np.float32)
            for start in range(0, len(records), rows):
                chunk = records[start : start + rows]
                ids = np.array([b.block_id for b in chunk], dtype=np.int64)
                vectors = self._fetch(ids, out=buffer[: len(chunk)])
                self._indexes.add(cls, ids, vectors)
                for b in chunk:
                    self._known[b.block_id] = (cls, b.digest)
        return blocks

    def release(self) -> None:
        """Forget the synced snapshot's pages (call before its transaction ends)."""
        self._blocks = self._reader = None

    def _float_blocks(self, store, txn: lmdb.Transaction) -> dict[int, cat.BlockRecord]:
        """The float blocks of the snapshot; records whose value is unchanged since the
        last sync are reused (their checksum was verified then)."""
        out: dict[int, cat.BlockRecord] = {}
        previous, current = self._records, {}
        with txn.cursor(db=store.env.dbs["blocks"]) as cur:
            for k, v in cur:
                block_id = cat.ID.unpack(bytes(k))[0]
                raw = bytes(v)
                hit = previous.get(block_id)
                b = hit[1] if hit is not None and hit[0] == raw else cat.decode_block(block_id, raw)
                current[block_id] = (raw, b)
                if b.dtype_code in _FLOAT_CODES:
                    out[block_id] = b
        self._records = current
        return out

    def vector(self, block_id: int) -> np.ndarray:
        """The float32 vector of a float block of the synced snapshot (read from its page)."""
        return self._fetch(np.array([block_id], dtype=np.int64))[0]

    def find(
        self,
        blocks: dict[int, cat.BlockRecord],
        private: set[int],
        queries: list[int],
        tolerance: float,
        *,
        exhaustive: bool = False,
    ) -> dict[int, tuple[int, float]]:
        """For each query block, the closest non-private block of its class within tolerance.

        ``blocks`` is what the last :meth:`sync` returned. Representatives are every float
        block that is not private to the model, within the query's class (dedup domain,
        dtype, length): blocks of another dedup domain are never compared. ``exhaustive``
        searches every pair instead of the LSH (the reference for recall).
        """
        tol = index.RelativeL2(tolerance)
        by_query_class: dict[tuple[int, int, int], list[int]] = {}
        for i in queries:
            by_query_class.setdefault(_block_class(blocks[i]), []).append(i)
        hidden = np.fromiter(private, dtype=np.int64, count=len(private))
        fetch = self._fetch
        matches: dict[int, tuple[int, float]] = {}
        for cls, ids in by_query_class.items():
            qids = np.array(ids, dtype=np.int64)
            if not exhaustive:
                found = self._indexes.match_stored(cls, qids, tol, exclude=hidden, fetch=fetch)
            else:
                reps = [i for i, b in blocks.items() if i not in private and _block_class(b) == cls]
                if not reps:
                    continue
                found = index.exhaustive_match(np.array(reps, dtype=np.int64), fetch(np.array(reps, dtype=np.int64)),
                                               fetch(qids), tol, query_ids=qids)
            for i, rep, err in zip(ids, found.ids.tolist(), found.errors.tolist()):
                if rep >= 0:
                    matches[i] = (int(rep), float(err))
        return matches

    def _fetch(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The float32 vectors of float blocks of one class, read from the synced
        snapshot's pages (F16, BF16 and F64 converted: the index only proposes and ranks)."""
        blocks, reader = self._blocks, self._reader
        if blocks is None:
            raise RuntimeError("BlockSearch: no live snapshot; sync() within an open read transaction first")
        ids = ids.tolist()
        if not ids:
            raise InvalidArgumentError("no block ids to fetch")
        first = blocks[ids[0]]
        dtype = _FLOAT_CODES[first.dtype_code]
        count = first.nbytes // dtype.itemsize
        if out is None:
            out = np.empty((len(ids), count), dtype=np.float32)
        out[:] = reader.blocks_bytes([blocks[i] for i in ids]).view(dtype)
        return out


def _block_class(b: cat.BlockRecord) -> tuple[int, int, int]:
    return (b.domain, b.dtype_code, b.nbytes)


def gather(store, txn, name: str, search: BlockSearch):
    """What dedup needs of one model in one snapshot: its record, a function reading its
    tensors (call it while ``txn`` lives), the store's float blocks (``search`` synced to
    the snapshot) and which of them are private to it."""
    from .readpath import ReadPath

    record = store.record(txn, name)
    reader = ReadPath(store, txn, verify=True)
    blocks = search.sync(store, txn, reader)

    def read_tensors() -> dict[str, np.ndarray]:
        return {t.name: reader.tensor(t) for t in record.tensors}

    return record, read_tensors, blocks, private_blocks(record, blocks)


def base_ranks(store, txn: lmdb.Transaction) -> tuple[dict[str, tuple[int, int]], dict[int, tuple[int, int]]]:
    """How much of a base each model is, and the best rank among each block's models.

    A model ranks higher the more other models share blocks with it (a base shares with
    every fine-tune of it; a fine-tune mostly with its base); of equals, the one added
    first (a base is added before what is tuned from it). Lower tuples rank higher.
    """
    owners: dict[int, set[str]] = {}
    ids: dict[str, int] = {}
    for m in store.records(txn):
        ids[m.name] = m.model_id
        for t in m.tensors:
            for i in t.block_ids.tolist():
                owners.setdefault(i, set()).add(m.name)
    partners: dict[str, set[str]] = {n: set() for n in ids}
    for names in owners.values():
        if len(names) > 1:
            for n in names:
                partners[n] |= names
    rank = {n: (-(len(partners[n]) - (n in partners[n])), ids[n]) for n in ids}
    best = {i: min(rank[n] for n in names) for i, names in owners.items()}
    return rank, best


def private_blocks(record: ModelRecord, blocks: dict[int, cat.BlockRecord]) -> set[int]:
    """The model's float blocks that no other model references."""
    own = Counter(int(i) for t in record.tensors for i in t.block_ids)
    return {i for i, n in own.items() if i in blocks and blocks[i].refs == n}


def _representative_bytes(store, ids: set[int]) -> dict[int, np.ndarray]:
    """The stored bytes of the chosen representatives (blocks never change content)."""
    from .readpath import ReadPath

    out = {}
    with store.env.read() as txn:
        reader = ReadPath(store, txn, verify=True)
        for i in ids:
            value = txn.get(id_key(i), db=store.env.dbs["blocks"])
            if value is None:
                raise ConflictError(f"block {i} was deleted while dedup planned; run dedup again")
            b = cat.decode_block(i, value)
            out[i] = reader.block_bytes(b).copy()
    return out


def _checked(evaluate, name: str, tensors: dict[str, np.ndarray]) -> float:
    try:
        value = evaluate(name, tensors)
    except Exception as exc:
        raise EvaluatorError(f"the evaluator raised on model {name!r}: {exc!r}; the store was not changed") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EvaluatorError(f"the evaluator returned {type(value).__name__} for model {name!r}, not a number")
    if not math.isfinite(float(value)):
        raise EvaluatorError(f"the evaluator returned {value} for model {name!r}; it must be a finite number")
    return float(value)


def _apply(store, txn: lmdb.Transaction, planned: _Planned, tolerance: float) -> None:
    from .readpath import ReadPath

    name = planned.record.name
    env = store.env
    current = store.record(txn, name)
    if (current.model_id, current.created) != (planned.record.model_id, planned.record.created):
        raise ConflictError(f"model {name!r} changed while dedup planned it; run dedup again")
    state = store.state(txn)
    writer = BlockWriter(txn, env.dbs, store.page_file, state)
    tensors = []
    for t in current.tensors:
        ids = t.block_ids.copy()
        for k, i in enumerate(ids.tolist()):
            rep = planned.mapping.get(i)
            if rep is not None:
                if txn.get(id_key(rep), db=env.dbs["blocks"]) is None:
                    raise ConflictError(f"a representative block of model {name!r} was deleted meanwhile; run dedup again")
                writer.reference_id(rep)
                writer.release(i)
                ids[k] = rep
        tensors.append(TensorRecord(t.name, t.dtype, t.shape, t.nbytes, t.step, ids))
    writer.flush()
    record = replace(current, tensors=tuple(tensors))
    txn.put(name.encode(), cat.encode_model(record), db=env.dbs["models"])
    store.put_state(txn, state)
    r = planned.result
    now = time.time()
    for rep in r.replaced:
        row = {
            "model": name, "positions": rep.positions, "block_id": rep.block_id, "representative": rep.representative,
            "nbytes": rep.nbytes, "error": rep.error, "tolerance": tolerance,
            "accuracy_before": r.accuracy_before, "accuracy_after": r.accuracy_after, "time": now,
        }
        txn.put(_AUDIT_KEY.pack(current.model_id, rep.block_id), json.dumps(row).encode(), db=env.dbs["replacements"])
    # What is stored must be exactly what the evaluator judged.
    reader = ReadPath(store, txn, verify=True)
    for t in record.tensors:
        if _digest(reader.tensor(t)) != planned.digests[t.name]:
            raise CorruptionError(f"dedup of model {name!r}: tensor {t.name!r} as stored differs from the evaluated one")


def drop_audit(txn: lmdb.Transaction, db, model_id: int) -> None:
    """Forget the replacements recorded for a model (it was deleted or replaced)."""
    prefix = model_id.to_bytes(8, "big")
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            while bytes(cur.key())[:8] == prefix:
                if not cur.delete():
                    break


def audit_rows(txn: lmdb.Transaction, db) -> list[dict]:
    with txn.cursor(db=db) as cur:
        return [json.loads(bytes(v)) for _, v in cur]
