"""What a remote holds, and how each object is written and checked.

A remote is a prefix in object storage with four kinds of object::

    packs/<sha256>.pack          block payloads exactly as stored (encoded), end to end
    files/<sha256>.file          a small file kept with a model (config.json, tokenizer files)
    snapshots/<sha256>.snap      a catalog: every model, its files, where each block lies
    heads/<generation>.head      which snapshot is current; the highest generation wins

Packs, files and snapshots are named by the SHA-256 of their bytes and never change, so a reader
checks what it fetched against its name. Heads are written create-only (``If-None-Match:
*`` on S3, an atomic link on a local disk): of two writers that read generation *n*, one
creates *n + 1* and the other finds it taken, re-reads, merges and tries *n + 2*. Create-only
is the one conditional write every obstore backend has (the local file system has no
ETag-matched overwrite), and a head never overwritten cannot be torn.

A snapshot knows blocks by their identity, the MurmurHash3 of the decoded bytes (the
store's own digest; the dtype seeds it), not by any page or id of the store that pushed
them: a remote is independent of every store's page layout and codec, and a pull re-encodes
into the receiving store's own. MurmurHash3 finds a block, it does not prove one (colliding
blocks can be constructed), so since format 2 every block also carries the BLAKE3 digest of
its decoded bytes, raw blocks included (``RemoteBlock.strong``; a pull decodes every block
anyway, and a push or pull that finds a block on the other side by its MurmurHash3 digest
compares the BLAKE3 digests before sharing it). A format-1 snapshot has none; its blocks
are confirmed by fetching and comparing bytes, and a push records the digests it confirms.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

import zstandard

from .dtypes import DTYPE_CODES, DTYPES
from .errors import CorruptionError
from .remote_objects import RemoteFormatError

FORMAT = "tensorstore-remote"
VERSION = 2  # 2: blocks carry BLAKE3 digests; format 1 is read too
HEAD_PREFIX = "heads/"
PACK_PREFIX = "packs/"
SNAPSHOT_PREFIX = "snapshots/"
FILE_PREFIX = "files/"
_HEAD = re.compile(r"^heads/(\d{20})\.head$")
_SNAPSHOT_LIMIT = 1 << 32  # a snapshot decompressing past 4 GiB is refused, not allocated


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_key(name: str) -> str:
    return f"{PACK_PREFIX}{name}.pack"


def file_key(name: str) -> str:
    return f"{FILE_PREFIX}{name}.file"


def snapshot_key(name: str) -> str:
    return f"{SNAPSHOT_PREFIX}{name}.snap"


def head_key(generation: int) -> str:
    return f"{HEAD_PREFIX}{generation:020d}.head"


def head_generation(key: str) -> int | None:
    m = _HEAD.match(key)
    return int(m.group(1)) if m else None


def name_of(key: str) -> str:
    """The hash in a pack's, file's or snapshot's key."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def _check_version(doc: object, what: str) -> dict:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RemoteFormatError(f"{what} is not a tensorstore remote object")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise RemoteFormatError(
            f"{what} was written by a newer tensorstore (remote format {version}; this one reads up to {VERSION}): "
            "upgrade tensorstore-dedup"
        )
    return doc


