"""The catalog: the store's relational tables, kept in LMDB beside the pages.

Tables (one LMDB database each) and their keys:

``models``    model name (UTF-8)   -> the model's record: metadata and, per tensor, dtype,
                                      shape and the ids of its blocks in order
``blocks``    block id (u64)       -> where the block lives (page, offset, length), its
                                      reference count, dtype code and content digest
``hashes``    content digest (16B) -> block id: the exact-dedup index
``pagemeta``  page id (u64)        -> bytes used and live in the page, ids of its blocks
``meta``      a few fixed keys      -> store format, id counters, running totals, open pages

and, kept by :mod:`tensorstore.contentcodes`, ``contentcodes`` (block id -> its LSH code)
and ``contentindex`` (the codes' multi-index hash, for delta references found by content).

Every record ends with the XXH3-64 checksum of the rest and decodes through one function
here; a record that fails its checksum or does not decode raises ``CorruptionError``: the
catalog is input like any other and is never trusted blindly.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field

import numpy as np
import xxhash

from .dtypes import DTYPES
from .errors import CorruptionError

FORMAT_NAME = "tensorstore"
# 2: encoded blocks (block records gain encoding, stored length, reference); 3: encoded
# blocks' records may carry a BLAKE3 digest (``BlockRecord.strong``); 4: a delta may be an
# arithmetic difference (``codec``), which code for format 3 cannot decode; 5: every block
# that may be a reference found by content keeps its code (``contentcodes``), which code
# for format 4 would not keep up to date when it writes.
FORMAT_VERSION = 5
# A format-1 store is a format-2 store whose blocks are all raw; a format-2 store is a
# format-3 store none of whose records carries a BLAKE3 digest; a format-3 store is a
# format-4 store whose deltas are all XORs; a format-4 store is a format-5 store none of
# whose blocks is coded yet (its content-code marker says so once a writer has opened it).
READABLE_VERSIONS = (1, 2, 3, 4, 5)
ID = struct.Struct(">Q")  # big-endian ids: LMDB key order is id order


def id_key(n: int) -> bytes:
    return ID.pack(n)


def _seal(payload: bytes) -> bytes:
    return payload + xxhash.xxh3_64_digest(payload)


def _unseal(value, what: str) -> bytes:
    value = bytes(value)
    if len(value) < 8 or xxhash.xxh3_64_digest(value[:-8]) != value[-8:]:
        raise CorruptionError(f"the catalog record of {what} failed its checksum")
    return value[:-8]


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """One tensor of a model as stored: its blocks are ``block_ids`` in order."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    step: int  # bytes per full block; the last may be shorter
    block_ids: np.ndarray  # uint64

    def spans(self) -> list[tuple[int, int]]:
        """Byte range ``(start, stop)`` of each block within the tensor."""
        return [(s, min(s + self.step, self.nbytes)) for s in range(0, self.nbytes, self.step)]


@dataclass(frozen=True, slots=True)
class ModelRecord:
    name: str
    model_id: int
    created: float
    metadata: dict
    tensors: tuple[TensorRecord, ...]
    domain: str = ""

    @property
    def logical_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def tensor(self, name: str) -> TensorRecord | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


_MODEL_MAGIC = b"TSM1"
_U32 = struct.Struct("<I")


def encode_model(m: ModelRecord) -> bytes:
    head = {
        "id": m.model_id,
        "created": m.created,
        "metadata": m.metadata,
        "domain": m.domain,
        "tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "nbytes": t.nbytes, "step": t.step, "blocks": len(t.block_ids)}
            for t in m.tensors
        ],
    }
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode()
    ids = np.concatenate([t.block_ids for t in m.tensors]) if m.tensors else np.zeros(0, np.uint64)
    return _seal(_MODEL_MAGIC + _U32.pack(len(text)) + text + ids.astype("<u8").tobytes())


