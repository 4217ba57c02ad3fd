"""S3-FIFO (Yang et al., SOSP 2023): three FIFO queues.

New pages enter a small queue S (10% of the frames) unless their id is in the ghost queue G,
in which case they go straight to the main queue M. Each page has a 2-bit access counter
(0..3) bumped on hits. Evicting from S: a page accessed while in S moves to M (counter
cleared), otherwise it is evicted and its id goes to G. Evicting from M: a page with a
non-zero counter is reinserted with the counter decremented, otherwise it is evicted.
S is evicted from while it holds at least its 10% share, else M. Pinned pages are passed
over (moved to the back of their queue).
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import InvalidArgumentError
from .replacer import Replacer

_MAX_FREQ = 3


class S3FIFOReplacer(Replacer):
    """S3-FIFO over page ids (each queue is oldest first)."""

    name = "s3fifo"

    def __init__(self, capacity: int, *, small_fraction: float = 0.1) -> None:
        super().__init__(capacity)
        if not 0.0 < small_fraction < 1.0:
            raise InvalidArgumentError(f"small_fraction must be in (0, 1), got {small_fraction!r}")
        self._small_target = max(1, round(small_fraction * self.capacity))
        self._main_target = max(1, self.capacity - self._small_target)
        self._small: OrderedDict[int, None] = OrderedDict()
        self._main: OrderedDict[int, None] = OrderedDict()
        self._ghost: OrderedDict[int, None] = OrderedDict()
        self._freq: dict[int, int] = {}

    def record_access(self, page_id: int) -> None:
        freq = self._freq.get(page_id)
        if freq is not None:
            self._freq[page_id] = min(freq + 1, _MAX_FREQ)
            return
        self._freq[page_id] = 0
        if page_id in self._ghost:
            del self._ghost[page_id]
            self._main[page_id] = None
        else:
            self._small[page_id] = None

    def evict(self) -> int | None:
        if not self._evictable:
            return None
        victim = None
        if len(self._small) >= self._small_target:
            victim = self._evict_small()
        if victim is None:
            victim = self._evict_main()
        if victim is None:  # everything evictable sits in S (M is empty or pinned)
            victim = self._evict_small()
        return victim

    def _evict_small(self) -> int | None:
        for _ in range(len(self._small)):
            page_id = next(iter(self._small))
            if page_id not in self._evictable:
                self._small.move_to_end(page_id)
                continue
            del self._small[page_id]
            if self._freq[page_id] > 0:  # re-accessed while in S: promote
                self._freq[page_id] = 0
                self._main[page_id] = None
                if len(self._main) > self._main_target:
                    victim = self._evict_main()
                    if victim is not None:
                        return victim
            else:
                self._forget(page_id)
                self._ghost[page_id] = None
                if len(self._ghost) > self._main_target:
                    self._ghost.popitem(last=False)
                return page_id
        return None

    def _evict_main(self) -> int | None:
        # Every full pass lowers each evictable counter by one, so 4 passes always suffice.
        for _ in range((_MAX_FREQ + 1) * len(self._main)):
            page_id = next(iter(self._main))
            if page_id in self._evictable:
                if self._freq[page_id] == 0:
                    self._forget(page_id)
                    return page_id
                self._freq[page_id] -= 1
            self._main.move_to_end(page_id)
        return None

    def _forget(self, page_id: int) -> None:
        self._small.pop(page_id, None)
        self._main.pop(page_id, None)
        self._freq.pop(page_id, None)
        self._evictable.discard(page_id)

    def remove(self, page_id: int) -> None:
        self._forget(page_id)
        self._ghost.pop(page_id, None)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._freq
