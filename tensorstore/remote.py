"""Remotes: a store's models on object storage, pushed and pulled by what the other side lacks.

``push(store, url)`` uploads the blocks the remote's current snapshot lacks (by digest),
as stored (encoded), in new packs; then a new snapshot; then moves the head with a
create-only write. ``pull(url, path, models)`` fetches only the blocks the local store
lacks, for only the models asked for (and the references their deltas need), with range
reads inside packs; it decodes every block and checks its digest before anything is
written, and adds each model with ``add_model`` (one transaction each), so the local store
encodes and lays out the data its own way.

Blocks are found by their MurmurHash3 digest and proven by their BLAKE3 digest: a block one
side holds under a digest the other side also holds is shared only if the BLAKE3 digests of
the decoded bytes agree (a format-1 snapshot has none: its block is fetched, decoded and
compared instead); otherwise ``HashCollisionError``, before the head moves or anything is
added. See ``remote_format`` for the objects, and
``docs/scale.md`` for how a fleet uses this and how it fails.

Concurrency: two pushes that read the same head race for the next one; the loser reads
the winner's snapshot, merges (models by name: the loser's models replace the winner's of
the same name, as the later push; blocks by digest), and tries again. No push loses another's
models. ``gc`` removes what no recent snapshot needs, after a grace period.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tensorstore_index.exact import block_digest

from . import catalog as cat
from . import codec, dtypes
from .digests import strong_digest
from .dtypes import DTYPES
from .errors import CorruptionError, HashCollisionError, InvalidArgumentError, ModelNotFoundError, StoreError
from .remote_format import (
    FILE_PREFIX,
    HEAD_PREFIX,
    PACK_PREFIX,
    SNAPSHOT_PREFIX,
    Head,
    RemoteBlock,
    RemoteFile,
    RemoteModel,
    RemoteTensor,
    Snapshot,
    head_generation,
    file_key,
    head_key,
    name_of,
    pack_key,
    sha256,
    snapshot_key,
)
from .remote_objects import (
    Objects,
    RemoteAccessError,
    RemoteError,
    RemoteFormatError,
    RemoteNotFoundError,
    _Conflict,
)

__all__ = [
    "push", "pull", "remote_ls", "gc", "PushReport", "PullReport", "GcReport",
    "RemoteError", "RemoteNotFoundError", "RemoteAccessError", "RemoteFormatError",
]

PACK_BYTES = 64 << 20  # a pack's target size: few requests per GiB, ranges read inside
# Ranges in one pack closer than this are read as one request; the gap is counted as moved.
RANGE_GAP = 16 << 10
MAX_PUSH_ATTEMPTS = 64
DEFAULT_GRACE_MINUTES = 60.0
_MAX_DECODE_DEPTH = 8  # a remote merged from stores may chain deltas; a cycle is damage
# Blocks a format-1 snapshot holds without a BLAKE3 digest are confirmed by fetching them,
# this many at a time (bounded memory).
_CONFIRM_BATCH = 256


# -- reports ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Report:
    url: str
    generation: int  # the current head (after a push: the one it made current, or the old one)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _ModelsReport(_Report):
    models: list[str]  # models written to the new snapshot (push), added or replaced (pull)
    unchanged: list[str]  # models the other side already had exactly


@dataclass(frozen=True, slots=True)
class PushReport(_ModelsReport):
    blocks_sent: int
    stored_bytes_sent: int  # payload bytes in new packs (encoded, as stored)
    packs_sent: int
    snapshot_bytes: int
    attempts: int  # head writes tried (more than one: another push came first)
    transfer: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PullReport(_ModelsReport):
    blocks_fetched: int
    blocks_local: int  # blocks taken from the local store instead
    stored_bytes_fetched: int  # payload bytes of the fetched blocks (the ranges may add gaps)
    snapshot_bytes: int
    transfer: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GcReport(_Report):
    deleted_heads: int
    deleted_snapshots: int
    deleted_packs: int
    deleted_bytes: int
    kept_packs: int
    kept_bytes: int
    transfer: dict = field(default_factory=dict)
    deleted_files: int = 0


# -- reading the remote -----------------------------------------------------------------


def _decoded(b: RemoteBlock, payload, reference) -> np.ndarray:
    """A remote block's bytes from its payload; ``reference()`` gives its reference's bytes
    (a delta only). ``ValueError`` if it does not decode."""
    layout = dtypes.layout_of_code(b.dtype_code)
    if b.encoding == codec.RAW:
        return np.frombuffer(payload, dtype=np.uint8)
    if b.encoding == codec.PACKED:
        return codec.decode(payload, b.nbytes, layout)
    ref = reference()
    if len(ref) != b.nbytes:
        raise ValueError(f"its reference holds {len(ref)} bytes, not {b.nbytes}")
    return codec.decode(payload, b.nbytes, layout, ref=ref)


def _checked(d: bytes, b: RemoteBlock, payload, reference) -> np.ndarray:
    """``_decoded``, then checked against the block's MurmurHash3 digest ``d`` and, where
    the snapshot has it, its BLAKE3 digest. ``ValueError`` saying what is wrong."""
    try:
        out = _decoded(b, payload, reference)
    except ValueError as exc:
        raise ValueError(f"does not decode ({exc})") from None
    if len(out) != b.nbytes or block_digest(out, b.dtype_code) != d:
        raise ValueError("does not match its digest (damaged)")
    if b.strong and strong_digest(out) != b.strong:
        raise ValueError("does not match its BLAKE3 digest (damaged, or other bytes under its MurmurHash3 digest)")
    return out


def _resolve(objects: Objects, snap: Snapshot, digests, have: dict[bytes, np.ndarray]) -> tuple[dict[bytes, np.ndarray], set[bytes]]:
    """The decoded bytes of ``digests``: from ``have`` (bytes at hand) or fetched from the
    remote with the references they need, each checked against its MurmurHash3 digest and,
    where the snapshot has it, its BLAKE3 digest. Returns them and the digests fetched."""
    to_fetch: set[bytes] = set()
    todo = list(digests)
    while todo:
        d = todo.pop()
        if d in have or d in to_fetch:
            continue
        b = snap.blocks.get(d)
        if b is None:
            raise CorruptionError(f"the remote {objects.shown}: block {d.hex()} is needed, and its snapshot lacks it")
        to_fetch.add(d)
        if b.ref is not None:
            todo.append(b.ref)
    payloads = _fetch_payloads(objects, snap, to_fetch)
    values = dict(have)

    def value_of(d: bytes, depth: int = 0) -> np.ndarray:
        out = values.get(d)
        if out is not None:
            return out
        if depth > _MAX_DECODE_DEPTH:
            raise CorruptionError(f"the remote {objects.shown}: block {d.hex()}'s references form a cycle")
        b = snap.blocks[d]
        try:
            out = _checked(d, b, payloads[d], lambda: value_of(b.ref, depth + 1))
        except ValueError as exc:
            raise CorruptionError(f"the remote {objects.shown}: block {d.hex()} in pack {b.pack} {exc}") from None
        values[d] = out
        return out

    return {d: value_of(d) for d in digests}, to_fetch


def _collision(objects: Objects, d: bytes, where: str) -> HashCollisionError:
    return HashCollisionError(
        f"the remote {objects.shown}: block {d.hex()} has the MurmurHash3 digest of a block {where} but other bytes "
        "(their BLAKE3 digests differ; a collision, which ordinary data does not produce): refused, nothing was changed"
    )


def _confirm_fetched(objects: Objects, snap: Snapshot, ours: dict[bytes, bytes], where: str) -> None:
    """For blocks the snapshot holds without a BLAKE3 digest (format 1): fetch and decode
    each, and raise ``HashCollisionError`` unless its BLAKE3 digest is ``ours[d]``."""
    digests = list(ours)
    for k in range(0, len(digests), _CONFIRM_BATCH):
        values, _ = _resolve(objects, snap, digests[k : k + _CONFIRM_BATCH], {})
        for d, v in values.items():
            if strong_digest(v) != ours[d]:
                raise _collision(objects, d, where)


def _read_head(objects: Objects) -> Head | None:
    """The current head (the highest generation), or None for an empty remote."""
    for _ in range(8):
        gens = sorted(g for o in objects.list(HEAD_PREFIX) if (g := head_generation(str(o["path"]))) is not None)
        if not gens:
            return None
        key = head_key(gens[-1])
        try:
            return Head.decode(key, objects.get(key))
        except RemoteNotFoundError:
            continue  # removed by gc between the listing and the read: list again
    raise RemoteError(f"the remote {objects.shown} keeps changing under this read; try again")


def _read_snapshot(objects: Objects, head: Head) -> tuple[Snapshot, int]:
    key = snapshot_key(head.snapshot)
    try:
        data = objects.get(key)
    except RemoteNotFoundError:
        raise CorruptionError(f"the remote {objects.shown}: head {head.generation} names snapshot {head.snapshot}, which is missing") from None
    return Snapshot.decode(key, data), len(data)


def _open_remote(url: str, *, create: bool = False) -> tuple[Objects, Head | None, Snapshot, int]:
    objects = Objects(url, create=create)
    head = _read_head(objects)
    if head is None:
        return objects, None, Snapshot(), 0
    snap, size = _read_snapshot(objects, head)
    return objects, head, snap, size


# -- the local side ---------------------------------------------------------------------


class _LocalBlocks:
    """Block records of a store within one read transaction, cached by id."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.cache: dict[int, cat.BlockRecord] = {}

    def __call__(self, block_id: int) -> cat.BlockRecord:
        b = self.cache.get(block_id)
        if b is None:
            b = self.cache[block_id] = self.reader.block(block_id)
        return b

    def model(self, record: cat.ModelRecord, files: dict[str, bytes]) -> RemoteModel:
        """The model as a remote knows it; ``files`` are those kept with it."""
        tensors = tuple(
            RemoteTensor(t.name, t.dtype, tuple(t.shape), t.nbytes, t.step, tuple(self(int(i)).digest for i in t.block_ids))
            for t in record.tensors
        )
        kept = tuple(RemoteFile(path, sha256(files[path]), len(files[path])) for path in sorted(files))
        return RemoteModel(record.name, record.domain, record.created, record.metadata, tensors, kept)


