"""MRU: evict the most recently used evictable page.

Bad in general, but optimal-like for a loop over more pages than fit: it keeps a stable
subset resident where LRU gets no hits at all. A baseline for the looping case.
"""

from __future__ import annotations

from collections.abc import Iterator

from .lru import LRUReplacer


class MRUReplacer(LRUReplacer):
    """Most recently used first (LRU's order, walked from the other end)."""

    name = "mru"

    def _candidates(self) -> Iterator[int]:
        return reversed(self._order)
