"""Content codes kept in the store: each reference-eligible block's 64-bit LSH code, found
again by a few LMDB reads (SPEC §4: ingest cost grows with the model, not the store).

A block is *coded* when it may serve as a delta reference found by content
(:mod:`tensorstore.contentrefs`): a float block of at least :data:`MIN_CODED_BYTES`
that is not itself a delta (decode depth 1). Its code is the sign of 64 random
projections of its sampled elements (:func:`codes_of`), computed from the decoded bytes
when the block is written, in the same write transaction as the block
(:class:`CodeLog`, kept by :class:`tensorstore.blockwriter.BlockWriter`), and deleted in
the transaction that frees the block or turns it into a delta (``compact``: :func:`prune`).
A delete that finds a full disk leaves the index entries of its codes behind, stale,
until a lookup meets them or ``compact`` runs (:func:`delete` says why).

Two databases hold them:

``contentcodes``   block id (u64)                     -> class, code (sealed with XXH3)
``contentindex``   class, chunk number, chunk bits    -> code, block id (many per key)

``contentindex`` is a multi-index hash (:data:`LAYOUT`): the code is cut into 7 pieces of
9-10 bits and the block is filed under each piece's bits. Two codes within 6 bits differ
in at most 6 of the 7 pieces, so they agree exactly on one (pigeonhole): the blocks within
6 bits of a query are among those filed under its 7 pieces, read with one LMDB call of 7
keys, the entries under them checked by popcount. A class's codes are spread over 512
values per piece, so a lookup reads about 7/512 of them (about 1,400 entries, 22 KB, in a
class of 100,000 coded blocks; ``docs/benchmarks.md`` measures what that costs). A class is (dedup domain, dtype, block
length): only blocks of the same class can be a delta's reference.

``meta[b"contentcodes"]`` (:class:`Marker`) names the projection the codes were made with
(a fingerprint: codes made by another projection are wiped and made again) and the range
of block ids that may still lack a code: the blocks a store held before this library
version opened it read-write. :func:`backfill` codes them in steps, each its own write
transaction that also moves the range on, so a killed backfill resumes where it stopped;
it runs before the first add that may look blocks up by content.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass, field

import lmdb
import numpy as np
import xxhash

from . import catalog as cat
from . import codec
from .dtypes import DTYPE_CODES, DTYPES, FLOAT_NAMES
from .errors import CorruptionError

CODES_DB = "contentcodes"
INDEX_DB = "contentindex"
MARKER_KEY = b"contentcodes"
#: Elements a block is represented by (sampled with a power-of-two stride, zero-padded).
VECTOR_DIM = 1024
NBITS = 64


@dataclass(frozen=True, slots=True)
class Layout:
    """How codes are filed: ``pieces`` (bit widths, summing to 64), and how many bits of
    a piece a lookup flips (``radius``). A code within ``len(pieces) * (radius + 1) - 1``
    bits of a query (:attr:`reach`) is within ``radius`` bits of it on one piece at least
    (pigeonhole), so a lookup reads, per piece, the key of the query's bits and of every
    value within ``radius`` bits of them."""

    pieces: tuple[int, ...]
    radius: int
    shifts: tuple[int, ...] = field(init=False, repr=False, compare=False)  # of each piece, from the low bit

    def __post_init__(self) -> None:
        if sum(self.pieces) != NBITS or not all(1 <= w <= 16 for w in self.pieces) or self.radius not in (0, 1):
            raise ValueError(f"pieces {self.pieces} must be 1-16 bits each, {NBITS} in all; radius 0 or 1")
        object.__setattr__(self, "shifts", tuple(NBITS - sum(self.pieces[: i + 1]) for i in range(len(self.pieces))))

    @property
    def reach(self) -> int:
        return len(self.pieces) * (self.radius + 1) - 1

    def probes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(piece number, XOR mask)`` of each key a lookup reads, in order."""
        numbers, masks = [], []
        for i, width in enumerate(self.pieces):
            flips = [0] + ([1 << b for b in range(width)] if self.radius else [])
            numbers += [i] * len(flips)
            masks += flips
        return np.array(numbers, dtype=np.uint8), np.array(masks, dtype=np.uint16)


