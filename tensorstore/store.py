"""The store: models in, models out, each distinct block kept once.

``Store`` composes the parts: ``chunking`` cuts tensors into blocks, ``BlockWriter``
places and references them in one write transaction, ``PageFile`` keeps the pages and
their checksums, ``catalog`` the tables. Every public method that changes the store runs
in exactly one LMDB write transaction, so a failed or interrupted call changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb
import numpy as np

from . import catalog as cat
from . import codec, dtypes, modelfiles, sharedcache
from . import contentcodes, contentrefs
from .contentrefs import Query
from .blockwriter import BlockRun, BlockWriter
from .catalog import ModelRecord, StoreState, TensorRecord, id_key
from .chunking import as_bytes, block_spans, block_step, canonical
from .dedup import DEFAULT_TOLERANCE, drop_audit, run_dedup
from .digests import block_digests
from .dtypes import DTYPE_CODES, dtype_from_name, dtype_name
from .environment import DATA_FILE, Environment, acquire, is_open, opening, other_users
from .errors import (
    CorruptionError,
    HashCollisionError,
    InvalidArgumentError,
    InvalidTensorError,
    ModelExistsError,
    ModelNotFoundError,
    NotAStoreError,
    ReadOnlyError,
    StoreClosedError,
    StoreFullError,
    StoreExistsError,
    StoreNotFoundError,
    TensorNotFoundError,
    ViewsAliveError,
)
from .pagefile import PageFile
from . import readpath
from .readpath import FIRST, ReadPath, verify_policy
from .progress import progress
from .reports import CacheStats, StoreStats
from .units import parse_size

DEFAULT_PAGE_SIZE = 1 << 20
DEFAULT_BLOCK_BYTES = 64 << 10
MAX_PAGE_SIZE = 1 << 31  # offsets are 32-bit
MIN_BLOCK_BYTES = 64
MAX_NAME_BYTES = 256  # model names are LMDB keys (at most 511 bytes)
MAX_TENSOR_NAME_BYTES = 4096
MODES = ("r", "r+", "a", "w", "w-")
CODECS = ("auto", "raw")
# A tensor's blocks are looked up, encoded and placed in runs of this many, and this many
# runs are encoded ahead on the pool's threads while this thread places the run before
# them: the adding thread's own work (lookups, placing, LMDB puts) then overlaps the
# encoding, and the memory held by copies of references and payloads stays bounded. Runs
# of 32-256 with 0-16 ahead gave the MiniLM base (new data) 0.26-0.35 GB/s, within one
# another's noise; 64 and 4 were among the best (docs/benchmarks.md, Encoded blocks, Speed).
_ENCODE_BATCH = 64
_RUNS_AHEAD = 4

_MAX_PLANS = 64  # cached load plans per handle
_FORMAT_KEY = b"format"
_STATE_KEY = b"state"


def open(  # noqa: A001 - the module-level verb users expect: ts.open(path)
    path: str | Path,
    mode: str = "a",
    page_size: int | str | None = None,
    block_bytes: int | str | None = None,
    cache_bytes: int | str | None = None,
    shared_cache: bool | str | Path | None = None,
    shared_cache_bytes: int | str | None = None,
    shared_cache_keep_alive: float | None = None,
    codec: str = "auto",
    remote: str | None = None,
    verify: bool | str = True,
    content_refs: bool = True,
) -> "Store":
    """Open (or create) the store at ``path``.

    Parameters
    ----------
    path : str or Path
        The store's directory.
    mode : {"r", "r+", "a", "w", "w-"}
        ``"r"`` read-only, must exist; ``"r+"`` read-write, must exist; ``"a"`` read-write,
        created if missing; ``"w"`` created, replacing a store that is there; ``"w-"``
        created, failing if anything is there.
    page_size, block_bytes : int or str, optional
        Fixed when the store is created (``"1MiB"``, ``65536``). Given for an existing
        store they must match what it was created with.
    cache_bytes : int or str, optional
        Give this handle a buffer pool of that many bytes (at least one block): it holds
        blocks decoded, so a model it holds loads with no decode and no page read, and its
        queueing-model eviction keeps the blocks that the most requested models share.
        Without it, loads read LMDB's memory map directly (the OS page cache is the cache)
        and decode encoded blocks on every load.
    shared_cache : bool, str or Path, optional
        Share assembled tensors with every process on this machine that opens the store
        (:mod:`tensorstore.sharedcache`): ``True`` for a directory in ``/dev/shm`` named
        after the store, a bare name for ``/dev/shm/NAME``, or a directory path.
        ``store.reader()`` then maps tensors from it read-only instead of assembling a
        private copy in each process.
    shared_cache_bytes : int or str, optional
        The shared cache's budget, for all processes together (default: a quarter of the
        size of the filesystem that holds it).
    shared_cache_keep_alive : float, optional
        Seconds a tensor no process uses stays cached (default 300).
    codec : {"auto", "raw"}
        How this handle writes new blocks: ``"auto"`` (the default) keeps each in the
        smallest of raw, byte planes + zstd, or a delta against a block of the model's
        parent (:mod:`tensorstore.codec`); ``"raw"`` stores every block as it is, the
        fastest to write and read. Stores hold both; reads decode whatever they find.
    content_refs : bool
        With ``codec="auto"``, let a new block with no reference by position (a renamed
        tensor, rows moved by an insertion) be stored as a delta against the nearest
        stored block by content, found in an LSH index (:mod:`tensorstore.contentrefs`).
        Default True; ``False``: references by position only. A lookup reads the codes
        the store keeps for its blocks (:mod:`tensorstore.contentcodes`), so its cost
        does not grow with the store; a store written before codes were kept has its
        blocks coded once, in resumable steps, by the first add with this on.
    remote : str, optional
        A remote's URL (:mod:`tensorstore.remote`): a model not in the store is pulled
        from it on its first ``load_model`` or ``load_tensor`` (read-through), then served
        locally. With mode ``"r"`` the pull runs in a child process.
    verify : bool or str
        This handle's checksum rule for reads (each load may pass its own):
        ``True``/``"first"`` (the default) checks each page the first time this process
        reads it, ``"always"`` on every read, ``False`` never
        (:mod:`tensorstore.readpath` says exactly what is checked when).
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"mode {mode!r} is not one of {', '.join(map(repr, MODES))}")
    if codec not in CODECS:
        raise InvalidArgumentError(f"codec {codec!r} is not one of {', '.join(map(repr, CODECS))}")
    if not isinstance(content_refs, bool):
        raise InvalidArgumentError(f"content_refs must be True or False, not {content_refs!r}")
    policy = verify_policy(verify)
    path = Path(path)
    page = parse_size(page_size, "page_size") if page_size is not None else None
    block = parse_size(block_bytes, "block_bytes") if block_bytes is not None else None
    cache = parse_size(cache_bytes, "cache_bytes") if cache_bytes is not None else None
    shared_budget = parse_size(shared_cache_bytes, "shared_cache_bytes") if shared_cache_bytes is not None else None
    if shared_cache in (None, False) and (shared_budget is not None or shared_cache_keep_alive is not None):
        raise InvalidArgumentError("shared_cache_bytes and shared_cache_keep_alive need shared_cache")
    if shared_cache_keep_alive is not None and not shared_cache_keep_alive >= 0:
        raise InvalidArgumentError(f"shared_cache_keep_alive must be a number of seconds >= 0, not {shared_cache_keep_alive!r}")
    is_store = (path / DATA_FILE).is_file()
    if path.exists() and not path.is_dir():
        raise NotAStoreError(f"{path} is a file, not a store directory")
    if mode in ("r", "r+"):
        if not path.exists():
            raise StoreNotFoundError(f"no store at {path}; create one with mode 'a' or 'w-'")
        # One listing decides: another process may be creating the store right now, and
        # data.mdb may appear between two looks at the directory.
        names = {p.name for p in path.iterdir()}
        is_store = DATA_FILE in names and (path / DATA_FILE).is_file()
        if not is_store and names <= {"lock.mdb"}:  # empty, or being created
            raise StoreNotFoundError(f"no store at {path} (the directory is empty); create one with mode 'a' or 'w-'")
        if not is_store:
            raise NotAStoreError(f"{path} is not a store (no {DATA_FILE} in it)")
    elif mode == "w-":
        if is_store or (path.exists() and any(path.iterdir())):
            raise StoreExistsError(f"{path} already exists and is not empty; use mode 'a' to open it or 'w' to replace a store")
    elif not is_store and path.exists() and any(p.name not in ("lock.mdb", DATA_FILE) for p in path.iterdir()):  # being created
        raise NotAStoreError(f"{path} is a directory that is not a store; refusing to write into it")
    if mode == "w" and is_store:
        if is_open(path):
            raise StoreExistsError(f"{path} is open in this process; close it before replacing it with mode 'w'")
        _check_is_store(path)  # never delete a directory that is not ours
        users = other_users(path)
        if users:
            raise StoreExistsError(
                f"{path} is open in process(es) {', '.join(map(str, users))}; close it there before replacing it with mode 'w'"
            )
        for name in (DATA_FILE, "lock.mdb"):
            (path / name).unlink(missing_ok=True)
        is_store = False
    if is_store:
        store = Store._open_existing(path, readonly=(mode == "r"), page_size=page, block_bytes=block)
    else:
        store = Store._create(path, page_size=page or DEFAULT_PAGE_SIZE, block_bytes=block or DEFAULT_BLOCK_BYTES)
    store.codec = codec
    store.content_refs = content_refs
    store.verify_policy = policy
    if remote is not None and not (isinstance(remote, str) and remote):
        store.close()
        raise InvalidArgumentError(f"remote must be a URL string, not {remote!r}")
    store.remote = remote
    try:
        if cache is not None:
            store._attach_cache(cache)
        if shared_cache not in (None, False):
            store._attach_shared(shared_cache, shared_budget, shared_cache_keep_alive)
    except BaseException:
        store.close()
        raise
    return store


