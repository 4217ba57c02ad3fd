"""How many threads the store's own parallel work uses, and one way to spread it.

Work that lets go of the GIL (the codec's C kernel, zstd, BLAS) runs on as many threads as
``OMP_NUM_THREADS`` says where it is set to a positive integer, as torch's and BLAS's pools
do (a Ray worker of one CPU sets it to 1), else one per core this process may run on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child makes a new pool: the parent's threads do not exist in it
_pool_size = 0


def default_threads() -> int:
    """``OMP_NUM_THREADS`` where it is set to a positive integer, else the number of cores
    this process may run on."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    if n > 0:
        return n
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _helpers(n: int) -> ThreadPoolExecutor:
    """The process-wide pool, with at least ``n`` threads."""
    global _pool, _pool_pid, _pool_size
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < n:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)  # work already queued there still runs
            _pool, _pool_pid, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="tensorstore"), os.getpid(), n
        return _pool


class Started(Generic[R]):
    """Work that ``start`` handed to the pool, one task an item.

    The pool's queue keeps a task it was told to drop until one of its threads takes it
    off; so tasks reach their items through this object, which lets go of them once they
    are done or dropped (an item may hold views of memory its owner wants to unmap)."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T], pool: ThreadPoolExecutor) -> None:
        self._fn: Callable[[T], R] | None = fn
        self._items: list | None = list(items)
        self._futures = [pool.submit(self._run, i) for i in range(len(self._items))]

    def _run(self, i: int) -> R:
        fn, item = self._fn, self._items[i]  # type: ignore[index]
        self._items[i] = None  # type: ignore[index]
        return fn(item)  # type: ignore[misc]

    def results(self) -> list[R]:
        """``fn`` of each item, in the items' order: items no pool thread has begun run
        here first, then the rest are waited for. Raises the first exception in the items'
        order, once every item is done."""
        done: list = [None] * len(self._futures)
        ran = []
        for i, f in enumerate(self._futures):  # one at a time: pool threads take the others meanwhile
            ran.append(f.cancel())
            if ran[-1]:
                try:
                    done[i] = self._run(i)
                except Exception as exc:  # noqa: BLE001 - raised below, in the items' order
                    done[i] = exc
        for i, here in enumerate(ran):
            if not here:
                try:
                    done[i] = self._futures[i].result()
                except Exception as exc:  # noqa: BLE001
                    done[i] = exc
        self._fn = self._items = None
        for result in done:
            if isinstance(result, BaseException):
                raise result
        return done

    def cancel(self) -> None:
        """Drop the items no pool thread has begun (after an error: their results are not
        wanted). Nothing to do once ``results()`` has returned or raised."""
        if self._items is None:
            return
        for i, f in enumerate(self._futures):
            if f.cancel():
                self._items[i] = None


def start(fn: Callable[[T], R], items: Sequence[T]) -> Started[R]:
    """Hand ``fn`` of each item to the process's pool (``default_threads() - 1`` threads, at
    least one) and return at once; ``Started.results()`` collects them. For work that lets go
    of the GIL for most of its time, with the caller busy meanwhile: an item is a whole share."""
    return Started(fn, items, _helpers(max(1, default_threads() - 1)))


def spread(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None, least: int = 4) -> list[R | BaseException]:
    """``fn`` of each item, in the items' order, on ``threads`` threads (this one among
    them; ``default_threads()`` if None), each taking every ``threads``-th item.

    Worth it only where ``fn`` lets go of the GIL for most of its time: fewer than
    ``least`` items per thread run here alone. An exception is returned in its item's
    place rather than raised, so that the caller can name the first item that failed.
    """
    k = max(1, min(threads or default_threads(), len(items) // max(least, 1)))

    def run(share: Sequence[T]) -> list[R | BaseException]:
        done: list[R | BaseException] = []
        for item in share:
            try:
                done.append(fn(item))
            except Exception as exc:  # noqa: BLE001 - handed back in the item's place
                done.append(exc)
        return done

    if k == 1:
        return run(items)
    _helpers(k - 1)
    others = start(run, [items[i::k] for i in range(1, k)])
    shares = [run(items[0::k])] + others.results()
    out: list[R | BaseException] = [None] * len(items)  # type: ignore[list-item]
    for i, share in enumerate(shares):
        out[i::k] = share
    return out


def each(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """``spread``, raising the first exception in the items' order, if any."""
    done = spread(fn, items, threads)
    for result in done:
        if isinstance(result, BaseException):
            raise result
    return done  # type: ignore[return-value]
