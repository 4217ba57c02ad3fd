"""Zero-copy reads: ``with store.reader() as r: r.load_model(name)``.

A reader holds one LMDB read snapshot. A tensor whose bytes lie in one run (its raw blocks
back to back in one page) comes back as a read-only numpy view of LMDB's memory map: no
copy at all. Any other tensor is assembled into a new array, as ``Store.load_model`` does.

Lifetimes: a view stays valid as long as it is referenced, even after the reader's
``with`` block ends (the snapshot it reads is held until the last view is gone, so no
writer can reuse its pages). Closing the *store* while views are referenced raises
``ViewsAliveError``, because closing unmaps the memory the views point into. For a
private writable copy: ``np.array(view)``.

With a shared cache (``ts.open(..., shared_cache=True)``) every tensor is mapped read-only
from shared memory, where the first process to load it put it
(:mod:`tensorstore.sharedcache`). Such an array depends on nothing but its mapping: it
stays valid after the reader and the store are closed, and holds no LMDB snapshot (a
long-lived view of the memory map would keep writers from reusing freed pages). One-run
tensors are copied into the cache too, so that a process that finds a model in the cache
touches neither the store's pages nor their checksums: it maps what another process
assembled and verified.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import weakref

import numpy as np
import xxhash

from .dtypes import dtype_from_name
from .errors import StoreClosedError
from .readpath import ALWAYS, ReadPath


class Reader:
    """One read snapshot of a store, handing out zero-copy views where the layout allows."""

    def __init__(self, store, verify: bool | str = True) -> None:
        self._store = store
        self._env = store.env
        self._txn = self._env.begin_snapshot()  # no remap while it lives
        self._reader = ReadPath(store, self._txn, verify)
        self._lock = threading.Lock()
        self._views = 0
        self._closed = False

    def load_model(self, name: str) -> dict[str, np.ndarray]:
        """Every tensor of the model, read-only: mapped from the shared cache when the store
        has one; else views of the memory map where a tensor is one run, and copies."""
        self._check_open()
        raw, record = self._store.record_value(self._txn, name)
        if self._store.shared_cache is None:
            return {t.name: self._tensor(t) for t in record.tensors}
        keys = self._content_keys(raw, record)
        return {t.name: self._shared_tensor(t, key) for t, key in zip(record.tensors, keys)}

    def load_tensor(self, name: str, tensor_name: str) -> np.ndarray:
        from .errors import TensorNotFoundError

        self._check_open()
        record = self._store.record(self._txn, name)
        t = record.tensor(tensor_name)
        if t is None:
            raise TensorNotFoundError(f"model {name!r} has no tensor {tensor_name!r}")
        if self._store.shared_cache is None:
            return self._tensor(t)
        return self._shared_tensor(t, content_key(record.domain, t, self._reader.blocks(t)))

    def _tensor(self, t) -> np.ndarray:
        runs = self._reader.runs(t)
        if len(runs) != 1 or runs[0][4] is not None:  # spread over pages, or encoded
            return self._reader.assemble(t, runs)
        page_id, offset, _, n, _ = runs[0]
        raw = self._reader.page(page_id)[offset : offset + n]
        view = np.frombuffer(raw, dtype=dtype_from_name(t.dtype).newbyteorder("=")).reshape(t.shape)
        with self._lock:
            self._views += 1
            self._env.live_views += 1
        weakref.finalize(view, self._view_released)
        return view

    def _view_released(self) -> None:
        with self._lock:
            self._views -= 1
            self._env.live_views -= 1
            last = self._closed and self._views == 0
        if last:
            self._env.end_snapshot(self._txn)

    def _content_keys(self, raw: bytes, record) -> list[bytes]:
        # The keys of a model's tensors depend only on its catalog record (block ids name
        # the same bytes for the life of a store), so they are kept in the cache too: a
        # process that finds them there reads no block record at all.
        shared = self._store.shared_cache
        manifest = manifest_key(self._store.identity(), raw)
        keys = shared.read_manifest(manifest, len(record.tensors))
        if keys is None:
            keys = [content_key(record.domain, t, self._reader.blocks(t)) for t in record.tensors]
            shared.write_manifest(manifest, keys)
        return keys

    def _shared_tensor(self, t, key: bytes) -> np.ndarray:
        if t.nbytes == 0:
            return self._tensor(t)

        def fill(buffer: memoryview) -> None:
            runs = self._reader.runs(t)
            self._reader.assemble(t, runs, np.frombuffer(buffer, dtype=np.uint8))
            if self._store.pool is None:
                for page_id in {r[0] for r in runs}:
                    _drop_resident(self._reader.page(page_id))

        mapping = self._store.shared_cache.acquire(key, t.nbytes, fill, recheck=self._reader.policy == ALWAYS)
        if mapping is None:  # no room in the shared cache: a private, read-only copy
            out = self._reader.tensor(t)
            out.flags.writeable = False
            return out
        dtype = dtype_from_name(t.dtype).newbyteorder("=")
        # The mapping ends with the file's checksum: the tensor is its first nbytes.
        return np.frombuffer(mapping, dtype=dtype, count=t.nbytes // dtype.itemsize).reshape(t.shape)

    @staticmethod
    def is_view(arr: np.ndarray) -> bool:
        """Whether ``arr`` maps memory it does not own (the store's memory map or the shared
        cache), as opposed to a private copy."""
        root = arr
        while isinstance(root, np.ndarray) and root.base is not None:
            root = root.base
        return not isinstance(root, np.ndarray)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this reader is closed; open another with store.reader()")

    def close(self) -> None:
        """End the reader; its snapshot is released when its last view is gone."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            release = self._views == 0
        if release:
            self._env.end_snapshot(self._txn)

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def manifest_key(store_identity: bytes, record_value: bytes) -> bytes:
    """The cache's name for the list of a model's content keys."""
    return xxhash.xxh3_128_digest(b"manifest\0" + store_identity + b"\0" + bytes(record_value))


def content_key(domain: str, t, blocks) -> bytes:
    """A tensor's name in the shared cache: a hash of what it is as stored (dedup domain,
    dtype, shape, and the content digest of each block), so equal tensors of different
    models share one entry and no domain is served another's."""
    h = xxhash.xxh3_128()
    h.update(domain.encode() + b"\0" + t.dtype.encode() + b"\0")
    h.update(np.asarray(t.shape, dtype="<i8").tobytes())
    for b in blocks:
        h.update(b.digest)
    return h.digest()


_libc = ctypes.CDLL(None, use_errno=True)
_MADV_DONTNEED = 4


def _drop_resident(view: memoryview) -> None:
    """Unmap the OS pages of ``view`` (a piece of LMDB's read-only file mapping) from this
    process. Its bytes now live in the shared cache; keeping the page-cache pages mapped
    would count them again in this process's memory. The next access simply maps them
    again, so this is safe for views still in use."""
    if not len(view):
        return
    start = np.frombuffer(view, dtype=np.uint8).ctypes.data
    first = start - start % mmap.PAGESIZE
    _libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(start + len(view) - first), _MADV_DONTNEED)