def _check_is_store(path: Path) -> None:
    Store._open_existing(path, readonly=True, page_size=None, block_bytes=None).close()


class Store:
    """A deduplicating store of models; open one with :func:`tensorstore.open`."""

    def __init__(self, env: Environment, page_size: int, block_bytes: int, readonly: bool) -> None:
        self._env: Environment | None = env
        self.path = env.path
        self.readonly = readonly
        self.page_size = page_size
        self.block_bytes = block_bytes
        self.page_file = PageFile(env.dbs["pages"], page_size, env.verified_pages)
        # Where each tensor's bytes lie, per model, valid for one snapshot (LMDB txn id):
        # a warm load of an unchanged store skips the catalog entirely.
        self._plans: dict[tuple[str, int], list[tuple[TensorRecord, list[tuple[int, int, int, int]]]]] = {}
        self._plans_lock = threading.Lock()
        self.pool = None  # a BufferPool when opened with cache_bytes
        self.verify_policy = FIRST  # the checksum rule of this handle's reads (``open``'s ``verify``)
        self._sharing_snapshot = -1  # txn id the pool's sharing map was computed at
        self._model_blocks: dict[str, tuple[bytes, frozenset[int]]] = {}  # name -> (record, its blocks)
        self.shared_cache = None  # a SharedCache when opened with shared_cache
        self._ident: bytes | None = None
        self.codec = "auto"  # how this handle writes new blocks (``open``'s ``codec``)
        self.content_refs = True  # references found by content too (``open``'s ``content_refs``)
        self.remote: str | None = None  # pulled from on a load of a missing model (``open``'s ``remote``)

    def _attach_cache(self, cache_bytes: int) -> None:
        from tensorstore_bufferpool import BufferPool

        if cache_bytes < self.block_bytes:
            raise InvalidArgumentError(f"cache_bytes ({cache_bytes}) must hold at least one block ({self.block_bytes} bytes)")
        # The pool holds blocks, decoded: a model it holds loads with no decode and no page read.
        self.pool = BufferPool(cache_bytes, self.block_bytes, None, policy="queueing", load_into=readpath.load_frame)

    def _attach_shared(self, where: bool | str | Path, budget: int | None, keep_alive: float | None) -> None:
        if where is True:
            directory = sharedcache.default_directory(self.path)
        elif isinstance(where, (str, Path)) and str(where) and os.sep not in str(where):
            directory = sharedcache.SHM_ROOT / str(where)
        elif isinstance(where, (str, Path)) and str(where):
            directory = Path(where)
        else:
            raise InvalidArgumentError(f"shared_cache must be True, a name or a directory path, not {where!r}")
        self.shared_cache = sharedcache.SharedCache(
            directory,
            budget if budget is not None else sharedcache.default_budget(directory),
            sharedcache.DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive,
            dir_mode=stat.S_IMODE(self.path.stat().st_mode),
            file_mode=stat.S_IMODE((self.path / DATA_FILE).stat().st_mode) & 0o666,
        )

    def cache_stats(self) -> CacheStats:
        """This process's caches: the buffer pool's counters, the shared tensor cache's,
        and the bytes each holds (private to this process, or mapped from shared memory)."""
        pool = None if self.pool is None else self.pool.stats()
        shared = None if self.shared_cache is None else self.shared_cache.stats()
        return CacheStats(
            pool=pool,
            shared=shared,
            private_bytes=0 if self.pool is None else self.pool.capacity_bytes,
            shared_bytes=0 if shared is None else shared.mapped_bytes,
        )

    # -- opening --------------------------------------------------------------------

    @classmethod
    def _create(cls, path: Path, *, page_size: int, block_bytes: int) -> "Store":
        if not MIN_BLOCK_BYTES <= block_bytes <= page_size:
            raise InvalidArgumentError(
                f"block_bytes ({block_bytes}) must be at least {MIN_BLOCK_BYTES} and at most page_size ({page_size})"
            )
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"page_size ({page_size}) must be at most {MAX_PAGE_SIZE} bytes (2 GiB)")
        path.mkdir(parents=True, exist_ok=True)
        with opening(path, exclusive=True):  # another process may be creating it too
            env = acquire(path, readonly=False, create=True)
            fmt = {"format": cat.FORMAT_NAME, "version": cat.FORMAT_VERSION, "page_size": page_size, "block_bytes": block_bytes, "created": time.time()}

            def init(txn: lmdb.Transaction) -> dict:
                raw = txn.get(_FORMAT_KEY, db=env.dbs["meta"])
                if raw is not None:  # it did, first: open what it created
                    return json.loads(bytes(raw))
                txn.put(_FORMAT_KEY, json.dumps(fmt).encode(), db=env.dbs["meta"])
                txn.put(_STATE_KEY, StoreState().encode(), db=env.dbs["meta"])
                return fmt

            try:
                fmt = env.write(init)
            except BaseException:
                env.close()
                raise
        return cls(env, int(fmt["page_size"]), int(fmt["block_bytes"]), readonly=False)

    @classmethod
    def _open_existing(cls, path: Path, *, readonly: bool, page_size: int | None, block_bytes: int | None) -> "Store":
        with opening(path, exclusive=False):  # waits while another process creates it
            env = acquire(path, readonly=readonly)
        try:
            with env.read() as txn:
                raw = txn.get(_FORMAT_KEY, db=env.dbs["meta"])
                fmt = json.loads(bytes(raw)) if raw is not None else None
            if not isinstance(fmt, dict) or fmt.get("format") != cat.FORMAT_NAME:
                raise NotAStoreError(f"{path} is an LMDB environment but not a store")
            if fmt.get("version") not in cat.READABLE_VERSIONS:
                raise NotAStoreError(
                    f"{path} is a store of format version {fmt.get('version')}; this library reads versions "
                    f"{', '.join(map(str, cat.READABLE_VERSIONS))}: upgrade tensorstore-dedup to open it"
                )
            if not readonly and fmt["version"] != cat.FORMAT_VERSION:
                # Format 1 is format 2 with every block raw; say 2 before writing any
                # format-2 record, so that an older library refuses the store rather than
                # misreading it.
                upgraded = json.dumps(fmt | {"version": cat.FORMAT_VERSION}).encode()
                env.write(lambda txn: txn.put(_FORMAT_KEY, upgraded, db=env.dbs["meta"]))
            stored = (int(fmt["page_size"]), int(fmt["block_bytes"]))
        except (ValueError, KeyError, TypeError) as exc:
            env.close()
            raise NotAStoreError(f"{path} has a damaged format record ({exc})") from exc
        except BaseException:
            env.close()
            raise
        for what, given, have in (("page_size", page_size, stored[0]), ("block_bytes", block_bytes, stored[1])):
            if given is not None and given != have:
                env.close()
                raise InvalidArgumentError(f"{what} is fixed at creation: this store has {have}, not {given}")
        return cls(env, *stored, readonly=readonly)

    def close(self) -> None:
        """Close the handle; a closed store raises ``StoreClosedError`` when used.

        Raises ``ViewsAliveError`` (and stays open) while zero-copy views from
        :meth:`reader` are referenced and this is the store's last handle in the process.
        """
        if self._env is not None:
            if self._env.live_views and self._env._users == 1:
                raise ViewsAliveError(
                    f"{self._env.live_views} zero-copy view(s) of the store at {self.path} are still referenced; "
                    "delete them (or keep np.array(view) copies) before closing the store"
                )
            if self.shared_cache is not None:
                self.shared_cache.close()  # tensors still mapped stay valid and held
            self._env.close()
            self._env = None

    def reader(self, *, verify: bool | str | None = None):
        """A read snapshot that returns zero-copy read-only views where it can
        (see :mod:`tensorstore.reader`); ``verify`` as for :meth:`load_model`."""
        from .reader import Reader

        return Reader(self, self.verify_policy if verify is None else verify)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._env is None else ("read-only" if self.readonly else "read-write")
        return f"<tensorstore.Store {str(self.path)!r} {state}>"

    @property
    def env(self) -> Environment:
        if self._env is None:
            raise StoreClosedError(f"the store at {self.path} is closed")
        return self._env

    def writable_env(self) -> Environment:
        """The environment, for a change: ``ReadOnlyError`` on a read-only handle."""
        env = self.env
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path} is open read-only; open it with mode 'r+' or 'a' to change it")
        return env

    # -- models in ------------------------------------------------------------------

    def add_model(
        self,
        name: str,
        tensors: Mapping[str, object] | Iterable[tuple[str, object]],
        metadata: Mapping | None = None,
        *,
        replace: bool = False,
        domain: str = "",
        base: str | None = None,
        progress_bar: bool | None = False,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Store a model: a mapping of tensor names to arrays.

        Blocks already in the store are referenced, not written again. The model is stored
        whole or not at all.

        Parameters
        ----------
        name : str
            The model's name: non-empty, at most 256 UTF-8 bytes, no control characters.
        tensors : mapping or iterable of (name, array) pairs
            Arrays of a supported dtype (bool, int8-64, uint8-64, float16, bfloat16,
            float32, float64), any shape, contiguous or not.
        metadata : mapping, optional
            JSON-serialisable data kept with the model (e.g. a safetensors header's).
        replace : bool
            Replace a model of the same name instead of raising ``ModelExistsError``.
        domain : str
            The dedup domain (tenant). Blocks are shared only among models of one domain:
            a model's blocks are never matched against another domain's, so a tenant cannot
            tell from sizes or timing whether another tenant holds some data. Default "".
        base : str, optional
            The model this one was derived from (its *parent*): with ``codec="auto"``, a
            new block may be stored as a delta against the parent's block at the same
            tensor name and position. Without it the parent is found: the stored model of
            the same domain that shares the most blocks with this one at the same
            positions, then the most tensor names, dtypes and shapes, then the oldest.
            A block with no reference there (a renamed tensor, rows moved by an insertion)
            may be a delta of the nearest stored block by content (``open``'s
            ``content_refs``).
        files : mapping of str to bytes, optional
            Small files kept with the model, by relative path (``config.json``,
            ``tokenizer.json``): stored whole, in the same transaction, not deduplicated,
            not counted in ``logical_bytes``; removed with the model, replaced with it.
            Read them back with :meth:`load_files`.
        """
        env = self.writable_env()
        _check_name(name, "model name", MAX_NAME_BYTES)
        if domain != "":
            _check_name(domain, "domain", MAX_NAME_BYTES)
        if base is not None:
            _check_name(base, "base model name", MAX_NAME_BYTES)
        arrays = _tensor_list(tensors)
        meta = _check_metadata(metadata)
        extra = _check_files(files)
        total = sum(a.nbytes for _, a in arrays)
        key = name.encode()
        if self.codec == "auto" and self.content_refs and contentcodes.pending(self):
            contentcodes.backfill(self)  # a store written before codes were kept: once

        def add(txn: lmdb.Transaction) -> None:
            old = txn.get(key, db=env.dbs["models"])
            if old is not None and not replace:
                raise ModelExistsError(f"model {name!r} already exists; pass replace=True to overwrite it")
            state = self.state(txn)
            domain_id = state.domains.setdefault(domain, len(state.domains))
            writer = BlockWriter(txn, env.dbs, self.page_file, state, domain_id)
            records = []
            with progress(total, f"adding {name}", progress_bar) as bar:
                if self.codec == "raw":
                    for tname, arr in arrays:
                        records.append(self._chunk_into(writer, tname, arr))
                        bar.update(arr.nbytes)
                else:
                    records = self._encode_into(txn, writer, arrays, base, domain, bar)
            model_id = state.next_model_id
            if old is not None:
                previous = cat.decode_model(name, old)
                drop_audit(txn, env.dbs["replacements"], previous.model_id)
                for t in previous.tensors:
                    for block_id in t.block_ids:
                        writer.release(int(block_id))
                state.models -= 1
                state.tensors -= len(previous.tensors)
                state.logical_bytes -= previous.logical_bytes
                model_id = previous.model_id
            else:
                state.next_model_id += 1
            writer.flush()
            record = ModelRecord(name, model_id, time.time(), meta, tuple(records), domain)
            txn.put(key, cat.encode_model(record), db=env.dbs["models"])
            modelfiles.put_files(txn, env.dbs["files"], model_id, extra)
            state.models += 1
            state.tensors += len(records)
            state.logical_bytes += total
            self.put_state(txn, state)

        env.write(add, expect_bytes=total + sum(len(d) for d in extra.values()))

    def _chunk_into(self, writer: BlockWriter, tname: str, arr: np.ndarray) -> TensorRecord:
        dname = dtype_name(arr.dtype)
        step = block_step(arr.shape, arr.dtype.itemsize, self.block_bytes)
        data = as_bytes(arr)
        code = DTYPE_CODES[dname]
        with _naming_tensor(tname):
            ids = [writer.reference(data[s:e], code) for s, e in block_spans(arr.nbytes, step)]
        return TensorRecord(tname, dname, tuple(arr.shape), arr.nbytes, step, np.array(ids, dtype=np.uint64))

    def _encode_into(self, txn: lmdb.Transaction, writer: BlockWriter, arrays: list[tuple[str, np.ndarray]],
                     base: str | None, domain: str, bar) -> list[TensorRecord]:
        """Chunk, hash and reference every tensor, new blocks encoded (``codec="auto"``)."""
        chunked, every_block, classes = [], [], []
        for tname, arr in arrays:
            dname = dtype_name(arr.dtype)
            step = block_step(arr.shape, arr.dtype.itemsize, self.block_bytes)
            data = as_bytes(arr)
            blocks = [data[s:e] for s, e in block_spans(arr.nbytes, step)]
            chunked.append((tname, arr, dname, step, blocks))
            every_block += blocks
            classes += [DTYPE_CODES[dname]] * len(blocks)
        digests = iter(block_digests(every_block, classes))  # every tensor's at once, on every core
        chunked = [(*c, [next(digests) for _ in c[4]]) for c in chunked]
        parent = self._parent(txn, base, domain, writer, chunked)
        positional, queries = [], []
        for t, (tname, arr, dname, step, blocks, digests) in enumerate(chunked):
            mine = parent.tensor(tname) if parent is not None else None
            same = mine is not None and mine.dtype == dname and mine.step == step
            theirs = mine.block_ids.tolist() if same else []
            positional.append(theirs)
            # Rows inserted (another shape) move every later block off its parent position.
            moved = same and mine.shape != tuple(arr.shape)
            if self.content_refs and (moved or len(theirs) < len(blocks)):
                code = DTYPE_CODES[dname]
                queries += [Query((t, i), b, code, d) for i, (b, d) in enumerate(zip(blocks, digests))
                            if (moved or i >= len(theirs)) and writer._lookup(cat.hash_key(writer.domain, d)) is None]
        near = contentrefs.find(writer, queries) if queries else {}
        strongs = iter(writer.strongs_of_stored(every_block, [d for c in chunked for d in c[5]]))
        ids: list[list[int]] = [[] for _ in chunked]
        # Runs' new blocks are encoded on the pool's threads while this thread places the
        # oldest: up to _RUNS_AHEAD runs are in flight besides the one being placed.
        runs: list[tuple[int, BlockRun]] = []

        def finish() -> None:
            t, run = runs[0]
            with _naming_tensor(chunked[t][0]):
                ids[t] += writer.finish_encoded(run)
            runs.pop(0)
            bar.update(sum(len(b) for b in run.blocks))

        try:
            for t, (tname, arr, dname, step, blocks, digests) in enumerate(chunked):
                theirs = positional[t]
                code, layout = DTYPE_CODES[dname], dtypes.layout(dname)
                for k in range(0, len(blocks), _ENCODE_BATCH):
                    end = min(k + _ENCODE_BATCH, len(blocks))
                    candidates = [theirs[i : i + 1] + near.get((t, i), []) for i in range(k, end)]
                    taken = [next(strongs) for _ in range(k, end)]
                    with _naming_tensor(tname):
                        runs.append((t, writer.start_encoded(blocks[k:end], digests[k:end], code, layout, candidates,
                                                             taken)))
                    if len(runs) > _RUNS_AHEAD:
                        finish()
            while runs:
                finish()
        finally:
            for _, run in runs:  # an error: what is still encoding is not wanted
                run.cancel()
        return [TensorRecord(tname, dname, tuple(arr.shape), arr.nbytes, step, np.array(ids[t], dtype=np.uint64))
                for t, (tname, arr, dname, step, _, _) in enumerate(chunked)]

    def _parent(self, txn: lmdb.Transaction, base: str | None, domain: str, writer: BlockWriter, chunked) -> ModelRecord | None:
        """The model a new one is stored as deltas against: ``base`` if given; else the
        model of its domain sharing the most blocks with it at the same tensor and
        position, then the most tensors of the same name, dtype and shape, then the oldest."""
        if base is not None:
            try:
                parent = self.record(txn, base)
            except ModelNotFoundError:
                raise ModelNotFoundError(f"base model {base!r} is not in the store at {self.path}") from None
            if parent.domain != domain:
                raise InvalidArgumentError(f"base model {base!r} is in dedup domain {parent.domain!r}, not {domain!r}")
            return parent
        hits = {}
        for tname, arr, dname, step, blocks, digests in chunked:
            found = [writer._lookup(cat.hash_key(writer.domain, d)) for d in digests]
            hits[tname] = (dname, tuple(arr.shape), np.array([-1 if f is None else f for f in found], dtype=np.int64))
        best, best_score = None, None
        for record in self.records(txn):
            if record.domain != domain:
                continue
            shared = same = 0
            for t in record.tensors:
                mine = hits.get(t.name)
                if mine is None or mine[0] != t.dtype:
                    continue
                same += mine[1] == t.shape
                n = min(len(mine[2]), len(t.block_ids))
                shared += int(np.count_nonzero(mine[2][:n] == t.block_ids[:n].astype(np.int64)))
            score = (shared, same, -record.model_id)
            if same and (best_score is None or score > best_score):
                best, best_score = record, score
        return best

    def delete_model(self, name: str) -> None:
        """Remove a model; blocks no other model references are freed and their space reused."""
        env = self.writable_env()
        key = _name_key(name)

        def delete(txn: lmdb.Transaction, keep_code_entries: bool = False) -> None:
            record = self.record(txn, name)
            state = self.state(txn)
            writer = BlockWriter(txn, env.dbs, self.page_file, state)
            writer.code_log.keep_entries = keep_code_entries
            for t in record.tensors:
                for block_id in t.block_ids:
                    writer.release(int(block_id))
            writer.flush()
            txn.delete(key, db=env.dbs["models"])
            modelfiles.drop_files(txn, env.dbs["files"], record.model_id)
            drop_audit(txn, env.dbs["replacements"], record.model_id)
            state.models -= 1
            state.tensors -= len(record.tensors)
            state.logical_bytes -= record.logical_bytes
            self.put_state(txn, state)

        try:
            env.write(delete)
        except StoreFullError:
            # Deleting is how a full disk is given room again, and the freed codes' index
            # entries alone touch a page of the content index per piece: leave them stale
            # (``contentcodes.delete``) and try once more.
            env.write(lambda txn: delete(txn, keep_code_entries=True))

    # -- models out -----------------------------------------------------------------

    def load_model(self, name: str, *, verify: bool | str | None = None) -> dict[str, np.ndarray]:
        """Return every tensor of the model as a new, writable numpy array, bit-exact.

        ``verify``: the checksum rule, ``True``/``"first"``, ``"always"`` or ``False``
        (default: the handle's, from :func:`open`; :mod:`tensorstore.readpath`). A page
        that fails its checksum raises ``CorruptionError`` naming the models it holds.
        """
        self._read_through(name)
        with self.env.read() as txn:
            reader = ReadPath(self, txn, self.verify_policy if verify is None else verify)
            if self.pool is not None:
                self._note_request(txn, name)
            key = (name, txn.id())
            with self._plans_lock:
                plan = self._plans.get(key)
            if plan is None:
                plan = [(t, reader.runs(t)) for t in self.record(txn, name).tensors]  # per block with a pool
                with self._plans_lock:  # handles are shared across threads
                    while len(self._plans) >= _MAX_PLANS:
                        self._plans.pop(next(iter(self._plans)))
                    self._plans[key] = plan
            return {t.name: arr for (t, _), arr in zip(plan, reader.assemble_all(plan))}

    def load_tensor(self, name: str, tensor_name: str, *, verify: bool | str | None = None) -> np.ndarray:
        """Return one tensor of a model (reads only the pages that tensor needs)."""
        self._read_through(name)
        with self.env.read() as txn:
            record = self.record(txn, name)
            t = record.tensor(tensor_name)
            if t is None:
                raise TensorNotFoundError(f"model {name!r} has no tensor {tensor_name!r}")
            return ReadPath(self, txn, self.verify_policy if verify is None else verify).tensor(t)

    def _read_through(self, name: str) -> None:
        if self.remote is not None and isinstance(name, str) and name and name not in self:
            from .remote import pull_missing

            pull_missing(self, self.remote, name)

    def push(self, url: str, models: str | Sequence[str] | None = None, **options):
        """Publish the store's models (or ``models``) to the remote at ``url``; return a
        ``PushReport``. Only blocks the remote lacks are sent (:func:`tensorstore.remote.push`)."""
        from .remote import push

        self.env  # a closed handle raises here, not halfway through
        return push(self, url, models, **options)
    def load_files(self, name: str) -> dict[str, bytes]:
        """The small files kept with a model (``add_model(..., files=)``), by relative path."""
        with self.env.read() as txn:
            return self.files_in(txn, self.record(txn, name).model_id)

    def files_in(self, txn: lmdb.Transaction, model_id: int) -> dict[str, bytes]:
        """The files kept with the model of ``model_id`` in ``txn``'s snapshot."""
        db = self.env.dbs.get("files")
        if db is None:  # a store made before files could be kept, opened read-only
            return {}
        return modelfiles.read_files(txn, db, model_id)

    def _note_request(self, txn: lmdb.Transaction, name: str) -> None:
        """Tell the pool a model was requested, and which models need which blocks."""
        if self._sharing_snapshot != txn.id():
            self.pool.set_sharing(self._sharing(txn))
            self._sharing_snapshot = txn.id()
        self.pool.note_request(name)

    def _sharing(self, txn: lmdb.Transaction) -> dict[int, list[str]]:
        """Which models need each block, in ``txn``'s snapshot (a model's block set is kept
        between snapshots while its catalog record is unchanged)."""
        kept: dict[str, tuple[bytes, frozenset[int]]] = {}
        with txn.cursor(db=self.env.dbs["models"]) as cur:
            for k, v in cur:
                name, raw = bytes(k).decode(errors="replace"), bytes(v)
                hit = self._model_blocks.get(name)
                if hit is None or hit[0] != raw:
                    hit = (raw, frozenset(int(i) for t in cat.decode_model(name, raw).tensors for i in t.block_ids))
                kept[name] = hit
        self._model_blocks = kept
        sharing: dict[int, list[str]] = {}
        for name, (_, blocks) in kept.items():
            for b in blocks:
                sharing.setdefault(b, []).append(name)
        return sharing

    def model_info(self, name: str) -> ModelRecord:
        """The catalog record of a model: metadata and each tensor's dtype, shape, blocks."""
        with self.env.read() as txn:
            return self.record(txn, name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name:
            return False
        try:
            key = name.encode()
        except UnicodeEncodeError:
            return False
        with self.env.read() as txn:
            return txn.get(key, db=self.env.dbs["models"]) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.models())

    def __len__(self) -> int:
        with self.env.read() as txn:
            return self.state(txn).models

    def models(self) -> list[str]:
        """Model names in the store's (UTF-8 byte) order."""
        with self.env.read() as txn, txn.cursor(db=self.env.dbs["models"]) as cur:
            return [bytes(k).decode() for k in cur.iternext(keys=True, values=False)]

    def dedup(
        self,
        models: str | Sequence[str] | None = None,
        *,
        evaluate: Callable[[str, dict[str, np.ndarray]], float] | None = None,
        max_accuracy_drop: float = 0.01,
        tolerance: float | None = DEFAULT_TOLERANCE,
        dry_run: bool = False,
        progress_bar: bool | None = False,
        keep_bases: bool = True,
        executor=None,
    ):
        """Let near-duplicate blocks share one representative, as far as accuracy allows.

        Parameters
        ----------
        models : str or sequence of str, optional
            The models to deduplicate, in this order (default: all, in store order).
        evaluate : callable, optional
            ``evaluate(name, tensors) -> float``, higher is better (e.g. held-out accuracy).
            Without it only ``tolerance`` bounds the change and the report says accuracy
            was not checked.
        max_accuracy_drop : float
            Absolute budget in [0, 1): every model ends with a measured accuracy of at
            least its original minus this.
        tolerance : float, optional
            The largest relative L2 error a replacement may introduce in one block; by
            default 0.1 with ``evaluate`` (the gate bounds accuracy; measured in
            docs/benchmarks.md) and 0.01 without.
        dry_run : bool
            Plan and report what the pass would do (model by model, as applied); change nothing.
        keep_bases : bool
            A block is replaced only by one of a model that ranks as more of a base (shares
            blocks with more models; of equals, the one added first), so a base stays exact
            and its fine-tunes move toward it. ``False``: any direction.
        executor : concurrent.futures.Executor, optional
            Where the evaluations run (``tensorstore.ray_executor.RayExecutor`` for a Ray
            cluster): those of different models at once, with the serial pass's result
            (:mod:`tensorstore.executor`; ``evaluate`` must be deterministic and picklable).

        Returns
        -------
        DedupReport
            Per model: the replacements (which block, which representative, the error),
            bytes saved, evaluations used, accuracy before and after. Applied
            replacements are also recorded in ``catalog()["replacements"]``.
        """
        names = [models] if isinstance(models, str) else models
        return run_dedup(self, names, evaluate, max_accuracy_drop, tolerance, dry_run, progress_bar, keep_bases,
                         executor)

    def repack(self, algorithm: str = "two-stage", *, read_weight: float | None = None, time_limit: float = 10.0):
        """Rewrite every page to the layout ``packing`` chooses; return a ``PackReport``.

        Parameters
        ----------
        algorithm : str
            ``"two-stage"`` (the default: full pages per sharing set, then CP-SAT over the
            leftovers), ``"greedy-2"``, ``"greedy-1"`` or ``"baseline"``.
        read_weight : float, optional
            Weight of pages read per model load against pages stored (``packing``'s knob).
        time_limit : float
            Seconds the CP-SAT stage may take; past it a greedy fallback finishes.

        All of it is one transaction: a crash leaves the old layout intact.
        """
        from .repack import repack

        env = self.writable_env()
        weight, algorithm = self._pack_options(algorithm, read_weight, time_limit)
        return env.write(lambda txn: repack(self, txn, algorithm, weight, time_limit), expect_bytes=self.stats().stored_bytes)

    def compact(self, algorithm: str = "two-stage", *, read_weight: float | None = None, time_limit: float = 10.0):
        """Re-encode every block in its smallest encoding and rewrite every page; return a
        ``CompactReport`` (see :mod:`tensorstore.compact`).

        For a store written with ``codec="raw"`` or by a version without encodings, or
        one whose models arrived before their parents. One transaction: a crash leaves
        the store as it was; the content codes of blocks it makes deltas go in it too. ``algorithm``, ``read_weight`` and ``time_limit`` are
        :meth:`repack`'s.
        """
        from .compact import compact

        env = self.writable_env()
        weight, algorithm = self._pack_options(algorithm, read_weight, time_limit)

        def run(txn: lmdb.Transaction):
            report = compact(self, txn, algorithm, weight, time_limit)
            contentcodes.prune(txn, env.dbs)  # blocks made deltas are references no more
            return report

        return env.write(run, expect_bytes=2 * self.stats().stored_bytes)

    @staticmethod
    def _pack_options(algorithm: str, read_weight: float | None, time_limit: float) -> tuple[float, str]:
        import tensorstore_packing as packing

        if algorithm not in packing.ALGORITHMS:
            raise InvalidArgumentError(f"unknown packing algorithm {algorithm!r}; choose one of {', '.join(packing.ALGORITHMS)}")
        weight = packing.DEFAULT_READ_WEIGHT if read_weight is None else float(read_weight)
        if not weight >= 0:
            raise InvalidArgumentError(f"read_weight must be a number >= 0, not {read_weight!r}")
        if not time_limit > 0:
            raise InvalidArgumentError(f"time_limit must be positive, not {time_limit!r}")
        return weight, algorithm

    # -- facts ------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Sizes and counts; read from running totals, so it costs the same at any size."""
        with self.env.read() as txn:
            s = self.state(txn)
        return StoreStats(
            models=s.models,
            tensors=s.tensors,
            logical_bytes=s.logical_bytes,
            unique_bytes=s.unique_bytes,
            stored_bytes=s.pages * self.page_size,
            file_bytes=self.env.file_bytes(),
            blocks=s.blocks,
            unique_blocks=s.unique_blocks,
            pages=s.pages,
            page_size=self.page_size,
            block_bytes=self.block_bytes,
            encoded_bytes=s.encoded_bytes,
            encodings=dict(zip(codec.NAMES, s.encodings)),
        )

    def verify(self):
        """Check every checksum and every cross-reference; see :mod:`tensorstore.verify`."""
        from .verify import verify_store

        with self.env.read() as txn:
            return verify_store(self, txn)

    def catalog(self):
        """The catalog as pyarrow Tables (:func:`tensorstore.tables.catalog_tables`)."""
        from .tables import catalog_tables

        with self.env.read() as txn:
            return catalog_tables(self, txn)

    # -- the catalog, for the modules that compose the store (dedup, repack, verify,
    #    tables, compact, remote, the CLI): one snapshot's records and running state -----

    def record(self, txn: lmdb.Transaction, name: str) -> ModelRecord:
        return self.record_value(txn, name)[1]

    def record_value(self, txn: lmdb.Transaction, name: str) -> tuple[bytes, ModelRecord]:
        """A model's catalog record, raw and decoded."""
        value = txn.get(_name_key(name), db=self.env.dbs["models"])
        if value is None:
            raise ModelNotFoundError(f"no model {name!r} in the store at {self.path}")
        return value, cat.decode_model(name, value)

    def identity(self) -> bytes:
        """What tells this store from any other, for names kept outside it (the shared
        cache): its data file's device and inode, and its creation time. A copied or
        re-created store differs, even where its block ids are the same numbers."""
        if self._ident is None:
            st = (self.path / DATA_FILE).stat()
            with self.env.read() as txn:
                created = json.loads(bytes(txn.get(_FORMAT_KEY, db=self.env.dbs["meta"]))).get("created")
            self._ident = f"{st.st_dev}:{st.st_ino}:{created!r}".encode()
        return self._ident

    def state(self, txn: lmdb.Transaction) -> StoreState:
        value = txn.get(_STATE_KEY, db=self.env.dbs["meta"])
        if value is None:
            raise CorruptionError(f"the store at {self.path} has no state record")
        return StoreState.decode(value)

    def put_state(self, txn: lmdb.Transaction, state: StoreState) -> None:
        txn.put(_STATE_KEY, state.encode(), db=self.env.dbs["meta"])

    def models_in_page(self, txn: lmdb.Transaction, page_id: int) -> str:
        """Which models a damaged page affects, for the error that reports it (a slow scan)."""
        try:
            value = txn.get(id_key(page_id), db=self.env.dbs["pagemeta"])
            in_page = set(cat.decode_page(page_id, value).block_ids) if value is not None else set()
            names = [m.name for m in self.records(txn) if any(int(i) in in_page for t in m.tensors for i in t.block_ids)]
        except CorruptionError:
            return "models the damaged catalog no longer names"
        return "models " + ", ".join(repr(n) for n in names) if names else "no model"

    def records(self, txn: lmdb.Transaction) -> Iterator[ModelRecord]:
        with txn.cursor(db=self.env.dbs["models"]) as cur:
            for k, v in cur:
                yield cat.decode_model(bytes(k).decode(errors="replace"), v)


# -- input checks -------------------------------------------------------------------


@contextlib.contextmanager
def _naming_tensor(tname: str) -> Iterator[None]:
    try:
        yield
    except HashCollisionError as exc:
        raise HashCollisionError(f"tensor {tname!r}: {exc}") from None


def _check_name(name: object, what: str, max_bytes: int) -> None:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidArgumentError(f"{what} must not be empty")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} {name!r} is not valid Unicode text (lone surrogates)") from None
    if len(encoded) > max_bytes:
        raise InvalidArgumentError(f"{what} is {len(encoded)} bytes in UTF-8; at most {max_bytes} are allowed")
    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise InvalidArgumentError(f"{what} {name!r} contains the control character {bad!r}")


def _name_key(name: object) -> bytes:
    if not isinstance(name, str) or not name:
        raise ModelNotFoundError(f"no model {name!r}: model names are non-empty strings")
    try:
        return name.encode()
    except UnicodeEncodeError:
        raise ModelNotFoundError(f"no model {name!r}: not valid Unicode text") from None


def _tensor_list(tensors: object) -> list[tuple[str, np.ndarray]]:
    """Validate every tensor before anything is written; return canonical arrays."""
    if isinstance(tensors, Mapping):
        items = list(tensors.items())
    elif isinstance(tensors, Iterable) and not isinstance(tensors, (str, bytes, np.ndarray)):
        items = list(tensors)
        if not all(isinstance(i, tuple) and len(i) == 2 for i in items):
            raise InvalidTensorError("tensors must be a mapping of names to arrays, or (name, array) pairs")
    else:
        raise InvalidTensorError(f"tensors must be a mapping of names to arrays, not {type(tensors).__name__}")
    if not items:
        raise InvalidTensorError("a model needs at least one tensor")
    seen: set[str] = set()
    out = []
    for tname, value in items:
        try:
            _check_name(tname, "tensor name", MAX_TENSOR_NAME_BYTES)
        except InvalidArgumentError as exc:
            raise InvalidTensorError(str(exc)) from None
        if tname in seen:
            raise InvalidTensorError(f"tensor name {tname!r} appears twice")
        seen.add(tname)
        out.append((tname, canonical(value, f"tensor {tname!r}")))
    return out


MAX_FILE_BYTES = 256 << 20  # per small file kept with a model
MAX_FILE_PATH_BYTES = 400  # the path follows an 8-byte model id in an LMDB key (<= 511 bytes)


def _check_files(files: object) -> dict[str, bytes]:
    """Validate ``add_model``'s ``files``: relative POSIX paths inside the model's directory."""
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise InvalidArgumentError(f"files must be a mapping of relative paths to bytes, not {type(files).__name__}")
    out = {}
    for path, data in files.items():
        _check_name(path, "file name", MAX_FILE_PATH_BYTES)
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            raise InvalidArgumentError(f"file name {path!r} must be a relative path like 'config.json' or 'sub/vocab.txt' (no '..', no leading '/')")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"file {path!r} must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_FILE_BYTES:
            raise InvalidArgumentError(f"file {path!r} is {len(data)} bytes; files kept with a model may be at most {MAX_FILE_BYTES}")
        out[path] = data
    return out


def _check_metadata(metadata: object) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(f"metadata must be a mapping, not {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serialisable: {exc}") from None