class _PackWriter:
    """Appends block payloads to a pack and uploads it when it reaches its size."""

    def __init__(self, objects: Objects, target: int) -> None:
        self.objects = objects
        self.target = target
        self.parts: list[bytes] = []
        self.size = 0
        self.pending: list[tuple[bytes, int, cat.BlockRecord, bytes | None, bytes]] = []  # digest, offset, record, ref, BLAKE3
        self.done: dict[bytes, RemoteBlock] = {}
        self.queued: set[bytes] = set()
        self.sizes: dict[str, int] = {}
        self.packs = 0
        self.payload_bytes = 0

    def add(self, digest: bytes, b: cat.BlockRecord, payload, ref: bytes | None, strong: bytes) -> None:
        self.queued.add(digest)
        self.pending.append((digest, self.size, b, ref, strong))
        self.parts.append(bytes(payload))
        self.size += b.stored
        self.payload_bytes += b.stored
        if self.size >= self.target:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        data = b"".join(self.parts)
        name = sha256(data)
        self.objects.put(pack_key(name), data)
        for digest, offset, b, ref, strong in self.pending:
            self.done[digest] = RemoteBlock(name, offset, b.stored, b.nbytes, b.encoding, b.dtype_code, ref, strong)
        self.sizes[name] = len(data)
        self.packs += 1
        self.parts, self.pending, self.size = [], [], 0


