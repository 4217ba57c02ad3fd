"""Zero-copy reads: ``with store.reader() as r: r.load_model(name)``.

A reader holds one LMDB read snapshot. A tensor whose bytes lie in one run (its blocks
back to back in one page) comes back as a read-only numpy view of LMDB's memory map: no
copy at all. Any other tensor is assembled into a new array, as ``Store.load_model`` does.

Lifetimes: a view stays valid as long as it is referenced, even after the reader's
``with`` block ends (the snapshot it reads is held until the last view is gone, so no
writer can reuse its pages). Closing the *store* while views are referenced raises
``ViewsAliveError``, because closing unmaps the memory the views point into. For a
private writable copy: ``np.array(view)``.

With a shared cache (``ts.open(..., shared_cache=True)``), a tensor that is not one run
is mapped read-only from shared memory, where the first process to load it put it
(:mod:`tensorstore.sharedcache`); such an array depends on nothing but its mapping, so it
stays valid after the reader and the store are closed.
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


class Reader:
    """One read snapshot of a store, handing out zero-copy views where the layout allows."""

    def __init__(self, store) -> None:
        from .store import _Reader

        self._store = store
        self._env = store.env
        self._txn = self._env.env.begin(buffers=True)
        self._reader = _Reader(store, self._txn, verify=True)
        self._lock = threading.Lock()
        self._views = 0
        self._closed = False

    def load_model(self, name: str) -> dict[str, np.ndarray]:
        """Every tensor of the model: read-only views where a tensor is one run, else copies."""
        self._check_open()
        record = self._store._record(self._txn, name)
        return {t.name: self._tensor(t, record.domain) for t in record.tensors}

    def load_tensor(self, name: str, tensor_name: str) -> np.ndarray:
        from .errors import TensorNotFoundError

        self._check_open()
        record = self._store._record(self._txn, name)
        t = record.tensor(tensor_name)
        if t is None:
            raise TensorNotFoundError(f"model {name!r} has no tensor {tensor_name!r}")
        return self._tensor(t, record.domain)

    def _tensor(self, t, domain: str) -> np.ndarray:
        blocks = self._reader.blocks(t)
        runs = self._reader.runs(t, blocks)
        if len(runs) != 1:
            return self._assembled(t, domain, blocks, runs)
        page_id, offset, _, n = runs[0]
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
            self._txn.abort()

    def _assembled(self, t, domain: str, blocks, runs) -> np.ndarray:
        shared = self._store._shared
        if shared is None or t.nbytes == 0:
            return self._reader.assemble(t, runs)

        def fill(buffer: memoryview) -> None:
            self._reader.assemble(t, runs, np.frombuffer(buffer, dtype=np.uint8))
            if self._store._pool is None:
                for page_id in {r[0] for r in runs}:
                    _drop_resident(self._reader.page(page_id))

        mapping = shared.acquire(content_key(domain, t, blocks), t.nbytes, fill)
        if mapping is None:  # no room in the shared cache: a private copy
            return self._reader.assemble(t, runs)
        return np.frombuffer(mapping, dtype=dtype_from_name(t.dtype).newbyteorder("=")).reshape(t.shape)

    @staticmethod
    def is_view(arr: np.ndarray) -> bool:
        """Whether ``arr`` reads the store's memory map (not a private copy)."""
        return not arr.flags.writeable and not arr.flags.owndata

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
            self._txn.abort()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
