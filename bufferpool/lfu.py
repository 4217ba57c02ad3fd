"""LFU: evict the least frequently used evictable page (ties: least recently used).

Counts are kept while a page is resident and forgotten when it is evicted ("in-cache" LFU),
the usual buffer-pool variant; there is no ageing, which is what hurts it when popularity
shifts.
"""

from __future__ import annotations

from collections import OrderedDict

from .replacer import Replacer


class LFUReplacer(Replacer):
    """Least frequently used first, in O(1) per operation (Shah, Mitra & Matani's buckets).

    ``_buckets[f]`` holds the pages accessed ``f`` times, least recent first; ``_min_freq``
    is the lowest non-empty count (it may go stale after a removal; ``evict`` repairs it).
    """

    name = "lfu"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._freq: dict[int, int] = {}
        self._buckets: dict[int, OrderedDict[int, None]] = {}
        self._min_freq = 1

    def record_access(self, page_id: int) -> None:
        freq = self._freq.get(page_id, 0)
        if freq:
            bucket = self._buckets[freq]
            del bucket[page_id]
            if not bucket:
                del self._buckets[freq]
                if self._min_freq == freq:
                    self._min_freq = freq + 1
        else:
            self._min_freq = 1
        self._freq[page_id] = freq + 1
        self._buckets.setdefault(freq + 1, OrderedDict())[page_id] = None

    def evict(self) -> int | None:
        if not self._evictable:
            return None
        if self._min_freq not in self._buckets:
            self._min_freq = min(self._buckets)
        # Usually the first page of the lowest bucket; pinned pages make us look further.
        victim = self._first_evictable(self._buckets[self._min_freq])
        if victim is None:
            for freq in sorted(self._buckets):
                victim = self._first_evictable(self._buckets[freq])
                if victim is not None:
                    break
        if victim is not None:
            self.remove(victim)
        return victim

    def _first_evictable(self, bucket: OrderedDict[int, None]) -> int | None:
        for page_id in bucket:
            if page_id in self._evictable:
                return page_id
        return None

    def remove(self, page_id: int) -> None:
        freq = self._freq.pop(page_id, 0)
        if not freq:
            return
        bucket = self._buckets[freq]
        del bucket[page_id]
        if not bucket:
            del self._buckets[freq]
        self._evictable.discard(page_id)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._freq