# -- push -------------------------------------------------------------------------------


def push(store, url: str, models=None, *, pack_bytes: int = PACK_BYTES, max_attempts: int = MAX_PUSH_ATTEMPTS) -> PushReport:
    """Publish the store's models (or ``models``) to the remote at ``url``.

    Uploads only blocks the remote lacks, then a snapshot, then moves the head last: an
    interrupted push leaves the remote as it was (plus unreferenced packs ``gc`` removes).
    A model of the same name on the remote is replaced unless identical. A block of this
    store that the remote holds under the same MurmurHash3 digest with other bytes (BLAKE3
    digests differ) raises ``HashCollisionError`` and the head does not move.
    """
    from .readpath import ReadPath

    names = _names(models)
    objects, head, base, _ = _open_remote(url, create=True)
    with store.env.read() as txn:
        reader = ReadPath(store, txn, verify=True)
        local = _LocalBlocks(reader)
        wanted = names if names is not None else [m.name for m in store.records(txn)]
        records = [store.record(txn, n) for n in wanted]
        records.sort(key=lambda r: (r.created, r.model_id))  # parents first: their blocks come first in packs
        files = {r.name: store.files_in(txn, r.model_id) for r in records}
        ours = {r.name: local.model(r, files[r.name]) for r in records}
        unchanged = [n for n, m in ours.items() if n in base.models and base.models[n].same_as(m)]
        changed = {n: m for n, m in ours.items() if n not in unchanged}
        writer = _PackWriter(objects, pack_bytes)
        strong: dict[bytes, bytes] = {}  # digest -> BLAKE3 of this store's block
        unsure: dict[bytes, bytes] = {}  # the same, for blocks the remote holds without one (format 1)

        def strong_of(b: cat.BlockRecord) -> bytes:
            s = strong.get(b.digest)
            if s is None:  # a raw block's record has none (its bytes are at hand), nor a format-2 store's
                s = strong[b.digest] = b.strong or strong_digest(reader.block_bytes(b))
            return s

        def on_remote(b: cat.BlockRecord) -> bool:
            """Whether the remote holds ``b``: by MurmurHash3 digest, then confirmed."""
            theirs = base.blocks.get(b.digest)
            if theirs is None:
                return False
            if not theirs.strong:
                unsure[b.digest] = strong_of(b)
            elif theirs.strong != strong_of(b):
                raise _collision(objects, b.digest, "of this store")
            return True

        def send(block_id: int) -> None:
            b = local(block_id)
            if b.digest in writer.queued or on_remote(b):
                return
            ref = None
            if b.ref:
                ref = local(b.ref).digest
                send(b.ref)  # the reference before its delta, usually in the same pack
            writer.add(b.digest, b, reader.stored(b), ref, strong_of(b))

        seen: set[int] = set()
        for r in records:  # unchanged models too: "unchanged" must mean the same bytes
            for t in r.tensors:
                for i in t.block_ids.tolist():
                    if i not in seen:
                        seen.add(i)
                        if r.name in changed:
                            send(i)
                        else:  # all on the remote already (the same digests): only confirmed
                            on_remote(local(i))
        writer.flush()
    _confirm_fetched(objects, base, unsure, "of this store")
    confirmed = {d: replace(base.blocks[d], strong=s) for d, s in unsure.items()}  # recorded from now on
    sent_files = _send_files(objects, base, [files[n] for n in changed])
    if not changed:
        return PushReport(objects.shown, head.generation if head else 0, [], unchanged, 0, 0, 0, 0, 0, objects.transfer.to_dict())
    # Every block the pushed models need, with its references, as the remote will hold it.
    pool = {**base.blocks, **confirmed, **writer.done}
    needed: dict[bytes, RemoteBlock] = {}
    todo = [d for m in changed.values() for d in m.digests()]
    while todo:
        d = todo.pop()
        if d not in needed:
            needed[d] = pool[d]
            if needed[d].ref is not None:
                todo.append(needed[d].ref)
    sizes = {**base.pack_sizes, **writer.sizes}
    theirs, now, attempts, snapshot_bytes = base, head, 0, 0
    while True:
        attempts += 1
        blocks = _merge_blocks(objects, needed, theirs)
        snap = Snapshot({**theirs.models, **changed}, blocks, now.snapshot if now else None, time.time(),
                        {**sizes, **theirs.pack_sizes}, {"page_size": store.page_size, "block_bytes": store.block_bytes}).pruned()
        lost = snap.missing()
        if lost:  # never publish a snapshot that cannot be pulled
            raise RemoteError(f"the remote {objects.shown}: the merged snapshot lacks block {lost.hex()}; nothing was changed")
        data = snap.encode()
        name = sha256(data)
        objects.put(snapshot_key(name), data)
        snapshot_bytes = len(data)
        generation = now.generation + 1 if now else 1
        try:
            objects.put(head_key(generation), Head(generation, name, time.time()).encode(), create=True)
            break
        except _Conflict:
            if attempts >= max_attempts:
                raise RemoteError(f"the remote {objects.shown} moved {attempts} times during this push; run it again") from None
            time.sleep(random.uniform(0, min(1.0, 0.02 * attempts)))
            now = _read_head(objects)
            theirs, _ = _read_snapshot(objects, now)
            _check_packs_alive(objects, snap, theirs, writer.sizes, sent_files)
    return PushReport(objects.shown, generation, sorted(changed), unchanged, len(writer.done), writer.payload_bytes,
                      writer.packs, snapshot_bytes, attempts, objects.transfer.to_dict())