# -- heads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    generation: int
    snapshot: str  # the snapshot's hash
    created: float

    def encode(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": VERSION, "generation": self.generation,
                           "snapshot": self.snapshot, "created": self.created}).encode()

    @classmethod
    def decode(cls, key: str, data: bytes) -> "Head":
        try:
            doc = json.loads(data)
        except ValueError:
            raise CorruptionError(f"the head object {key} is damaged (not JSON)") from None
        _check_version(doc, f"the head object {key}")
        try:
            head = cls(int(doc["generation"]), str(doc["snapshot"]), float(doc["created"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"the head object {key} is damaged ({exc})") from None
        if head_key(head.generation) != key or not re.fullmatch(r"[0-9a-f]{64}", head.snapshot):
            raise CorruptionError(f"the head object {key} is damaged (it names generation {head.generation}, snapshot {head.snapshot!r})")
        return head


# -- snapshots --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteBlock:
    """Where a block's stored payload lies on the remote and how to decode it."""

    pack: str  # the pack's hash
    offset: int
    stored: int  # payload bytes in the pack
    nbytes: int  # decoded bytes
    encoding: int  # codec.RAW, PACKED or DELTA
    dtype_code: int
    ref: bytes | None  # a delta's reference, by digest
    strong: bytes = b""  # BLAKE3 of the decoded bytes (empty: a format-1 snapshot did not know it)


@dataclass(frozen=True, slots=True)
class RemoteTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    step: int
    digests: tuple[bytes, ...]  # its blocks, in order


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A small file kept with a model: its path in the model's directory, and its object."""

    path: str
    sha256: str  # of its bytes: the object ``files/<sha256>.file``
    size: int


@dataclass(frozen=True, slots=True)
class RemoteModel:
    name: str
    domain: str
    created: float
    metadata: dict
    tensors: tuple[RemoteTensor, ...]
    files: tuple[RemoteFile, ...] = ()  # sorted by path

    @property
    def logical_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def digests(self) -> set[bytes]:
        return {d for t in self.tensors for d in t.digests}

    def same_as(self, other: "RemoteModel") -> bool:
        return (self.domain, self.metadata, self.tensors, self.files) == (other.domain, other.metadata, other.tensors, other.files)


@dataclass(slots=True)
class Snapshot:
    """A remote's catalog: models by name, blocks by digest, and the snapshot it grew from."""

    models: dict[str, RemoteModel] = field(default_factory=dict)
    blocks: dict[bytes, RemoteBlock] = field(default_factory=dict)
    parent: str | None = None
    created: float = 0.0
    pack_sizes: dict[str, int] = field(default_factory=dict)  # pack hash -> bytes
    # The last pushing store's page and block sizes: a pull that creates a store uses them,
    # so that its blocks have the same digests and later pulls find them locally.
    layout: dict[str, int] = field(default_factory=dict)

    def closure(self, digests) -> set[bytes]:
        """``digests`` and every block they need to decode (references, transitively)."""
        out: set[bytes] = set()
        todo = list(digests)
        while todo:
            d = todo.pop()
            if d in out:
                continue
            out.add(d)
            b = self.blocks.get(d)
            if b is not None and b.ref is not None:
                todo.append(b.ref)
        return out

    def missing(self) -> bytes | None:
        """A block some model needs that the snapshot lacks (None when it is whole)."""
        for d in self.closure(d for m in self.models.values() for d in m.digests()):
            if d not in self.blocks or self.blocks[d].pack not in self.pack_sizes:
                return d
        return None

    def pruned(self) -> "Snapshot":
        """The same snapshot without blocks no model needs (replaced models' blocks)."""
        live = self.closure(d for m in self.models.values() for d in m.digests())
        blocks = {d: b for d, b in self.blocks.items() if d in live}
        packs = {b.pack for b in blocks.values()}
        return Snapshot(self.models, blocks, self.parent, self.created, {p: n for p, n in self.pack_sizes.items() if p in packs},
                        self.layout)

    def packs(self) -> set[str]:
        return {b.pack for b in self.blocks.values()}

    def files(self) -> set[str]:
        """The hashes of every model's files (their objects)."""
        return {f.sha256 for m in self.models.values() for f in m.files}

    def encode(self) -> bytes:
        digests = list(self.blocks)
        index = {d: i for i, d in enumerate(digests)}
        packs = sorted(self.packs())
        pack_index = {p: i for i, p in enumerate(packs)}
        blocks = [self.blocks[d] for d in digests]
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "parent": self.parent,
            "layout": self.layout,
            "packs": packs,
            "pack_bytes": [self.pack_sizes[p] for p in packs],
            "blocks": {
                # Columns, digests as one hex string: a third the size of a list of objects.
                "digest": "".join(d.hex() for d in digests),
                "pack": [pack_index[b.pack] for b in blocks],
                "offset": [b.offset for b in blocks],
                "stored": [b.stored for b in blocks],
                "nbytes": [b.nbytes for b in blocks],
                "encoding": [b.encoding for b in blocks],
                "dtype": [b.dtype_code for b in blocks],
                "ref": [-1 if b.ref is None else index[b.ref] for b in blocks],
                "strong": [b.strong.hex() if b.strong else None for b in blocks],
            },
            "models": [
                {"name": m.name, "domain": m.domain, "created": m.created, "metadata": m.metadata,
                 "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "nbytes": t.nbytes,
                              "step": t.step, "blocks": [index[d] for d in t.digests]} for t in m.tensors],
                 "files": [[f.path, f.sha256, f.size] for f in m.files]}
                for m in self.models.values()
            ],
        }
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        return zstandard.ZstdCompressor(level=3).compress(text)

    @classmethod
    def decode(cls, key: str, data: bytes) -> "Snapshot":
        what = f"the snapshot {key}"
        if sha256(data) != name_of(key):
            raise CorruptionError(f"{what} does not match its hash (damaged or cut short)")
        try:
            text = zstandard.ZstdDecompressor().decompress(data, max_output_size=_SNAPSHOT_LIMIT)
            doc = json.loads(text)
        except (zstandard.ZstdError, ValueError) as exc:
            raise CorruptionError(f"{what} does not decode ({exc})") from None
        _check_version(doc, what)
        try:
            return cls._from_doc(doc, doc["version"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorruptionError(f"{what} is damaged ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_doc(cls, doc: dict, version: int) -> "Snapshot":
        packs = [str(p) for p in doc["packs"]]
        sizes = [int(n) for n in doc["pack_bytes"]]
        if len(sizes) != len(packs) or any(not re.fullmatch(r"[0-9a-f]{64}", p) for p in packs):
            raise ValueError("pack list is malformed")
        cols = doc["blocks"]
        hexes = str(cols["digest"])
        n = len(hexes) // 32
        if len(hexes) != 32 * n or any(len(cols[c]) != n for c in ("pack", "offset", "stored", "nbytes", "encoding", "dtype", "ref")):
            raise ValueError("block columns of different lengths")
        strong = [None] * n if version < 2 else list(cols["strong"])
        if len(strong) != n or any(s is not None and not re.fullmatch(r"[0-9a-f]{64}", s) for s in strong):
            raise ValueError("the BLAKE3 digest column is malformed")
        digests = [bytes.fromhex(hexes[32 * i : 32 * i + 32]) for i in range(n)]
        codes = set(DTYPE_CODES.values())
        blocks = {}
        for i, d in enumerate(digests):
            ref = int(cols["ref"][i])
            if ref < -1 or int(cols["pack"][i]) < 0:
                raise ValueError(f"block {d.hex()} names reference {ref}")
            b = RemoteBlock(packs[int(cols["pack"][i])], int(cols["offset"][i]), int(cols["stored"][i]), int(cols["nbytes"][i]),
                            int(cols["encoding"][i]), int(cols["dtype"][i]), None if ref < 0 else digests[ref],
                            b"" if strong[i] is None else bytes.fromhex(strong[i]))
            if b.offset < 0 or b.stored < 0 or b.offset + b.stored > sizes[int(cols["pack"][i])] or b.nbytes < 0 or b.encoding not in (0, 1, 2) or b.dtype_code not in codes:
                raise ValueError(f"block {d.hex()} has impossible fields")
            if (b.encoding == 2) != (b.ref is not None) or b.ref == d or (b.encoding == 0 and b.stored != b.nbytes):
                raise ValueError(f"block {d.hex()}: encoding {b.encoding} with reference {ref}")
            blocks[d] = b
        models = {}
        for m in doc["models"]:
            tensors = []
            for t in m["tensors"]:
                shape = tuple(int(s) for s in t["shape"])
                dtype, nbytes, step = str(t["dtype"]), int(t["nbytes"]), int(t["step"])
                if dtype not in DTYPES or any(s < 0 for s in shape) or math.prod(shape) * DTYPES[dtype].itemsize != nbytes or step <= 0:
                    raise ValueError(f"tensor {t['name']!r} of model {m['name']!r}: {dtype} {shape} is not {nbytes} bytes")
                ids = [int(i) for i in t["blocks"]]
                if any(i < 0 for i in ids):
                    raise ValueError(f"tensor {t['name']!r} names block {min(ids)}")
                ds = tuple(digests[i] for i in ids)
                if len(ds) != -(-nbytes // step):
                    raise ValueError(f"tensor {t['name']!r} of model {m['name']!r} has {len(ds)} blocks for {nbytes} bytes")
                tensors.append(RemoteTensor(str(t["name"]), dtype, shape, nbytes, step, ds))
            files = tuple(RemoteFile(str(path), str(sha), int(size)) for path, sha, size in m.get("files") or ())
            if any(not re.fullmatch(r"[0-9a-f]{64}", f.sha256) or f.size < 0 or not f.path for f in files):
                raise ValueError(f"the file list of model {m['name']!r} is malformed")
            model = RemoteModel(str(m["name"]), str(m["domain"]), float(m["created"]), dict(m["metadata"] or {}), tuple(tensors),
                                tuple(sorted(files, key=lambda f: f.path)))
            models[model.name] = model
        parent = doc.get("parent")
        return cls(models, blocks, None if parent is None else str(parent), float(doc["created"]), dict(zip(packs, sizes)),
                   {k: int(v) for k, v in dict(doc.get("layout") or {}).items() if k in ("page_size", "block_bytes")})
