"""The replacer interface: the few verbs a buffer pool needs from an eviction policy.

Modelled on BusTub's replacer, but keyed by page id instead of frame id, so that a policy
with history (ARC's and S3-FIFO's ghost lists, the queueing policy's sharing classes) can
recognise a page when it comes back.

Protocol, as :class:`bufferpool.BufferPool` and :func:`bufferpool.simulate` use it:

* on every access: ``record_access(page)``. A page seen for the first time starts being
  tracked and is *not evictable* (it is being loaded / pinned);
* when a page is pinned: ``set_evictable(page, False)``; when its last pin goes:
  ``set_evictable(page, True)``. Toggling never changes a page's place in the policy's order,
  so a pool that pins around each access and a simulator that does not make the same choices;
* on a miss with no free frame: ``record_access(new)`` first, then ``evict()`` — so the
  policy knows which page is coming in (ARC and S3-FIFO look it up in their ghost lists) —
  and ``evict()`` returns an evictable page it stops tracking, or ``None`` if there is none;
* ``remove(page)`` forgets a page (and its history) when its content changes;
* hints: ``note_request(model)`` once per model request, before its pages are read;
  ``set_sharing(map)``; ``set_page_bytes(page, n, frame)`` after loading a page that holds
  less than a frame (a page is taken to be full until told otherwise).

Replacers are not thread-safe: the pool calls them under its lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Iterable
from typing import ClassVar

from ._checks import positive_int
from .errors import PageNotTrackedError


class Replacer(ABC):
    """Base class of every eviction policy.

    Parameters
    ----------
    capacity
        Number of frames in the cache. Policies that size internal queues (ARC, S3-FIFO)
        or estimate residence time (queueing) use it; others only validate it.
    """

    name: ClassVar[str]

    def __init__(self, capacity: int) -> None:
        self.capacity = positive_int(capacity, "capacity")
        self._evictable: set[int] = set()

    # -- the five verbs -------------------------------------------------------------------
    @abstractmethod
    def record_access(self, page_id: int) -> None:
        """Note an access to ``page_id``; start tracking it (not evictable) if it is new."""

    def set_evictable(self, page_id: int, evictable: bool) -> None:
        """Allow (``True``) or forbid (``False``) evicting a tracked page.

        Raises
        ------
        PageNotTrackedError
            If the page is not tracked.
        """
        self._require_tracked(page_id)
        if evictable:
            self._evictable.add(page_id)
        else:
            self._evictable.discard(page_id)

    @abstractmethod
    def evict(self) -> int | None:
        """Choose an evictable page, stop tracking it and return it; ``None`` if none is."""

    @abstractmethod
    def remove(self, page_id: int) -> None:
        """Forget ``page_id`` and its history (a no-op for an unknown page)."""

    def size(self) -> int:
        """Number of evictable pages."""
        return len(self._evictable)

    @abstractmethod
    def __contains__(self, page_id: object) -> bool:
        """Whether ``page_id`` is tracked (resident, as far as the policy knows)."""

    # -- hints; policies that do not use them ignore them ---------------------------------
    def note_request(self, model: Hashable) -> None:
        """A request for ``model`` arrived (the queueing policy estimates rates from these)."""

    def set_sharing(self, sharing: Mapping[int, Iterable[Hashable]]) -> None:
        """Which models need each page: ``{page_id: [model, ...]}``, replacing any earlier map."""

    def set_page_bytes(self, page_id: int, nbytes: int, frame_bytes: int) -> None:
        """``page_id`` holds ``nbytes`` of data in a frame of ``frame_bytes`` (its reload cost).

        A page is taken to fill its frame until this says otherwise; the pool calls it only
        for pages that hold less than a frame (after each load of such a page).
        """

    def _require_tracked(self, page_id: int) -> None:
        if page_id not in self:
            raise PageNotTrackedError(f"page {page_id} is not tracked by the {self.name} replacer")