def _merge_blocks(objects: Objects, ours: dict[bytes, RemoteBlock], theirs: Snapshot) -> dict[bytes, RemoteBlock]:
    """Our blocks and those of the snapshot another push made current: a block they hold
    stays as they hold it, once its BLAKE3 digest is confirmed to be ours."""
    out = dict(ours)
    unsure: dict[bytes, bytes] = {}
    for d, t in theirs.blocks.items():
        mine = out.get(d)
        if mine is not None and mine.strong and t.strong and mine.strong != t.strong:
            raise _collision(objects, d, "this push sends")
        if mine is not None and mine.strong and not t.strong and (mine.pack, mine.offset) != (t.pack, t.offset):
            unsure[d] = mine.strong
        out[d] = t if mine is None or t.strong or not mine.strong else replace(t, strong=mine.strong)
    _confirm_fetched(objects, theirs, unsure, "this push sends")
    return out


def _send_files(objects: Objects, base: Snapshot, models: list[dict[str, bytes]]) -> set[str]:
    """Upload the files of the pushed models that the remote lacks; their hashes."""
    have, sent = base.files(), set()
    for files in models:
        for data in files.values():
            name = sha256(data)
            if name not in have and name not in sent:
                objects.put(file_key(name), data)
                sent.add(name)
    return sent