#: The store's layout: 7 pieces of 9-10 bits read exactly (7 keys a lookup, each holding
#: 1/512 of a class's codes on average: about 1,400 entries read in a class of 100,000
#: codes). Measured against 4 pieces of 16 bits probed within 1 bit (68 keys, 1/65,536
#: each), which reads fewer entries but spends more on its 68 B-tree descents up to
#: 10^5 codes: ``docs/benchmarks.md``, Content references.
LAYOUT = Layout((10, 9, 9, 9, 9, 9, 9), 0)
PIECES = LAYOUT.pieces
#: Blocks below this many bytes are not coded: a delta of a few dozen bytes saves nothing
#: worth a lookup, and the sign code of a handful of elements says little (every positive
#: scalar has the same code), so such codes would crowd one bucket per class.
MIN_CODED_BYTES = 256
FLOAT_DTYPES = {DTYPE_CODES[n]: DTYPES[n] for n in FLOAT_NAMES if n in DTYPE_CODES}
#: Stored blocks a backfill step codes (or up to :data:`_BACKFILL_STEP_BYTES` decoded).
BACKFILL_STEP_BLOCKS = 4096
_BACKFILL_STEP_BYTES = 128 << 20
_BATCH = 256  # blocks projected at once
# Rows a matrix product takes at once: OpenBLAS runs a product of up to 2^18 multiply-adds
# on one thread; a larger one wakes its own threads, which then spin for about 0.1 s on the
# core that the codec's encoding needs (130 against 10 ms of CPU for 256 rows here, for
# 0.4 against 1.2 ms of wall time). 4 x 1024 x 64 = 2^18.
_GEMM_ROWS = 4

_CLASS = struct.Struct(">IBI")  # domain, dtype code, decoded bytes
_CODE = struct.Struct(">IBIQ")  # class, code
MAX_FOUND = LAYOUT.reach
_KEY_BYTES = _CLASS.size + 3  # class, piece number (u8), piece bits (u16)
_KEY = np.dtype([("cls", f"V{_CLASS.size}"), ("piece", "u1"), ("bits", ">u2")])
_ENTRY_BYTES = 16  # code, block id: little-endian u64s
_RECORD = np.dtype([("key", f"V{_KEY_BYTES}"), ("code", "<u8"), ("id", "<u8")])  # a getmulti record

Class = tuple[int, int, int]  # (dedup domain, dtype code, bytes)


def coded(b: cat.BlockRecord) -> bool:
    """Whether block ``b`` carries a content code (may be a reference found by content)."""
    return b.encoding != codec.DELTA and eligible(b.dtype_code, b.nbytes)


def eligible(dtype_code: int, nbytes: int) -> bool:
    """Whether a block of this dtype and length is coded unless it is a delta."""
    return dtype_code in FLOAT_DTYPES and nbytes >= MIN_CODED_BYTES


def class_of(b: cat.BlockRecord) -> Class:
    return (b.domain, b.dtype_code, b.nbytes)


# -- codes ------------------------------------------------------------------------------

_projection_lock = threading.Lock()
_projection = None
_fingerprint: str | None = None


def _matrix() -> np.ndarray:
    """The fixed projection, ``(VECTOR_DIM, NBITS)`` float32: the random orthonormal
    directions of ``tensorstore_index.LSHIndex`` with seed 0 (the near-duplicate pass's),
    taken out of FAISS once per process and applied with numpy (a third of FAISS's time
    for a batch of 256 here: it is on every new block's path)."""
    global _projection, _fingerprint
    with _projection_lock:
        if _projection is None:
            import faiss
            import tensorstore_index as index

            rotation = index.LSHIndex(VECTOR_DIM, nbits=NBITS, seed=0, keep_vectors=False)._projection
            a = faiss.vector_to_array(rotation.A).reshape(rotation.d_out, rotation.d_in)
            matrix = np.ascontiguousarray(a.T, dtype=np.float32)
            probe = np.sin(np.outer(np.arange(1, 9), np.arange(VECTOR_DIM)) * 0.37).astype(np.float32)
            _fingerprint = hashlib.blake2b(np.packbits(probe @ matrix > 0, axis=1).tobytes(), digest_size=8).hexdigest()
            _projection = matrix
        return _projection


def fingerprint() -> str:
    """What names this process's projection: equal fingerprints, comparable codes."""
    _matrix()
    return _fingerprint


