"""The buffer pool: page frames in one pre-allocated arena, with pinning and a replacer.

Concurrency. One lock guards the page table, the free list, the replacer and the counters.
A miss reserves a frame under the lock (evicting if needed), marks the page *loading*, and
then calls ``load`` and copies the bytes *outside* the lock, so a slow load does not block
hits on other pages. Other threads asking for a loading page wait on its event and then
take it as a hit: each page is loaded once however many threads want it. A pinned or
loading page is never evicted (the replacer is told it is not evictable).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Union

import numpy as np

from ._checks import as_int, positive_int, sharing_map
from .errors import (
    InvalidArgumentError,
    InvalidTypeError,
    PagePinnedError,
    PageTooLargeError,
    PoolExhaustedError,
)
from .policies import DEFAULT_POLICY, make_replacer
from .replacer import Replacer

BytesLike = Union[bytes, bytearray, memoryview, np.ndarray]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Counters of a :class:`BufferPool` since it was created (or :meth:`~BufferPool.reset_stats`).

    Attributes
    ----------
    hits
        Pins served without a load (including those that waited for another thread's load).
    misses
        Pins that started a load.
    evictions
        Pages evicted to make room.
    bytes_loaded
        Bytes returned by successful loads.
    load_waits
        Pins that waited for a load started by another thread.
    requests
        Calls to :meth:`~BufferPool.note_request`.
    """

    hits: int
    misses: int
    evictions: int
    bytes_loaded: int
    load_waits: int
    requests: int

    @property
    def hit_ratio(self) -> float:
        """Hits per pin (0.0 before the first pin)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the counters plus ``hit_ratio``."""
        return {**asdict(self), "hit_ratio": self.hit_ratio}


class _Entry:
    """A page in a frame, ``loading`` until its bytes are in.

    ``loaded`` is created only when a second thread has to wait for the load (most loads
    have no waiter, and an Event costs a few microseconds).
    """

    __slots__ = ("frame", "pins", "nbytes", "view", "loading", "loaded")

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.pins = 1  # the loader's pin
        self.nbytes = 0
        self.view: np.ndarray | None = None
        self.loading = True
        self.loaded: threading.Event | None = None


class PinnedPage:
    """Context manager returned by :meth:`BufferPool.pin`; pins on enter, unpins on exit."""

    __slots__ = ("_pool", "page_id", "_entry")

    def __init__(self, pool: BufferPool, page_id: int) -> None:
        self._pool = pool
        self.page_id = page_id
        self._entry: _Entry | None = None

    def __enter__(self) -> np.ndarray:
        if self._entry is not None:
            raise RuntimeError(f"page {self.page_id} is already pinned by this handle")
        entry = self._entry = self._pool._pin(self.page_id)
        return entry.view  # type: ignore[return-value]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            pool = self._pool
            with pool._lock:  # unpin; the last pin makes the page evictable again
                entry.pins -= 1
                if entry.pins == 0:
                    pool._replacer.set_evictable(self.page_id, True)


_new_handle = object.__new__