def _check_packs_alive(objects: Objects, ours: Snapshot, theirs: Snapshot, written: dict[str, int],
                       files_written: set[str]) -> None:
    """After another push moved the head: the packs and files this push relies on that the
    new head does not also hold came from the snapshot this push started from, which ``gc``
    may remove once it has been superseded for its grace period. Check they are still there."""
    needed = [(pack_key(p), f"pack {p}") for p in ours.packs() - theirs.packs() - set(written)]
    needed += [(file_key(f), f"file {f}") for f in ours.files() - theirs.files() - files_written]
    for key, what in needed:
        if not objects.exists(key):
            raise RemoteError(
                f"{what} of the remote {objects.shown} was removed by gc while this push ran "
                "(longer than gc's grace period); run the push again"
            )


# -- pull -------------------------------------------------------------------------------


def pull(url: str, path, models=None, *, progress_bar: bool | None = False) -> PullReport:
    """Copy models (default: all) from the remote at ``url`` into the store at ``path``
    (created if missing; an open ``Store`` is used as it is).

    Each model is fetched, decoded and checked against its digests before it is added in
    one transaction: an interrupted pull leaves every model whole or absent.
    """
    from .store import Store
    from .store import open as open_store

    names = _names(models)
    objects, head, snap, snapshot_bytes = _open_remote(url)
    if head is None:
        raise RemoteNotFoundError(f"no remote at {objects.shown}: nothing has been pushed there")
    wanted = names if names is not None else [m.name for m in sorted(snap.models.values(), key=lambda m: m.created)]
    for n in wanted:
        if n not in snap.models:
            raise ModelNotFoundError(f"no model {n!r} on the remote {objects.shown} (generation {head.generation})")
    if isinstance(path, Store):
        return _pull_into(objects, head, snap, snapshot_bytes, path, wanted, progress_bar)
    path = Path(path)
    created = not path.exists()
    try:
        layout = snap.layout if created or not any(path.iterdir()) else {}
        with open_store(path, "a", **layout) as store:
            report = _pull_into(objects, head, snap, snapshot_bytes, store, wanted, progress_bar)
    except BaseException:
        if created and path.is_dir():
            _remove_if_empty_store(path)
        raise
    return report


def _remove_if_empty_store(path: Path) -> None:
    """A store this pull created and added nothing to goes, so a failed pull leaves no trace."""
    from .store import open as open_store

    try:
        with open_store(path, "r") as store:
            empty = len(store) == 0
    except StoreError:
        return
    if empty:
        shutil.rmtree(path, ignore_errors=True)


def _pull_into(objects: Objects, head: Head, snap: Snapshot, snapshot_bytes: int, store, wanted: list[str], progress_bar) -> PullReport:
    from .progress import progress

    pulled, unchanged = [], []
    fetched = local_hits = fetched_bytes = 0
    total = sum(snap.models[n].logical_bytes for n in wanted)
    confirmed = _confirm_local(objects, snap, store, wanted)
    with progress(total, "pulling", progress_bar) as bar:
        for name in wanted:
            m = snap.models[name]
            tensors, stats = _fetch_model(objects, snap, m, store, confirmed)
            if tensors is None:
                unchanged.append(name)
            else:
                files = _fetch_files(objects, m)
                store.add_model(name, tensors, m.metadata, replace=True, domain=m.domain, files=files)
                confirmed |= _blocks_of(store, name, m.domain)  # made from the remote's bytes: the next models share them
                pulled.append(name)
                fetched += stats[0]
                local_hits += stats[1]
                fetched_bytes += stats[2]
            bar.update(m.logical_bytes)
    return PullReport(objects.shown, head.generation, pulled, unchanged, fetched, local_hits, fetched_bytes, snapshot_bytes,
                      objects.transfer.to_dict())


def _fetch_files(objects: Objects, m: RemoteModel) -> dict[str, bytes]:
    """The files kept with model ``m``, each checked against its hash."""
    out = {}
    for f in m.files:
        try:
            data = objects.get(file_key(f.sha256))
        except RemoteNotFoundError:
            raise CorruptionError(f"the remote {objects.shown}: file {f.path!r} of model {m.name!r} is missing") from None
        if len(data) != f.size or sha256(data) != f.sha256:
            raise CorruptionError(f"the remote {objects.shown}: file {f.path!r} of model {m.name!r} does not match its hash (damaged)")
        out[f.path] = data
    return out