def _stride(n: int) -> int:
    stride = 1
    while -(-n // stride) > VECTOR_DIM:
        stride *= 2
    return stride


def _sample_into(row: np.ndarray, data, dtype: np.dtype) -> None:
    """Every ``s``-th element of ``data`` into ``row`` (float32, zeroed past them)."""
    n = len(data) // dtype.itemsize
    stride = _stride(n)
    width = -(-n // stride)
    if dtype.itemsize > 4:
        with np.errstate(over="ignore", invalid="ignore"):  # float64 past float32's range: inf, zeroed later
            row[:width] = np.frombuffer(data, dtype=dtype, count=n)[::stride]
    else:  # no cast can overflow (and errstate costs as much as the copy)
        row[:width] = np.frombuffer(data, dtype=dtype, count=n)[::stride]
    row[width:] = 0


def vectors(blocks: list, dtype_code: int) -> np.ndarray:
    """The LSH vectors of blocks (bytes-like) of one class: every ``s``-th element (``s``
    a power of two), as float32, zero-padded to :data:`VECTOR_DIM`.

    With the codec's C kernel the elements of every block are gathered in one call and
    cast in one (a block's own numpy calls cost 20-25 us of the adding thread's time)."""
    dtype = FLOAT_DTYPES[dtype_code]
    out = np.empty((len(blocks), VECTOR_DIM), dtype=np.float32)
    if codec.KERNEL is None or len({len(b) for b in blocks}) > 1:
        for row, data in enumerate(blocks):
            _sample_into(out[row], data, dtype)
        return out
    if blocks:
        gathered = np.empty((len(blocks), VECTOR_DIM), dtype=dtype)
        stride = _stride(len(blocks[0]) // dtype.itemsize)
        codec.KERNEL.gather(blocks, dtype.itemsize, stride, VECTOR_DIM, gathered.view(np.uint8).reshape(-1))
        with np.errstate(over="ignore", invalid="ignore"):  # float64 past float32's range: inf, zeroed later
            out[:] = gathered
    return out


def project(vecs: np.ndarray) -> np.ndarray:
    """64-bit codes (uint64) of :func:`vectors` rows: bit ``63 - j`` is the sign of the
    projection on direction ``j``."""
    if not len(vecs):
        return np.zeros(0, dtype=np.uint64)
    matrix = _matrix()
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are redone below
        projected = np.concatenate([vecs[i : i + _GEMM_ROWS] @ matrix for i in range(0, len(vecs), _GEMM_ROWS)])
    bad = ~np.isfinite(projected).all(axis=1)
    if bad.any():
        # A non-finite value turns every projection of its row NaN; as zero it only blurs
        # the proposal, and the codec's byte count decides anyway.
        projected[bad] = np.nan_to_num(vecs[bad], nan=0.0, posinf=0.0, neginf=0.0) @ matrix
    bits = np.packbits(projected > 0, axis=1)
    return bits.view(">u8").ravel().astype(np.uint64)


def codes_of(blocks: list, dtype_code: int) -> np.ndarray:
    """The content codes of blocks (bytes-like, decoded) of one dtype and length."""
    return project(vectors(blocks, dtype_code))


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[x.view(np.uint8)].reshape(-1, 8).sum(axis=1)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _index_keys(cls: Class, code: int, layout: Layout = LAYOUT) -> list[bytes]:
    """The keys a code is filed under: one per piece, its exact bits."""
    head = _CLASS.pack(*cls)
    return [head + bytes((i,)) + ((code >> shift) & ((1 << width) - 1)).to_bytes(2, "big")
            for i, (width, shift) in enumerate(zip(layout.pieces, layout.shifts))]


def probe_keys(cls: Class, codes: np.ndarray, layout: Layout = LAYOUT, filing: bool = False) -> list[list[bytes]]:
    """For each query code, the keys a lookup reads (built for all queries at once); with
    ``filing``, the keys the code is filed under (its pieces' own bits)."""
    numbers, masks = layout.probes() if not filing else (np.arange(len(layout.pieces), dtype=np.uint8),
                                                           np.zeros(len(layout.pieces), dtype=np.uint16))
    codes = np.asarray(codes, dtype=np.uint64)
    bits = np.stack([(codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
                     for width, shift in zip(layout.pieces, layout.shifts)], axis=1).astype(np.uint16)
    keys = np.empty((len(codes), len(numbers)), dtype=_KEY)
    keys["cls"] = _CLASS.pack(*cls)
    keys["piece"] = numbers
    keys["bits"] = bits[:, numbers] ^ masks
    raw, n, size = keys.tobytes(), len(numbers), _KEY_BYTES
    flat = [raw[i : i + size] for i in range(0, len(raw), size)]
    return [flat[j * n : (j + 1) * n] for j in range(len(codes))]


def _entry(code: int, block_id: int) -> bytes:
    return code.to_bytes(8, "little") + block_id.to_bytes(8, "little")


def _seal(payload: bytes) -> bytes:
    return payload + xxhash.xxh3_64_digest(payload)


def decode_code(block_id: int, value) -> tuple[Class, int]:
    """``(class, code)`` of a ``contentcodes`` record; ``CorruptionError`` if damaged."""
    value = bytes(value)
    if len(value) != _CODE.size + 8 or xxhash.xxh3_64_digest(value[:-8]) != value[-8:]:
        raise CorruptionError(f"the content code of block {block_id} failed its checksum")
    domain, dtype_code, nbytes, code = _CODE.unpack(value[:-8])
    return (domain, dtype_code, nbytes), code


# -- the tables ---------------------------------------------------------------------------


def available(dbs: dict) -> bool:
    """Whether the handle has the code tables (a read-only handle of a store no version
    with codes has opened read-write has not)."""
    return CODES_DB in dbs and INDEX_DB in dbs


def put(txn: lmdb.Transaction, dbs: dict, block_id: int, cls: Class, code: int) -> None:
    put_many(txn, dbs, [(block_id, cls, code)])


def put_many(txn: lmdb.Transaction, dbs: dict, codes: list[tuple[int, Class, int]], layout: Layout = LAYOUT) -> None:
    """Keep ``(block id, class, code)`` triples: the records, and the index entries in key
    order (one LMDB call; neighbouring keys share B-tree pages)."""
    entries = []
    by_class: dict[Class, list[tuple[int, int]]] = {}
    with txn.cursor(db=dbs[CODES_DB]) as cur:
        for block_id, cls, code in codes:
            cur.put(cat.id_key(block_id), _seal(_CODE.pack(*cls, code)))
            by_class.setdefault(cls, []).append((block_id, code))
    for cls, pairs in by_class.items():
        keys = probe_keys(cls, np.array([c for _, c in pairs], dtype=np.uint64), layout, filing=True)
        for (block_id, code), filed in zip(pairs, keys):
            entry = _entry(code, block_id)
            entries += [(key, entry) for key in filed]
    entries.sort()
    with txn.cursor(db=dbs[INDEX_DB]) as cur:
        cur.putmulti(entries, dupdata=True)


def delete(txn: lmdb.Transaction, dbs: dict, block_id: int, keep_entries: bool = False) -> bool:
    """Remove a block's code and its index entries; False if it had none.

    With ``keep_entries`` the index entries stay, *stale* (an entry whose block has no
    code record): deleting them touches a random B-tree page per piece, more than a
    delete on a full disk may have room for (``Store.delete_model`` retries so, and
    ``tests/reliability/test_full_disk.py`` frees space by deleting models). Block ids are
    never reused, so a stale entry can never name another block; a lookup skips it and
    deletes it (:func:`drop_stale`), and ``compact`` deletes them all (:func:`prune`)."""
    key = cat.id_key(block_id)
    value = txn.get(key, db=dbs[CODES_DB])
    if value is None:
        return False
    if not keep_entries:
        cls, code = decode_code(block_id, value)
        drop_stale(txn, dbs, cls, [(block_id, code)])
    txn.delete(key, db=dbs[CODES_DB])
    return True


def drop_stale(txn: lmdb.Transaction, dbs: dict, cls: Class, stale: list[tuple[int, int]]) -> None:
    """Delete the index entries of ``(block id, code)`` pairs of class ``cls`` (whose
    code records are gone, or going)."""
    for block_id, code in stale:
        entry = _entry(code, block_id)
        for k in _index_keys(cls, code):
            txn.delete(k, entry, db=dbs[INDEX_DB])


def is_coded(txn: lmdb.Transaction, dbs: dict, block_id: int) -> bool:
    """Whether block ``block_id`` has a code record (its index entries are not stale)."""
    return txn.get(cat.id_key(block_id), db=dbs[CODES_DB]) is not None


def has_class(txn: lmdb.Transaction, dbs: dict, cls: Class) -> bool:
    """Whether any block of class ``cls`` is coded (one B-tree descent)."""
    head = _CLASS.pack(*cls)
    with txn.cursor(db=dbs[INDEX_DB]) as cur:
        return cur.set_range(head) and bytes(cur.key()).startswith(head)


def search(txn: lmdb.Transaction, dbs: dict, cls: Class, codes: np.ndarray, max_distance: int,
           k: int, layout: Layout = LAYOUT, read: list | None = None) -> list[list[int]]:
    """For each query code of class ``cls``: the ids of up to ``k`` indexed blocks within
    ``max_distance`` bits (at most the layout's reach, :data:`MAX_FOUND`: the pieces
    guarantee no more), nearest first (then oldest); stale entries included (the caller
    checks: :func:`is_coded`). One LMDB call per query, of the keys of its pieces; the
    cost beyond it is the entries filed under them (their count per query is appended to
    ``read`` if given)."""
    return [[i for _, i, _ in hits] for hits in near(txn, dbs, cls, codes, max_distance, k, layout, read)]


def near(txn: lmdb.Transaction, dbs: dict, cls: Class, codes: np.ndarray, max_distance: int,
         k: int, layout: Layout = LAYOUT, read: list | None = None) -> list[list[tuple[int, int, int]]]:
    """:func:`search` with each hit as ``(distance, block id, code)``."""
    if max_distance > layout.reach:
        raise ValueError(f"max_distance {max_distance} exceeds the {layout.reach} bits the content index finds")
    out: list[list[tuple[int, int, int]]] = []
    with txn.cursor(db=dbs[INDEX_DB]) as cur:
        for q, keys in zip(codes.tolist(), probe_keys(cls, codes, layout)):
            found = cur.getmulti(keys, dupdata=True, dupfixed_bytes=_ENTRY_BYTES, keyfixed=True)
            entries = np.frombuffer(found, dtype=_RECORD)
            if read is not None:
                read.append(len(entries))
            hit = np.flatnonzero(popcount(entries["code"] ^ np.uint64(q)) <= max_distance) if len(entries) else ()
            if len(hit):
                found = {(bin(c ^ q).count("1"), i, c) for c, i in zip(entries["code"][hit].tolist(), entries["id"][hit].tolist())}
                out.append(sorted(found)[:k])  # nearest, then oldest; a block is filed per piece
            else:
                out.append([])
    return out


# -- the marker: which projection, which blocks may lack a code --------------------------


@dataclass(frozen=True, slots=True)
class Marker:
    """``projection``: the fingerprint the codes were made with; block ids in
    ``[todo_start, todo_end)`` may lack a code (coded blocks outside it all have one)."""

    projection: str
    todo_start: int
    todo_end: int

    @property
    def complete(self) -> bool:
        return self.todo_start >= self.todo_end


def read_marker(txn: lmdb.Transaction, dbs: dict) -> Marker | None:
    value = txn.get(MARKER_KEY, db=dbs["meta"])
    if value is None:
        return None
    value = bytes(value)
    if len(value) < 8 or xxhash.xxh3_64_digest(value[:-8]) != value[-8:]:
        raise CorruptionError("the content codes' marker failed its checksum")
    try:
        doc = json.loads(value[:-8])
        return Marker(str(doc["projection"]), int(doc["todo"][0]), int(doc["todo"][1]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptionError(f"the content codes' marker is damaged ({exc})") from None


def write_marker(txn: lmdb.Transaction, dbs: dict, m: Marker) -> None:
    doc = {"projection": m.projection, "todo": [m.todo_start, m.todo_end]}
    txn.put(MARKER_KEY, _seal(json.dumps(doc, separators=(",", ":")).encode()), db=dbs["meta"])


def current_marker(txn: lmdb.Transaction, dbs: dict, first_new_id: int) -> Marker:
    """The marker a writer that adds or frees codes works under, brought to this process's
    projection: a store without one has no codes (every block before ``first_new_id``, the
    first id this transaction may write, is still to be coded); one made with another
    projection has its codes wiped and all its blocks to be coded again."""
    m = read_marker(txn, dbs)
    mine = fingerprint()
    if m is not None and m.projection == mine:
        return m
    if m is not None:  # codes of another projection: not comparable with ours
        txn.drop(dbs[CODES_DB], delete=False)
        txn.drop(dbs[INDEX_DB], delete=False)
    m = Marker(mine, 1, first_new_id)
    write_marker(txn, dbs, m)
    return m


# -- writing ------------------------------------------------------------------------------


class CodeLog:
    """The codes of the blocks one write transaction adds, made as they are placed (the
    decoded bytes are at hand then, not later) and written by :meth:`flush` with the
    blocks, less those the transaction freed again; and the codes of freed blocks, deleted."""

    def __init__(self) -> None:
        self._rows: dict[Class, list] = {}  # class -> [(block ids, their vector rows)] not projected yet
        self._codes: dict[int, tuple[Class, int]] = {}  # block id -> (class, code)
        self.known: dict[bytes, int] = {}  # content digest -> code, of blocks a lookup coded
        self.keep_entries = False  # freed codes leave their index entries stale (``delete``)

    def note(self, block_id: int, domain: int, dtype_code: int, data, digest: bytes | None = None) -> None:
        """A new block that is not a delta, with its decoded bytes (and its content
        digest: a block looked up by content was coded then, and is not coded again)."""
        self.note_many([block_id], domain, dtype_code, [data], [digest])

    def note_many(self, block_ids: list[int], domain: int, dtype_code: int, blocks: list,
                  digests: list[bytes | None]) -> None:
        """``note`` of each block, sampled together (``blocks`` may be reused buffers:
        they are sampled before this returns)."""
        todo: dict[Class, tuple[list[int], list]] = {}
        for block_id, data, digest in zip(block_ids, blocks, digests):
            if not eligible(dtype_code, len(data)):
                continue
            cls = (domain, dtype_code, len(data))
            code = self.known.get(digest) if digest is not None else None
            if code is not None:
                self._codes[block_id] = (cls, code)
                continue
            ids, datas = todo.setdefault(cls, ([], []))
            ids.append(block_id)
            datas.append(data)
        for cls, (ids, datas) in todo.items():
            pending = self._rows.setdefault(cls, [])
            pending.append((ids, vectors(datas, dtype_code)))
            if sum(len(i) for i, _ in pending) >= _BATCH:
                self._project(cls)

    def _project(self, cls: Class) -> None:
        pending = self._rows.pop(cls, [])
        if pending:
            codes = project(np.concatenate([rows for _, rows in pending]))  # one matrix product a batch
            for block_id, code in zip((i for ids, _ in pending for i in ids), codes.tolist()):
                self._codes[block_id] = (cls, code)

    def flush(self, txn: lmdb.Transaction, dbs: dict, first_new_id: int, live: set[int],
              freed: list[cat.BlockRecord]) -> None:
        """Write the codes of the new blocks still ``live``; delete those of ``freed``
        blocks committed before this transaction."""
        for cls in list(self._rows):
            self._project(cls)
        new = {i: v for i, v in self._codes.items() if i in live}
        old = [b for b in freed if b.block_id < first_new_id and coded(b)]
        if not (new or old) or not available(dbs):
            return
        current_marker(txn, dbs, first_new_id)
        for b in old:
            delete(txn, dbs, b.block_id, self.keep_entries)  # a block still to be backfilled has none
        put_many(txn, dbs, [(block_id, cls, code) for block_id, (cls, code) in new.items()])


def prune(txn: lmdb.Transaction, dbs: dict) -> int:
    """Delete the codes of blocks that left the store or became deltas (after ``compact``,
    which re-encodes in place), and every stale index entry; return how many codes went."""
    if not available(dbs):
        return 0
    gone = []
    with txn.cursor(db=dbs[CODES_DB]) as cur:
        for k in cur.iternext(keys=True, values=False):
            block_id = cat.ID.unpack(bytes(k))[0]
            value = txn.get(bytes(k), db=dbs["blocks"])
            if value is None or not coded(cat.decode_block(block_id, value)):
                gone.append(block_id)
    for block_id in gone:
        delete(txn, dbs, block_id)
    stale = []
    with txn.cursor(db=dbs[INDEX_DB]) as cur:
        for k, v in cur.iternext(keys=True, values=True):
            block_id = int.from_bytes(bytes(v)[8:], "little")
            if not is_coded(txn, dbs, block_id):
                stale.append((bytes(k), bytes(v)))
    for k, v in stale:
        txn.delete(k, v, db=dbs[INDEX_DB])
    return len(gone)


# -- backfill -----------------------------------------------------------------------------


def pending(store) -> bool:
    """Whether some stored blocks may still lack their code (or were coded by another
    projection): what :func:`backfill` would do."""
    env = store.env
    if not available(env.dbs):
        return False
    with env.read() as txn:
        m = read_marker(txn, env.dbs)
        if m is None:
            return store.state(txn).next_block_id > 1
        return not m.complete or m.projection != fingerprint()


def backfill(store, step_blocks: int = BACKFILL_STEP_BLOCKS) -> int:
    """Code every stored block that lacks its code, in steps of ``step_blocks`` (each one
    write transaction that also moves the marker on: a killed backfill resumes where it
    stopped); return how many blocks were coded."""
    from .readpath import ReadPath

    env = store.writable_env()
    total = 0

    def step(txn: lmdb.Transaction) -> tuple[bool, int]:
        dbs = env.dbs
        m = current_marker(txn, dbs, store.state(txn).next_block_id)
        if m.complete:
            return True, 0
        reader = ReadPath(store, txn, verify=True)
        todo: dict[Class, list[cat.BlockRecord]] = {}
        count = size = 0
        last = m.todo_end - 1
        with txn.cursor(db=dbs["blocks"]) as cur:
            if cur.set_range(cat.id_key(m.todo_start)):
                for k, v in cur:
                    block_id = cat.ID.unpack(bytes(k))[0]
                    if block_id >= m.todo_end or count >= step_blocks or size >= _BACKFILL_STEP_BYTES:
                        last = block_id - 1
                        break
                    b = cat.decode_block(block_id, v)
                    if coded(b) and txn.get(bytes(k), db=dbs[CODES_DB]) is None:
                        todo.setdefault(class_of(b), []).append(b)
                        count += 1
                        size += b.nbytes
        for cls, blocks in todo.items():
            for start in range(0, len(blocks), _BATCH):
                chunk = blocks[start : start + _BATCH]
                try:
                    data = reader.blocks_bytes(chunk)
                except (ValueError, CorruptionError) as exc:
                    raise CorruptionError(f"a stored block does not decode while its content code is made ({exc}); "
                                          "`tensorstore verify STORE` names the models that hold it") from None
                put_many(txn, dbs, [(b.block_id, cls, code) for b, code in zip(chunk, codes_of(list(data), cls[1]).tolist())])
        done = last + 1 >= m.todo_end
        write_marker(txn, dbs, Marker(m.projection, m.todo_end if done else last + 1, m.todo_end))
        return done, count

    while True:
        done, count = env.write(step)
        total += count
        if done:
            return total


# -- checking -----------------------------------------------------------------------------


def check(txn: lmdb.Transaction, dbs: dict, blocks: dict[int, cat.BlockRecord], problem) -> None:
    """``verify``'s part: every code names a stored, coded block of its class and is filed
    under each of its pieces; every coded block outside the marker's range has a code.
    The index may hold more: stale entries of blocks whose code was deleted (``delete``),
    which no lookup proposes."""
    if not available(dbs):
        return
    codes = txn.stat(dbs[CODES_DB])["entries"]
    try:
        marker = read_marker(txn, dbs)
    except CorruptionError as exc:
        problem(str(exc))
        return
    if marker is None:
        if codes or txn.stat(dbs[INDEX_DB])["entries"]:
            problem(f"the store keeps {codes} content codes but no marker naming their projection")
        return
    have: set[int] = set()
    with txn.cursor(db=dbs[CODES_DB]) as cur, txn.cursor(db=dbs[INDEX_DB]) as index:
        for k, v in cur:
            block_id = cat.ID.unpack(bytes(k))[0]
            try:
                cls, code = decode_code(block_id, v)
            except CorruptionError as exc:
                problem(str(exc))
                continue
            have.add(block_id)
            b = blocks.get(block_id)
            if b is None:
                problem(f"a content code names block {block_id}, which is not stored (a dangling code)")
            elif not coded(b):
                problem(f"block {block_id} has a content code but is a {codec.NAMES[b.encoding]} block of a class not coded")
            elif class_of(b) != cls:
                problem(f"the content code of block {block_id} names class {cls}, not the block's {class_of(b)}")
            entry = _entry(code, block_id)
            if not all(index.set_key_dup(key, entry) for key in _index_keys(cls, code)):
                problem(f"the content code of block {block_id} is missing from the content index")
    entries = txn.stat(dbs[INDEX_DB])["entries"]
    if entries < len(PIECES) * codes:  # more is allowed: the stale entries of freed blocks (``delete``)
        problem(f"the content index has {entries} entries for {codes} codes (at least {len(PIECES) * codes} expected)")
    for block_id, b in blocks.items():
        if coded(b) and block_id not in have and not marker.todo_start <= block_id < marker.todo_end:
            problem(f"block {block_id} has no content code")
