"""Trace simulation: run any policy, or Belady's offline optimum, over a request trace.

A trace is a sequence of model names; each request expands to the model's pages, accessed in
order. The simulator drives a replacer exactly as :class:`bufferpool.BufferPool` does
(``note_request`` per request, ``set_sharing`` once, ``record_access`` then ``evict`` on a
miss), without copying any bytes, so its counts equal the pool's for the same accesses.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from heapq import heappop, heappush
from typing import Any

from ._checks import as_int, positive_int
from .errors import InvalidArgumentError
from .policies import make_replacer
from .replacer import Replacer


@dataclass(frozen=True, slots=True)
class SimResult:
    """Counts of one simulation run (accesses in the warm-up are not counted)."""

    policy: str
    capacity_pages: int
    requests: int
    accesses: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_ratio(self) -> float:
        """Hits per counted access (0.0 when nothing was counted)."""
        return self.hits / self.accesses if self.accesses else 0.0

    @property
    def miss_ratio(self) -> float:
        """Misses per counted access (0.0 when nothing was counted)."""
        return self.misses / self.accesses if self.accesses else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields plus ``hit_ratio`` and ``miss_ratio``."""
        return {**asdict(self), "hit_ratio": self.hit_ratio, "miss_ratio": self.miss_ratio}


def capacity_in_pages(
    capacity_pages: int | None, capacity_bytes: int | None, page_bytes: int | None
) -> int:
    """Frames available, given either a page count or a byte budget and a page size."""
    if (capacity_pages is None) == (capacity_bytes is None):
        raise InvalidArgumentError("give exactly one of capacity_pages and capacity_bytes")
    if capacity_pages is not None:
        return positive_int(capacity_pages, "capacity_pages")
    if page_bytes is None:
        raise InvalidArgumentError("capacity_bytes needs page_bytes")
    frames = positive_int(capacity_bytes, "capacity_bytes") // positive_int(page_bytes, "page_bytes")
    if frames < 1:
        raise InvalidArgumentError(f"capacity_bytes={capacity_bytes} holds no page of {page_bytes} bytes")
    return frames


def sharing_of(model_pages: Mapping[Hashable, Sequence[int]]) -> dict[int, list[Hashable]]:
    """Invert ``{model: pages}`` into ``{page: [models that need it]}``."""
    sharing: dict[int, list[Hashable]] = {}
    for model, pages in model_pages.items():
        for page in dict.fromkeys(pages):  # a page listed twice is still needed once
            sharing.setdefault(page, []).append(model)
    return sharing


def expand_trace(trace: Sequence[Hashable], model_pages: Mapping[Hashable, Sequence[int]]) -> list[int]:
    """The page-access trace: every request replaced by its model's pages, in order."""
    _check_models(trace, model_pages)
    return [page for model in trace for page in model_pages[model]]


def _check_models(trace: Sequence[Hashable], model_pages: Mapping[Hashable, Sequence[int]]) -> None:
    missing = set(trace) - set(model_pages)
    if missing:
        raise InvalidArgumentError(f"trace names model(s) with no pages: {sorted(map(str, missing))[:5]}")
    for model, pages in model_pages.items():
        for page in pages:
            as_int(page, f"a page id of model {model!r}")


def simulate(
    trace: Sequence[Hashable],
    model_pages: Mapping[Hashable, Sequence[int]],
    capacity_pages: int | None = None,
    policy: str | Replacer = "queueing",
    *,
    capacity_bytes: int | None = None,
    page_bytes: int | None = None,
    sharing: Mapping[int, Sequence[Hashable]] | None = None,
    warmup: int = 0,
    **policy_options: Any,
) -> SimResult:
    """Run ``policy`` over ``trace`` and count hits and misses.

    Parameters
    ----------
    trace
        Model names, one per request.
    model_pages
        ``{model: [page_id, ...]}``: the pages each request reads, in order.
    capacity_pages, capacity_bytes, page_bytes
        Cache size: a page count, or a byte budget with the page size.
    policy
        A name from :data:`bufferpool.POLICIES` or a fresh :class:`Replacer`.
    sharing
        ``{page_id: [model, ...]}`` given to the policy; by default derived from ``model_pages``.
    warmup
        Number of leading requests whose accesses are simulated but not counted.
    **policy_options
        Passed to the policy's constructor.
    """
    capacity = capacity_in_pages(capacity_pages, capacity_bytes, page_bytes)
    _check_models(trace, model_pages)
    replacer = make_replacer(policy, capacity, **policy_options) if isinstance(policy, str) else policy
    replacer.set_sharing(sharing_of(model_pages) if sharing is None else sharing)
    resident: set[int] = set()
    hits = misses = evictions = counted = 0
    for index, model in enumerate(trace):
        replacer.note_request(model)
        count = index >= warmup
        for page in model_pages[model]:
            if page in resident:
                hits += count
                replacer.record_access(page)
                continue
            misses += count
            replacer.record_access(page)
            if len(resident) >= capacity:
                victim = replacer.evict()
                if victim is None:  # cannot happen: nothing is pinned in a simulation
                    raise RuntimeError(f"{replacer.name} found nothing to evict")
                resident.remove(victim)
                evictions += count
            resident.add(page)
            replacer.set_evictable(page, True)
        counted += count
    return SimResult(replacer.name, capacity, counted, hits + misses, hits, misses, evictions)


def belady(
    trace: Sequence[Hashable],
    model_pages: Mapping[Hashable, Sequence[int]],
    capacity_pages: int | None = None,
    *,
    capacity_bytes: int | None = None,
    page_bytes: int | None = None,
    warmup: int = 0,
) -> SimResult:
    """Belady's MIN: on a miss, evict the resident page whose next use is farthest away.

    The optimum for demand paging (every missed page is loaded), so no online policy run
    through :func:`simulate` on the same arguments has more hits. O(accesses · log frames):
    next-use positions are precomputed in one backward pass, and a lazy max-heap holds the
    resident pages by next use.
    """
    capacity = capacity_in_pages(capacity_pages, capacity_bytes, page_bytes)
    pages = expand_trace(trace, model_pages)
    first_counted = sum(len(model_pages[model]) for model in trace[:warmup])
    never = len(pages)
    next_use = [never] * len(pages)
    seen: dict[int, int] = {}
    for position in range(len(pages) - 1, -1, -1):
        next_use[position] = seen.get(pages[position], never)
        seen[pages[position]] = position

    resident: dict[int, int] = {}  # page -> position of its next use
    heap: list[tuple[int, int]] = []  # (-next use, page); stale entries skipped
    hits = misses = evictions = 0
    for position, page in enumerate(pages):
        count = position >= first_counted
        if page in resident:
            hits += count
        else:
            misses += count
            if len(resident) >= capacity:
                while True:
                    neg_next, victim = heappop(heap)
                    if resident.get(victim) == -neg_next:
                        del resident[victim]
                        break
                evictions += count
        resident[page] = next_use[position]
        heappush(heap, (-next_use[position], page))
    requests = max(len(trace) - warmup, 0)
    return SimResult("belady", capacity, requests, hits + misses, hits, misses, evictions)