def _confirm_local(objects: Objects, snap: Snapshot, store, wanted: list[str]) -> set[tuple[str, bytes]]:
    """The blocks the pulled models need that the store holds under the same MurmurHash3
    digest (and dedup domain), as ``(domain, digest)``, each confirmed to hold the remote
    block's bytes: by BLAKE3 digest, or where the snapshot has none (format 1) by fetching
    the block and comparing. A block that differs raises ``HashCollisionError`` before
    anything is added."""
    from .readpath import ReadPath

    confirmed: set[tuple[str, bytes]] = set()
    unsure: dict[bytes, bytes] = {}  # digest -> BLAKE3 of the local block
    unsure_keys: list[tuple[str, bytes]] = []
    with store.env.read() as txn:
        reader = ReadPath(store, txn, verify=True)
        local = _LocalBlocks(reader)
        domains = store.state(txn).domains
        hashes = store.env.dbs["hashes"]
        for domain in sorted({snap.models[n].domain for n in wanted}):
            domain_id = domains.get(domain)
            if domain_id is None:
                continue
            todo = [d for n in wanted if snap.models[n].domain == domain for d in snap.models[n].digests()]
            seen: set[bytes] = set()
            while todo:
                d = todo.pop()
                b = snap.blocks.get(d)
                if d in seen or b is None:
                    continue  # a digest the snapshot lacks is reported when it is fetched
                seen.add(d)
                found = txn.get(cat.hash_key(domain_id, d), db=hashes)
                if found is None:
                    if b.ref is not None:
                        todo.append(b.ref)  # fetched: its reference may be local
                    continue
                mine = local(int.from_bytes(found, "big"))
                ours = mine.strong or strong_digest(reader.block_bytes(mine))
                if not b.strong:
                    unsure[d] = ours
                    unsure_keys.append((domain, d))
                elif b.strong != ours:
                    raise _collision(objects, d, "in this store")
                else:
                    confirmed.add((domain, d))
    _confirm_fetched(objects, snap, unsure, "in this store")
    return confirmed | set(unsure_keys)


def _blocks_of(store, name: str, domain: str) -> set[tuple[str, bytes]]:
    """``(domain, digest)`` of every block model ``name`` references in the store."""
    from .readpath import ReadPath

    with store.env.read() as txn:
        local = _LocalBlocks(ReadPath(store, txn, verify=False))
        return {(domain, local(int(i)).digest) for t in store.record(txn, name).tensors for i in t.block_ids}


def _fetch_model(objects: Objects, snap: Snapshot, m: RemoteModel, store, confirmed: set[tuple[str, bytes]]):
    """The model's tensors, from local blocks where the store has them (and ``confirmed``
    says they are the remote's) and from the remote otherwise; ``(None, ...)`` when the
    store already holds the model exactly."""
    from .readpath import ReadPath

    have: dict[bytes, np.ndarray] = {}
    with store.env.read() as txn:
        reader = ReadPath(store, txn, verify=True)
        local = _LocalBlocks(reader)
        try:
            record = store.record(txn, m.name)
        except ModelNotFoundError:
            record = None
        if record is not None and local.model(record, store.files_in(txn, record.model_id)).same_as(m):
            return None, (0, 0, 0)
        domain_id = store.state(txn).domains.get(m.domain)
        hashes = store.env.dbs["hashes"]

        def from_store(d: bytes) -> bool:
            # A block stored since ``_confirm_local`` is fetched; add_model confirms it.
            if domain_id is None or (m.domain, d) not in confirmed:
                return False
            found = txn.get(cat.hash_key(domain_id, d), db=hashes)
            if found is None:
                return False
            have[d] = np.array(reader.block_bytes(local(int.from_bytes(found, "big"))), copy=True)
            return True

        todo, seen = list(m.digests()), set()
        while todo:  # the local blocks it needs, and those its fetched blocks decode against
            d = todo.pop()
            if d in seen or d in have or from_store(d):
                continue
            seen.add(d)
            b = snap.blocks.get(d)
            if b is None:
                raise CorruptionError(f"the remote {objects.shown}: model {m.name!r} needs block {d.hex()}, which its snapshot lacks")
            if b.ref is not None:
                todo.append(b.ref)
    local_hits = len(have)
    values, to_fetch = _resolve(objects, snap, m.digests(), have)

    tensors = {}
    for t in m.tensors:
        buf = np.empty(t.nbytes, dtype=np.uint8)
        for i, d in enumerate(t.digests):
            start = i * t.step
            stop = min(start + t.step, t.nbytes)
            block = values[d]
            if len(block) != stop - start:
                raise CorruptionError(f"the remote {objects.shown}: block {d.hex()} holds {len(block)} bytes where "
                                      f"tensor {t.name!r} of {m.name!r} needs {stop - start}")
            buf[start:stop] = block
        tensors[t.name] = buf.view(DTYPES[t.dtype]).reshape(t.shape)
    return tensors, (len(to_fetch), local_hits, sum(snap.blocks[d].stored for d in to_fetch))


