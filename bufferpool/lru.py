"""LRU: evict the least recently used evictable page."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .replacer import Replacer


class LRUReplacer(Replacer):
    """Least recently used first.

    One ordered dict holds every tracked page, least recent first. ``evict`` walks it from
    the old end and skips pinned pages, so its cost is O(1 + pages pinned at that end).
    """

    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._order: OrderedDict[int, None] = OrderedDict()

    def record_access(self, page_id: int) -> None:
        if page_id in self._order:
            self._order.move_to_end(page_id)
        else:
            self._order[page_id] = None

    def _candidates(self) -> Iterator[int]:
        """Tracked pages in the order they should be evicted."""
        return iter(self._order)

    def evict(self) -> int | None:
        if not self._evictable:
            return None
        for page_id in self._candidates():
            if page_id in self._evictable:
                self.remove(page_id)  # safe: we stop iterating right after
                return page_id
        return None

    def remove(self, page_id: int) -> None:
        self._order.pop(page_id, None)
        self._evictable.discard(page_id)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._order
