"""Zero-copy reads: ``with store.reader() as r: r.load_model(name)``.

A reader holds one LMDB read snapshot. A tensor whose bytes lie in one run (its blocks
back to back in one page) comes back as a read-only numpy view of LMDB's memory map: no
copy at all. Any other tensor is assembled into a new array, as ``Store.load_model`` does.

Lifetimes: a view stays valid as long as it is referenced, even after the reader's
``with`` block ends (the snapshot it reads is held until the last view is gone, so no
writer can reuse its pages). Closing the *store* while views are referenced raises
``ViewsAliveError``, because closing unmaps the memory the views point into. For a
private writable copy: ``np.array(view)``.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

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
        return {t.name: self._tensor(t) for t in record.tensors}

    def load_tensor(self, name: str, tensor_name: str) -> np.ndarray:
        from .errors import TensorNotFoundError

        self._check_open()
        t = self._store._record(self._txn, name).tensor(tensor_name)
        if t is None:
            raise TensorNotFoundError(f"model {name!r} has no tensor {tensor_name!r}")
        return self._tensor(t)

    def _tensor(self, t) -> np.ndarray:
        runs = self._reader.runs(t)
        if len(runs) != 1:
            return self._reader.assemble(t, runs)
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