def _fetch_payloads(objects: Objects, snap: Snapshot, digests: set[bytes]) -> dict[bytes, memoryview]:
    """Each block's stored payload: ranges of packs, neighbours read as one request; a pack
    needed whole is read whole and checked against its hash."""
    by_pack: dict[str, list[tuple[int, int, bytes]]] = {}
    for d in digests:
        b = snap.blocks[d]
        by_pack.setdefault(b.pack, []).append((b.offset, b.offset + b.stored, d))
    runs: list[tuple[str, int, int, list]] = []
    for pack, spans in by_pack.items():
        spans.sort()
        for start, stop, d in spans:
            if runs and runs[-1][0] == pack and start - runs[-1][2] <= RANGE_GAP:
                runs[-1] = (pack, runs[-1][1], max(runs[-1][2], stop), runs[-1][3] + [(start, stop, d)])
            else:
                runs.append((pack, start, stop, [(start, stop, d)]))
    whole = [r for r in runs if r[1] == 0 and r[2] == snap.pack_sizes.get(r[0])]
    parts = [r for r in runs if r not in whole]
    out: dict[bytes, memoryview] = {}

    def place(run, data: bytes) -> None:
        view = memoryview(data)
        for start, stop, d in run[3]:
            out[d] = view[start - run[1] : stop - run[1]]

    for run in whole:
        data = objects.get(pack_key(run[0]))
        if sha256(data) != run[0]:
            raise CorruptionError(f"pack {run[0]} on the remote {objects.shown} does not match its hash (damaged or cut short)")
        place(run, data)
    for run, data in zip(parts, objects.get_runs([(pack_key(r[0]), r[1], r[2]) for r in parts])):
        place(run, data)
    return out


# -- read-through -----------------------------------------------------------------------


def pull_missing(store, url: str, name: str) -> None:
    """Pull one model into ``store`` for a load (``ts.open(..., remote=url)``).

    A read-only handle cannot write, so the pull runs in a child process (LMDB's one writer
    beside this reader); the next read transaction here sees the model.
    """
    if not store.readonly:
        pull(url, store, [name])
        return
    done = subprocess.run([sys.executable, "-m", "tensorstore", "pull", url, str(store.path), "--model", name],
                          capture_output=True, text=True)
    if done.returncode != 0:
        line = (done.stderr.strip().splitlines() or ["the pull failed"])[-1]
        message = line.split("error: ", 1)[-1]
        if "no model" in message:
            raise ModelNotFoundError(message)
        raise RemoteError(f"pulling {name!r} for a load: {message}")


# -- listing and gc ---------------------------------------------------------------------


def remote_ls(url: str) -> dict:
    """What the remote holds: its head and, per model, tensors, logical bytes and the bytes
    (as stored) of the blocks it needs."""
    objects, head, snap, snapshot_bytes = _open_remote(url)
    if head is None:
        raise RemoteNotFoundError(f"no remote at {objects.shown}: nothing has been pushed there")
    models = []
    for m in sorted(snap.models.values(), key=lambda m: m.name):
        need = snap.closure(m.digests())
        models.append({"model": m.name, "domain": m.domain, "tensors": len(m.tensors), "logical_bytes": m.logical_bytes,
                       "blocks": len(m.digests()), "stored_bytes": sum(snap.blocks[d].stored for d in need if d in snap.blocks)})
    return {
        "url": objects.shown, "generation": head.generation, "snapshot": head.snapshot, "snapshot_bytes": snapshot_bytes,
        "models": models, "blocks": len(snap.blocks), "packs": len(snap.pack_sizes),
        "stored_bytes": sum(b.stored for b in snap.blocks.values()), "pack_bytes": sum(snap.pack_sizes.values()),
        "transfer": objects.transfer.to_dict(),
    }