def decode_model(name: str, value) -> ModelRecord:
    value = _unseal(value, f"model {name!r}")
    try:
        if value[:4] != _MODEL_MAGIC:
            raise ValueError("bad magic")
        (n,) = _U32.unpack_from(value, 4)
        head = json.loads(value[8 : 8 + n])
        ids = np.frombuffer(value, dtype="<u8", offset=8 + n).astype(np.uint64)
        tensors, at = [], 0
        for t in head["tensors"]:
            count = int(t["blocks"])
            shape = tuple(int(d) for d in t["shape"])
            step, nbytes = int(t["step"]), int(t["nbytes"])
            dtype = DTYPES[str(t["dtype"])]  # KeyError: an unknown dtype
            if step <= 0 or any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize != nbytes:
                raise ValueError(f"tensor {t['name']!r}: shape {shape} of {t['dtype']} does not make {nbytes} bytes")
            if count != (-(-nbytes // step) if nbytes else 0) or at + count > len(ids):
                raise ValueError(f"tensor {t['name']!r} has {count} blocks for {nbytes} bytes")
            tensors.append(TensorRecord(str(t["name"]), str(t["dtype"]), shape, nbytes, step, ids[at : at + count]))
            at += count
        if at != len(ids):
            raise ValueError("trailing block ids")
        return ModelRecord(name, int(head["id"]), float(head["created"]), dict(head["metadata"] or {}), tuple(tensors),
                           str(head.get("domain", "")))
    except Exception as exc:
        raise CorruptionError(f"the catalog record of model {name!r} is damaged ({exc})") from exc


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """A distinct block: where its bytes lie and how they are encoded (``codec``).

    ``nbytes`` is the block's decoded length, ``stored`` the length of what lies in the
    page (equal for a raw block). ``refs`` counts the models' references *and* the delta
    blocks that use this block as their reference (``ref``), so a reference outlives the
    models that wrote it for as long as a delta needs it.
    """

    block_id: int
    page_id: int
    offset: int
    nbytes: int
    refs: int
    dtype_code: int
    domain: int  # the dedup domain (tenant) whose models may share this block
    digest: bytes  # MurmurHash3 of the decoded bytes: the block's identity
    encoding: int = 0  # codec.RAW, PACKED or DELTA
    stored: int = -1  # bytes in the page; -1: as many as nbytes (raw)
    ref: int = 0  # the reference block of a delta; 0 for none
    # BLAKE3 of the decoded bytes, kept for encoded blocks (b"" for raw ones and those
    # written by format 2): confirms an exact-dedup match without a decode.
    strong: bytes = b""

    def __post_init__(self) -> None:
        if self.stored < 0:
            object.__setattr__(self, "stored", self.nbytes)

    @property
    def key(self) -> bytes:
        """The block's key in the exact-dedup index."""
        return hash_key(self.domain, self.digest)


_BLOCK_V1 = struct.Struct("<QIIIBI16s")  # format 1: every block raw
_BLOCK = struct.Struct("<QIIIBI16sBIQ")
_BLOCK_STRONG = struct.Struct("<QIIIBI16sBIQ32s")
_DOMAIN = struct.Struct(">I")


def hash_key(domain: int, digest: bytes) -> bytes:
    """Exact-dedup index key: blocks are equal only within one domain, so a tenant's
    lookups never touch another's blocks, in results, sizes or timing."""
    return _DOMAIN.pack(domain) + digest


def encode_block(b: BlockRecord) -> bytes:
    fields = (b.page_id, b.offset, b.nbytes, b.refs, b.dtype_code, b.domain, b.digest, b.encoding, b.stored, b.ref)
    return _seal(_BLOCK_STRONG.pack(*fields, b.strong) if b.strong else _BLOCK.pack(*fields))


def decode_block(block_id: int, value) -> BlockRecord:
    value = _unseal(value, f"block {block_id}")
    try:
        if len(value) == _BLOCK_V1.size:
            return BlockRecord(block_id, *_BLOCK_V1.unpack(value))
        if len(value) == _BLOCK_STRONG.size:
            b = BlockRecord(block_id, *_BLOCK_STRONG.unpack(value))
        else:
            b = BlockRecord(block_id, *_BLOCK.unpack(value))
        consistent = {
            0: b.stored == b.nbytes and b.ref == 0 and not b.strong,  # raw
            1: b.ref == 0,  # packed
            2: b.ref not in (0, block_id),  # delta
        }.get(b.encoding, False)
        if not consistent:
            raise ValueError(f"encoding {b.encoding} with {b.stored} stored bytes and reference {b.ref}")
        return b
    except (struct.error, ValueError) as exc:
        raise CorruptionError(f"the catalog record of block {block_id} is damaged ({exc})") from exc


@dataclass(frozen=True, slots=True)
class PageRecord:
    page_id: int
    used: int  # the next free offset: blocks lie in [0, used)
    live: int  # bytes of the blocks still referenced
    block_ids: tuple[int, ...]


_PAGE = struct.Struct("<II")


def encode_page(p: PageRecord) -> bytes:
    return _seal(_PAGE.pack(p.used, p.live) + np.asarray(p.block_ids, dtype="<u8").tobytes())


def decode_page(page_id: int, value) -> PageRecord:
    value = _unseal(value, f"page {page_id}")
    try:
        used, live = _PAGE.unpack_from(value)
        if (len(value) - _PAGE.size) % 8:
            raise ValueError("block id list is cut")
        ids = np.frombuffer(value, dtype="<u8", offset=_PAGE.size)
        return PageRecord(page_id, used, live, tuple(int(i) for i in ids))
    except Exception as exc:
        raise CorruptionError(f"the catalog record of page {page_id} is damaged ({exc})") from exc


@dataclass(slots=True)
class StoreState:
    """Running totals, id counters and open pages, kept in ``meta`` so that ``stats()`` and
    ingest never scan the store."""

    models: int = 0
    tensors: int = 0
    logical_bytes: int = 0
    blocks: int = 0
    unique_blocks: int = 0
    unique_bytes: int = 0
    pages: int = 0
    next_block_id: int = 1
    next_page_id: int = 1
    next_model_id: int = 1
    open_pages: list[list[int]] = field(default_factory=list)  # [page id, free bytes], in id order
    domains: dict[str, int] = field(default_factory=lambda: {"": 0})  # dedup domain -> id
    encoded_bytes: int = -1  # bytes of distinct blocks as stored; -1: a format-1 state (all raw)
    encodings: list[int] = field(default_factory=lambda: [0, 0, 0])  # distinct blocks per encoding

    def __post_init__(self) -> None:
        if self.encoded_bytes < 0:  # written by format 1, where every block is raw
            self.encoded_bytes = self.unique_bytes
            self.encodings = [self.unique_blocks, 0, 0]

    def encode(self) -> bytes:
        return _seal(json.dumps(asdict(self), separators=(",", ":")).encode())

    @classmethod
    def decode(cls, value) -> "StoreState":
        value = _unseal(value, "the store's state")
        try:
            return cls(**json.loads(value))
        except Exception as exc:
            raise CorruptionError(f"the store's state record is damaged ({exc})") from exc
