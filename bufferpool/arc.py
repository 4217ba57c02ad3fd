"""ARC: Adaptive Replacement Cache (Megiddo & Modha, FAST 2003).

Two resident lists — T1 (seen once recently) and T2 (seen at least twice) — and two ghost
lists of recently evicted ids — B1 and B2. A hit in B1 means T1 was too small, so the
target size ``p`` of T1 grows; a hit in B2 shrinks it. Eviction takes the LRU page of T1
while T1 is above its target, else the LRU page of T2.

Adaptation to the replacer protocol: the pool calls ``record_access(new)`` *before*
``evict()``, so the ghost-list adaptation happens in ``record_access`` and REPLACE in
``evict``; the just-recorded page is left out of ``|T1|`` when comparing with ``p``, as in
the paper, where REPLACE runs before the page is inserted. Pinned pages are skipped.
"""

from __future__ import annotations

from collections import OrderedDict

from .replacer import Replacer


class ARCReplacer(Replacer):
    """Adaptive Replacement Cache over page ids (each list is least recent first)."""

    name = "arc"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._t1: OrderedDict[int, None] = OrderedDict()
        self._t2: OrderedDict[int, None] = OrderedDict()
        self._b1: OrderedDict[int, None] = OrderedDict()
        self._b2: OrderedDict[int, None] = OrderedDict()
        self._p = 0.0  # target size of T1
        self._new_in_t1: int | None = None  # page just inserted into T1 by a miss
        self._came_from_b2 = False  # the last miss was a hit in B2 (REPLACE's tie rule)

    def record_access(self, page_id: int) -> None:
        c = self.capacity
        self._new_in_t1 = None
        self._came_from_b2 = False
        if page_id in self._t1:
            del self._t1[page_id]
            self._t2[page_id] = None
        elif page_id in self._t2:
            self._t2.move_to_end(page_id)
        elif page_id in self._b1:
            self._p = min(float(c), self._p + max(len(self._b2) / len(self._b1), 1.0))
            del self._b1[page_id]
            self._t2[page_id] = None
        elif page_id in self._b2:
            self._p = max(0.0, self._p - max(len(self._b1) / len(self._b2), 1.0))
            del self._b2[page_id]
            self._t2[page_id] = None
            self._came_from_b2 = True
        else:
            # Keep |T1|+|B1| <= c and the directory <= 2c (the paper's case IV).
            if len(self._t1) + len(self._b1) >= c:
                if self._b1:
                    self._b1.popitem(last=False)
            elif len(self._t1) + len(self._t2) + len(self._b1) + len(self._b2) >= 2 * c and self._b2:
                self._b2.popitem(last=False)
            self._t1[page_id] = None
            self._new_in_t1 = page_id

    def evict(self) -> int | None:
        if not self._evictable:
            return None
        t1_size = len(self._t1) - (self._new_in_t1 in self._t1)
        prefer_t1 = t1_size > 0 and (t1_size > self._p or (self._came_from_b2 and t1_size == self._p))
        lists = ((self._t1, self._b1), (self._t2, self._b2))
        for resident, ghost in lists if prefer_t1 else lists[::-1]:
            victim = self._lru_evictable(resident)
            if victim is not None:
                del resident[victim]
                self._evictable.discard(victim)
                ghost[victim] = None
                self._trim_ghosts()
                return victim
        return None

    def _lru_evictable(self, pages: OrderedDict[int, None]) -> int | None:
        for page_id in pages:
            if page_id in self._evictable:
                return page_id
        return None

    def _trim_ghosts(self) -> None:
        # A ghost entry is dropped rather than letting a list outgrow the paper's bounds.
        c = self.capacity
        while self._b1 and len(self._t1) + len(self._b1) > c:
            self._b1.popitem(last=False)
        while self._b2 and len(self._t1) + len(self._t2) + len(self._b1) + len(self._b2) > 2 * c:
            self._b2.popitem(last=False)

    def remove(self, page_id: int) -> None:
        for pages in (self._t1, self._t2, self._b1, self._b2):
            pages.pop(page_id, None)
        self._evictable.discard(page_id)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._t1 or page_id in self._t2