def gc(url: str, *, grace_minutes: float = DEFAULT_GRACE_MINUTES, now: float | None = None) -> GcReport:
    """Delete packs, snapshots and heads that no recent snapshot needs.

    Kept: the newest head; every head superseded less than ``grace_minutes`` ago (a push or
    pull that read it may still be running); the snapshots those heads name; every snapshot
    and pack younger than the grace period (a push uploading now); and every pack a kept
    snapshot uses. The grace period must exceed the longest push or pull.
    """
    if not grace_minutes >= 0:
        raise InvalidArgumentError(f"grace_minutes must be a number >= 0, not {grace_minutes!r}")
    objects = Objects(url)
    now = time.time() if now is None else now
    horizon = now - 60.0 * grace_minutes
    heads = sorted((g, o) for o in objects.list(HEAD_PREFIX) if (g := head_generation(str(o["path"]))) is not None)
    if not heads:
        raise RemoteNotFoundError(f"no remote at {objects.shown}: nothing has been pushed there")
    kept_heads, dead_heads = [], []
    for k, (g, o) in enumerate(heads):
        successor = heads[k + 1][1] if k + 1 < len(heads) else None
        if successor is None or successor["last_modified"].timestamp() >= horizon:
            kept_heads.append((g, o))
        else:
            dead_heads.append(str(o["path"]))
    live_snapshots: set[str] = set()
    for g, o in kept_heads:
        try:
            live_snapshots.add(Head.decode(str(o["path"]), objects.get(str(o["path"]))).snapshot)
        except RemoteNotFoundError:
            continue
    snapshots = objects.list(SNAPSHOT_PREFIX)
    young_snapshots = {name_of(str(o["path"])) for o in snapshots if o["last_modified"].timestamp() >= horizon}
    live_packs: set[str] = set()
    live_files: set[str] = set()
    for s in live_snapshots:
        snap, _ = _read_snapshot(objects, Head(0, s, 0.0))
        live_packs |= snap.packs()
        live_files |= snap.files()
    keep_snapshots = live_snapshots | young_snapshots
    dead_snapshots = [str(o["path"]) for o in snapshots if name_of(str(o["path"])) not in keep_snapshots]
    packs = objects.list(PACK_PREFIX)
    dead_packs = [o for o in packs if name_of(str(o["path"])) not in live_packs and o["last_modified"].timestamp() < horizon]
    dead_files = [str(o["path"]) for o in objects.list(FILE_PREFIX)
                  if name_of(str(o["path"])) not in live_files and o["last_modified"].timestamp() < horizon]
    # Heads first: once a head is gone nothing can start from its snapshot.
    objects.delete(dead_heads)
    objects.delete(dead_snapshots)
    objects.delete([str(o["path"]) for o in dead_packs])
    objects.delete(dead_files)
    dead = {str(o["path"]) for o in dead_packs}
    kept = [o for o in packs if str(o["path"]) not in dead]
    return GcReport(objects.shown, heads[-1][0], len(dead_heads), len(dead_snapshots), len(dead_packs),
                    sum(int(o["size"]) for o in dead_packs), len(kept), sum(int(o["size"]) for o in kept),
                    objects.transfer.to_dict(), len(dead_files))


def _names(models) -> list[str] | None:
    if models is None:
        return None
    names = [models] if isinstance(models, str) else list(models)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidArgumentError(f"models must be model names (non-empty strings), not {models!r}")
    return list(dict.fromkeys(names))


def verify_remote(url: str) -> list[str]:
    """Check a whole remote: the head, its snapshot, every pack against its hash, every
    block against its digest (decoded) and every model's files against their hashes.
    Returns the problems found (empty: it verifies)."""
    objects, head, snap, _ = _open_remote(url)
    if head is None:
        return []
    problems: list[str] = []
    lost = snap.missing()
    if lost is not None:
        problems.append(f"a model needs block {lost.hex()}, which the snapshot lacks")
    packs: dict[str, bytes] = {}
    for pack in sorted(snap.pack_sizes):
        try:
            data = objects.get(pack_key(pack))
        except RemoteNotFoundError:
            problems.append(f"pack {pack} is missing")
            continue
        if sha256(data) != pack or len(data) != snap.pack_sizes[pack]:
            problems.append(f"pack {pack} does not match its hash")
            continue
        packs[pack] = data
    values: dict[bytes, np.ndarray] = {}

    def value_of(d: bytes, depth: int = 0) -> np.ndarray:
        if d in values:
            return values[d]
        b = snap.blocks[d]
        if depth > _MAX_DECODE_DEPTH:
            raise ValueError("has references that form a cycle")
        payload = memoryview(packs[b.pack])[b.offset : b.offset + b.stored]
        values[d] = _checked(d, b, payload, lambda: value_of(b.ref, depth + 1))
        return values[d]

    for d, b in snap.blocks.items():
        if b.pack in packs:
            try:
                value_of(d)
            except ValueError as exc:
                problems.append(f"block {d.hex()} in pack {b.pack} {exc}")
            except KeyError as exc:
                problems.append(f"block {d.hex()} in pack {b.pack} does not decode: its reference {exc} is missing")
    for m in snap.models.values():
        try:
            _fetch_files(objects, m)
        except CorruptionError as exc:
            problems.append(str(exc).split(": ", 1)[-1])
    return problems