class BufferPool:
    """A bounded cache of fixed-size pages in one pre-allocated numpy arena.

    Parameters
    ----------
    capacity_bytes
        Memory budget; the pool has ``capacity_bytes // page_bytes`` frames.
    page_bytes
        Size of one frame; ``load`` may return fewer bytes, never more.
    load
        ``load(page_id) -> bytes-like`` (bytes, bytearray, memoryview, contiguous numpy
        array): the page's content. Called outside the pool's lock, at most once at a time
        per page. May be ``None`` if ``load_into`` is given.
    policy
        Eviction policy: a name from :data:`bufferpool.POLICIES` (default ``"queueing"``)
        or a :class:`~bufferpool.Replacer` built for ``n_frames`` frames.
    load_into
        Optional zero-copy variant used instead of ``load``: ``load_into(page_id, frame)``
        writes the page into ``frame`` (a writable memoryview of ``page_bytes`` bytes, e.g.
        with ``os.preadv``) and returns the number of bytes written.
    **policy_options
        Passed to the policy's constructor (e.g. ``hazard=0.01`` for ``"queueing"``).

    Examples
    --------
    >>> pool = BufferPool(4 * 4096, 4096, lambda page_id: bytes([page_id]) * 10)
    >>> with pool.pin(7) as frame:
    ...     bytes(frame)
    b'\\x07\\x07\\x07\\x07\\x07\\x07\\x07\\x07\\x07\\x07'
    """

    def __init__(
        self,
        capacity_bytes: int,
        page_bytes: int,
        load: Callable[[int], BytesLike] | None,
        policy: str | Replacer = DEFAULT_POLICY,
        *,
        load_into: Callable[[int, memoryview], int] | None = None,
        **policy_options: Any,
    ) -> None:
        capacity_bytes = positive_int(capacity_bytes, "capacity_bytes")
        self._page_bytes = positive_int(page_bytes, "page_bytes")
        if capacity_bytes < self._page_bytes:
            raise InvalidArgumentError(
                f"capacity_bytes ({capacity_bytes}) is smaller than one page ({self._page_bytes} bytes)"
            )
        if load_into is not None and not callable(load_into):
            raise InvalidTypeError(
                f"load_into must be callable (page_id, frame) -> int, got {type(load_into).__name__}"
            )
        if not callable(load) and not (load is None and load_into is not None):
            raise InvalidTypeError(f"load must be callable (page_id -> bytes), got {type(load).__name__}")
        self._n_frames = capacity_bytes // self._page_bytes
        if isinstance(policy, Replacer):
            if policy_options:
                raise InvalidArgumentError("policy options are only accepted with a policy name")
            if policy.capacity != self._n_frames:
                raise InvalidArgumentError(
                    f"the replacer has capacity {policy.capacity}, the pool {self._n_frames} frames"
                )
            self._replacer = policy
        else:
            self._replacer = make_replacer(policy, self._n_frames, **policy_options)
        self._load = load
        self._load_into = load_into
        # One allocation for every frame; readers get views of a read-only alias of it.
        self._arena = np.zeros(self._n_frames * self._page_bytes, dtype=np.uint8)
        self._writable = memoryview(self._arena)
        self._readonly = np.frombuffer(self._writable.toreadonly(), dtype=np.uint8)
        # Each frame's writable buffer (given to load_into) and read-only view (handed out for
        # a full page), made once: slicing the arena on every miss costs more than a lookup.
        page = self._page_bytes
        self._buffers = [self._writable[i * page : (i + 1) * page] for i in range(self._n_frames)]
        self._views = [self._readonly[i * page : (i + 1) * page] for i in range(self._n_frames)]
        self._free = list(range(self._n_frames - 1, -1, -1))
        self._table: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0
        self._bytes_loaded = self._load_waits = self._requests = 0

    # -- properties -----------------------------------------------------------------------
    @property
    def capacity_bytes(self) -> int:
        """Bytes of the arena (``n_frames * page_bytes``)."""
        return self._n_frames * self._page_bytes

    @property
    def page_bytes(self) -> int:
        """Size of one frame."""
        return self._page_bytes

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self._n_frames

    @property
    def policy(self) -> str:
        """Name of the eviction policy."""
        return self._replacer.name

    def __len__(self) -> int:
        """Number of frames in use (loaded or loading pages)."""
        return len(self._table)

    def __contains__(self, page_id: object) -> bool:
        """Whether ``page_id`` is loaded (a page still loading does not count)."""
        entry = self._table.get(page_id)  # type: ignore[call-overload]
        return entry is not None and not entry.loading

    def __repr__(self) -> str:
        return (
            f"BufferPool(n_frames={self._n_frames}, page_bytes={self._page_bytes}, "
            f"policy={self.policy!r}, resident={len(self)})"
        )

    # -- hints for the policy -------------------------------------------------------------
    def set_sharing(self, sharing: Mapping[int, Iterable[Hashable]]) -> None:
        """Tell the policy which models need each page: ``{page_id: [model, ...]}``.

        Replaces any earlier map. Pages not in the map count as needed by no known model.
        """
        checked = sharing_map(sharing)
        with self._lock:
            self._replacer.set_sharing(checked)

    def note_request(self, model: Hashable) -> None:
        """A request for ``model`` arrived (feeds the queueing policy's rate estimates)."""
        with self._lock:
            self._replacer.note_request(model)
            self._requests += 1

    # -- pinning --------------------------------------------------------------------------
    def pin(self, page_id: int) -> PinnedPage:
        """Pin ``page_id`` for a ``with`` block, loading it if needed.

        ``with pool.pin(page_id) as frame:`` gives a read-only ``uint8`` numpy view of the
        page's bytes (as many as ``load`` returned). The view is only valid inside the
        block: after it, the frame may be reused for another page. Copy out what you keep.

        Raises
        ------
        PoolExhaustedError
            On entering the block, if the page must be loaded and every frame is pinned.
        PageTooLargeError, InvalidTypeError
            If ``load`` returns more than ``page_bytes`` or not a bytes-like object.
        """
        if type(page_id) is not int:
            page_id = as_int(page_id, "page_id")
        handle = _new_handle(PinnedPage)  # PinnedPage(self, page_id) without the call
        handle._pool, handle.page_id, handle._entry = self, page_id, None
        return handle

    def _pin(self, page_id: int) -> _Entry:
        waited = False
        lock, table, replacer = self._lock, self._table, self._replacer
        while True:
            with lock:
                entry = table.get(page_id)
                if entry is None:  # a miss: reserve a frame, evicting if needed
                    replacer.record_access(page_id)  # tracked and not evictable while loading
                    if self._free:
                        entry = _Entry(self._free.pop())
                    else:
                        victim = replacer.evict()
                        if victim is None:
                            replacer.remove(page_id)
                            raise PoolExhaustedError(
                                f"cannot load page {page_id}: all {self._n_frames} frames hold "
                                f"pinned or loading pages; release pins or use a larger capacity_bytes"
                            )
                        # The victim's record serves the page coming into its frame: it was
                        # unpinned and loaded, so no handle holds it and no thread waits on it.
                        entry = table.pop(victim)
                        entry.pins, entry.nbytes, entry.view, entry.loading, entry.loaded = 1, 0, None, True, None
                        self._evictions += 1
                    table[page_id] = entry
                    self._misses += 1
                    break
                if not entry.loading:
                    entry.pins += 1
                    if entry.pins == 1:
                        replacer.set_evictable(page_id, False)
                    replacer.record_access(page_id)
                    self._hits += 1
                    if waited:
                        self._load_waits += 1
                    return entry
                if entry.loaded is None:
                    entry.loaded = threading.Event()
                event = entry.loaded
            event.wait()  # another thread is loading it; then look again
            waited = True
        self._fill(page_id, entry)
        return entry

    def _fill(self, page_id: int, entry: _Entry) -> None:
        """Outside the lock: load the page into its frame, then publish it (or undo)."""
        frame, page_bytes = entry.frame, self._page_bytes
        try:
            load_into = self._load_into
            if load_into is not None:
                buffer = self._buffers[frame]
                try:
                    buffer.nbytes
                except ValueError:  # an earlier load_into released it: make another
                    start = frame * page_bytes
                    buffer = self._buffers[frame] = self._writable[start : start + page_bytes]
                nbytes = load_into(page_id, buffer)
                if type(nbytes) is not int or not 0 <= nbytes <= page_bytes:
                    nbytes = self._checked_count(page_id, nbytes)
            else:
                data = _as_bytes(self._load(page_id), page_id)  # type: ignore[misc]
                nbytes = data.nbytes
                if nbytes > page_bytes:
                    raise PageTooLargeError(
                        f"load({page_id}) returned {nbytes} bytes; a frame holds {page_bytes}"
                    )
                start = frame * page_bytes
                self._arena[start : start + nbytes] = np.frombuffer(data, dtype=np.uint8)
        except BaseException:
            with self._lock:
                del self._table[page_id]
                self._replacer.remove(page_id)
                self._free.append(frame)
                entry.loading = False
                waiters = entry.loaded
            if waiters is not None:
                waiters.set()  # they wake, find no entry and try the load themselves
            raise
        if nbytes == page_bytes:
            view = self._views[frame]
        else:
            start = frame * page_bytes
            view = self._readonly[start : start + nbytes]
        with self._lock:
            entry.nbytes = nbytes
            entry.view = view
            self._bytes_loaded += nbytes
            if nbytes < page_bytes:  # (a page starts out as a full one)
                self._replacer.set_page_bytes(page_id, nbytes, page_bytes)
            entry.loading = False
            waiters = entry.loaded  # read under the lock: no waiter can add one after this
        if waiters is not None:
            waiters.set()

    def _checked_count(self, page_id: int, nbytes: object) -> int:
        """What ``load_into`` returned, if it is a valid byte count (else raise)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise InvalidTypeError(f"load_into({page_id}, frame) must return the bytes written, got {nbytes!r}")
        if not 0 <= nbytes <= self._page_bytes:
            raise PageTooLargeError(
                f"load_into({page_id}, frame) reported {nbytes} bytes; a frame holds {self._page_bytes}"
            )
        return int(nbytes)

    # -- dropping pages -------------------------------------------------------------------
    def invalidate(self, page_id: int) -> bool:
        """Drop ``page_id`` (its content changed); return whether it was resident.

        Raises
        ------
        PagePinnedError
            If the page is pinned or being loaded.
        """
        page_id = as_int(page_id, "page_id")
        with self._lock:
            entry = self._table.get(page_id)
            if entry is None:
                return False
            if entry.pins or entry.loading:
                raise PagePinnedError(f"page {page_id} is pinned or loading; cannot invalidate it")
            self._drop(page_id)
            return True

    def clear(self) -> int:
        """Drop every page; return how many were dropped.

        Raises
        ------
        PagePinnedError
            If any page is pinned or loading (then nothing is dropped).
        """
        with self._lock:
            busy = [pid for pid, entry in self._table.items() if entry.pins or entry.loading]
            if busy:
                raise PagePinnedError(f"cannot clear: {len(busy)} page(s) pinned or loading, e.g. {busy[:5]}")
            dropped = len(self._table)
            for page_id in list(self._table):
                self._drop(page_id)
            return dropped

    def _drop(self, page_id: int) -> None:
        entry = self._table.pop(page_id)
        self._replacer.remove(page_id)
        self._free.append(entry.frame)

    # -- counters -------------------------------------------------------------------------
    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        with self._lock:
            return PoolStats(
                self._hits, self._misses, self._evictions, self._bytes_loaded, self._load_waits, self._requests
            )

    def reset_stats(self) -> None:
        """Set every counter to zero (resident pages and rate estimates are kept)."""
        with self._lock:
            self._hits = self._misses = self._evictions = 0
            self._bytes_loaded = self._load_waits = self._requests = 0


def _as_bytes(data: object, page_id: int) -> memoryview:
    """View ``data`` as flat bytes, or raise ``InvalidTypeError`` naming the page."""
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise InvalidTypeError(
            f"load({page_id}) must return a contiguous bytes-like object, got {type(data).__name__}"
        ) from None
