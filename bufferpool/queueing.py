r"""Queueing-model priority: evict the page whose reuse is least likely, per byte and reload cost.

The model (SPEC §6). Each model's requests form a Poisson stream whose rate is estimated
online with exponential decay; a page is needed by every request of every model that uses
it, so its requests are the superposition of those streams — again Poisson, with the sum of
the rates. The clock ticks once per :meth:`QueueingReplacer.note_request`, so rates are in
"requests of that model per request overall". Precisely, at clock time ``T``:

.. code-block:: text

    r_m  = share of requests that are for model m, from exponentially decayed counts
           (half-life h), restarted when a CUSUM test detects a shift (see bufferpool.rates)
    λ_p  = sum of r_m over the models m that need page p           (from set_sharing)
    W    = F / ℓ                                    the horizon, by Little's law: a page stays
                                                    resident ~W requests when F frames turn
                                                    over at ℓ loads per request (ℓ: moving
                                                    average, same half-life as the rates)
    P_p  = 1 - exp(-λ_p * W)                        P(p is requested within the horizon)
    v_p  = P_p * (o + n_p) / B                      expected reload cost saved per frame byte

``n_p`` is the number of bytes the page holds, ``B`` the frame size and
``o`` a fixed per-read cost in byte-equivalents (``read_overhead_bytes``); ``W`` can be
fixed with ``horizon``. The victim is the evictable page with the lowest ``v_p``; ties go to
the lower ``λ_p`` (so that ``P_p`` rounding to 1.0 for busy pages does not hide their
order), then to pages of no known model (``λ_p = 0``, least recently used first, as recency
is then the only hint). Within one sharing class the most recently used page goes first.
That rule is deliberate: every request that reads one page of a class reads all of them, in
order, so the page read last is the one needed last — Belady's choice. When only part of a
model fits, this keeps a stable part resident that every request hits, where LRU would cycle
every page through the cache and hit nothing.

Efficiency. Pages needed by the same set of models have the same ``λ_p`` at all times, so
pages are grouped into *sharing classes* (one per distinct set: the base, each group, each
model's private pages ...). Each class keeps a lazy heap of its evictable pages; a lazy heap
of classes, keyed by the value of each class's best victim, picks the class. An eviction
costs O(log classes + log pages), not O(frames). Class values are recomputed (O(classes +
Σ models per class)) at the first eviction after every ``revalue_every`` requests and at
once after a detected shift; in between, rates move by about 1/(half-life) per request, so
the order of classes barely changes (measured: hit ratios within 0.1 point of recomputing
on every request).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from heapq import heapify, heappop, heappush

from ._checks import positive_float, positive_int, sharing_map
from .errors import InvalidArgumentError, InvalidTypeError
from .rates import RateEstimator, RequestRates
from .replacer import Replacer

_NO_MODELS: frozenset[Hashable] = frozenset()
_MAX_HORIZON = 1e12  # requests; stands in for "no loads seen yet"


class _SharingClass:
    """The tracked pages needed by exactly one set of models (so all have the same λ)."""

    __slots__ = ("models", "rank", "serial", "members", "heap", "version", "rate", "prob")

    def __init__(self, models: frozenset[Hashable], serial: int) -> None:
        self.models = models
        self.rank = 1 if models else 0  # on a tie, pages of no known model go first
        self.serial = serial
        self.members: set[int] = set()
        self.heap: list[tuple[float, int, int]] = []  # (weight, order, page), lazily cleaned
        self.version = 0  # bumped whenever the class's entry in the class heap is replaced
        self.rate = 0.0  # λ of every page in the class
        self.prob = math.nan  # P(requested within the horizon); NaN: to be computed


class QueueingReplacer(Replacer):
    """Evict the lowest ``v_p = (1 - exp(-λ_p W)) (o + n_p) / B`` (see the module docstring).

    Parameters
    ----------
    capacity
        Number of frames ``F``.
    half_life
        Half-life of the rate estimates, in requests. Long is precise under a steady
        popularity; shifts are caught by the restart test, not by a short half-life.
    fast_half_life, change_threshold
        The shift test's fast counts and threshold (``None``: no restarts); see
        :class:`bufferpool.rates.RequestRates`.
    horizon
        Fixed horizon ``W`` in requests; ``None`` (default) estimates it by Little's law.
    read_overhead_bytes
        Fixed cost ``o`` of one page read, in byte-equivalents.
    rates
        Another estimator of ``r_m`` (replacing the three options above), e.g. the true
        rates of a synthetic workload, to measure how much estimation costs.
    revalue_every
        Requests between two recomputations of every class's value.
    """

    name = "queueing"

    def __init__(
        self,
        capacity: int,
        *,
        half_life: float = 400.0,
        fast_half_life: float = 10.0,
        change_threshold: float | None = 5.0,
        horizon: float | None = None,
        read_overhead_bytes: int = 64 * 1024,
        rates: RateEstimator | None = None,
        revalue_every: int = 4,
    ) -> None:
        super().__init__(capacity)
        if rates is None:
            rates = RequestRates(half_life, fast_half_life, change_threshold)
        self._rates = rates
        # Little's law: loads per request, averaged with the rates' half-life.
        self._load_decay = 0.5 ** (1.0 / positive_float(half_life, "half_life"))
        self._loads_per_request = 0.0  # decayed sum of loads per request ...
        self._requests_weight = 0.0  # ... and of requests: their ratio is the average
        self._loads_now = 0  # loads since the last request
        self._fixed_horizon = None if horizon is None else positive_float(horizon, "horizon")
        if isinstance(read_overhead_bytes, bool) or not isinstance(read_overhead_bytes, int):
            raise InvalidTypeError(f"read_overhead_bytes must be an int, got {read_overhead_bytes!r}")
        if read_overhead_bytes < 0:
            raise InvalidArgumentError(f"read_overhead_bytes must be >= 0, got {read_overhead_bytes}")
        self._overhead = read_overhead_bytes
        self._clock = 0  # requests noted so far
        self._seq = 0  # access counter: the LRU order of pages of no known model
        self._serial = 0
        self._horizon = _MAX_HORIZON
        self._sharing: dict[int, frozenset[Hashable]] = {}
        self._classes: dict[frozenset[Hashable], _SharingClass] = {}
        self._occupied: set[_SharingClass] = set()  # classes with tracked pages
        self._class_of: dict[int, _SharingClass] = {}
        self._key: dict[int, tuple[float, int]] = {}  # page -> (weight, order) within its class
        self._live: dict[int, tuple[float, int]] = {}  # page -> key of its entry in its class heap
        self._heap: list[tuple[float, float, int, int, int, _SharingClass]] = []
        self._valued_at = -math.inf  # clock time at which class values were last computed
        self._revalue_every = positive_int(revalue_every, "revalue_every")
        self._restarts = 0
        self._dirty: set[_SharingClass] = set()  # classes whose best victim may have changed

    # -- hints ----------------------------------------------------------------------------
    def note_request(self, model: Hashable) -> None:
        try:
            hash(model)
        except TypeError:
            raise InvalidTypeError(f"model must be hashable, got {type(model).__name__}") from None
        if self._clock:  # close the previous request's count of loads
            self._loads_per_request = self._load_decay * self._loads_per_request + self._loads_now
            self._requests_weight = self._load_decay * self._requests_weight + 1.0
            self._loads_now = 0
        self._clock += 1
        self._rates.observe(model, self._clock)
        restarts = getattr(self._rates, "restarts", 0)
        if restarts != self._restarts:  # popularity shifted: the old values are stale now
            self._restarts = restarts
            self._valued_at = -math.inf

    def set_sharing(self, sharing: Mapping[int, Iterable[Hashable]]) -> None:
        self._sharing = sharing_map(sharing)
        # Re-file every tracked page under its new class; keep weights and pin state.
        old_key, old_class = self._key, self._class_of
        self._classes, self._class_of, self._key, self._live = {}, {}, {}, {}
        self._occupied = set()
        self._heap, self._dirty, self._valued_at = [], set(), -math.inf
        for page_id in old_class:
            cls = self._class_for(page_id)
            cls.members.add(page_id)
            self._occupied.add(cls)
            self._class_of[page_id] = cls
            weight, order = old_key[page_id]
            if bool(cls.rank) != bool(old_class[page_id].rank):  # the order's sense flips
                order = -order
            self._key[page_id] = (weight, order)
            if page_id in self._evictable:
                self._push_page(cls, page_id)

    def set_page_bytes(self, page_id: int, nbytes: int, frame_bytes: int) -> None:
        self._require_tracked(page_id)
        weight = (self._overhead + nbytes) / (self._overhead + frame_bytes)  # 1.0 for a full page
        old_weight, order = self._key[page_id]
        if weight != old_weight:
            self._key[page_id] = (weight, order)
            if page_id in self._evictable:
                self._push_page(self._class_of[page_id], page_id)

    # -- the replacer verbs ---------------------------------------------------------------
    def record_access(self, page_id: int) -> None:
        cls = self._class_of.get(page_id)
        if cls is None:
            cls = self._class_for(page_id)
            cls.members.add(page_id)
            self._occupied.add(cls)
            self._class_of[page_id] = cls
            self._key[page_id] = (1.0, self._order(cls, page_id))
            self._loads_now += 1
        else:
            self._key[page_id] = (self._key[page_id][0], self._order(cls, page_id))
            if page_id in self._evictable:
                self._push_page(cls, page_id)

    def set_evictable(self, page_id: int, evictable: bool) -> None:
        key = self._key.get(page_id)
        if key is None:
            self._require_tracked(page_id)  # raises
        if not evictable:
            self._evictable.discard(page_id)
            return
        self._evictable.add(page_id)
        if self._live.get(page_id) != key:  # its heap entry was dropped while it was pinned
            self._push_page(self._class_of[page_id], page_id)

    def evict(self) -> int | None:
        if not self._evictable:
            return None
        stale = self._clock - self._valued_at >= self._revalue_every
        if stale or len(self._heap) > 4 * len(self._occupied) + 16:  # (or too many dead entries)
            self._revalue()
        else:
            for cls in self._dirty:
                self._push_class(cls)
        self._dirty.clear()
        while self._heap:
            *_, version, cls = heappop(self._heap)
            if version != cls.version:
                continue  # superseded entry
            head = self._head(cls)
            if head is None:
                continue  # every page of the class is pinned; set_evictable re-queues it
            victim = head[2]
            self.remove(victim)
            self._dirty.discard(cls)
            if cls.members:
                self._push_class(cls)
            return victim
        return None

    def remove(self, page_id: int) -> None:
        cls = self._class_of.pop(page_id, None)
        if cls is None:
            return
        cls.members.discard(page_id)
        self._evictable.discard(page_id)
        del self._key[page_id]
        self._live.pop(page_id, None)
        if cls.members:
            self._dirty.add(cls)
        else:  # out of the revaluation loop until a page of it comes back
            self._occupied.discard(cls)
            self._dirty.discard(cls)
            cls.version += 1
            cls.prob = math.nan

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._class_of

    # -- read-outs (for tests, notebooks and the curious) ---------------------------------
    def model_rate(self, model: Hashable) -> float:
        """Estimated requests of ``model`` per request, now."""
        return self._rates.rate(model, self._clock)

    def page_rate(self, page_id: int) -> float:
        """``λ_p`` now: the summed rate of the models that need ``page_id``."""
        return sum(self.model_rate(m) for m in self._sharing.get(page_id, _NO_MODELS))

    @property
    def horizon(self) -> float:
        """The horizon ``W`` (requests) used at the last revaluation."""
        return self._horizon

    # -- internals ------------------------------------------------------------------------
    def _class_for(self, page_id: int) -> _SharingClass:
        models = self._sharing.get(page_id, _NO_MODELS)
        cls = self._classes.get(models)
        if cls is None:
            self._serial += 1
            cls = self._classes[models] = _SharingClass(models, self._serial)
        return cls

    def _order(self, cls: _SharingClass, page_id: int) -> int:
        """Place of a page just accessed within its class (lowest goes first)."""
        self._seq += 1
        # Known class: most recent first (its next use is the farthest, see the docstring).
        # No known model: least recent first, as recency is then the only hint.
        return -self._seq if cls.rank else self._seq

    def _value(self, cls: _SharingClass, rate_of: dict[Hashable, float]) -> None:
        """Set the class's λ and P; ``rate_of`` caches model rates for this clock time."""
        rate = 0.0
        for model in cls.models:
            r = rate_of.get(model)
            if r is None:
                r = rate_of[model] = self._rates.rate(model, self._clock)
            rate += r
        cls.rate = rate
        cls.prob = -math.expm1(-rate * self._horizon) if rate > 0.0 else 0.0

    def _revalue(self) -> None:
        """Recompute W and every class's λ and P, and rebuild the class heap."""
        if self._fixed_horizon is not None:
            self._horizon = self._fixed_horizon
        else:
            # completed requests only (the current one is partial), unless there are none
            loads, requests = self._loads_per_request, self._requests_weight
            if loads == 0.0:
                loads, requests = float(self._loads_now), 1.0
            self._horizon = min(self.capacity * requests / loads, _MAX_HORIZON) if loads > 0 else _MAX_HORIZON
        rate_of: dict[Hashable, float] = {}
        heap = []
        for cls in self._occupied:
            head = self._head(cls)
            cls.version += 1
            if head is None:  # nothing evictable: valued when a page becomes evictable
                cls.prob = math.nan
                continue
            self._value(cls, rate_of)
            heap.append((cls.prob * head[0], cls.rate, cls.rank, cls.serial, cls.version, cls))
        heapify(heap)
        self._heap = heap
        self._valued_at = self._clock

    def _push_class(self, cls: _SharingClass) -> None:
        cls.version += 1
        head = self._head(cls)
        if head is not None:
            if math.isnan(cls.prob):  # skipped by the last revaluation
                self._value(cls, {})
            heappush(self._heap, (cls.prob * head[0], cls.rate, cls.rank, cls.serial, cls.version, cls))

    def _push_page(self, cls: _SharingClass, page_id: int) -> None:
        key = self._key[page_id]
        heappush(cls.heap, (key[0], key[1], page_id))
        self._live[page_id] = key
        self._dirty.add(cls)
        if len(cls.heap) > 2 * len(cls.members) + 16:  # too many stale entries: rebuild
            for weight, order, page in cls.heap:
                if self._live.get(page) == (weight, order):
                    del self._live[page]
            cls.heap = [(*self._key[p], p) for p in cls.members if p in self._evictable]
            heapify(cls.heap)
            for weight, order, page in cls.heap:
                self._live[page] = (weight, order)

    def _head(self, cls: _SharingClass) -> tuple[float, int, int] | None:
        """The class's best victim (lowest weight, then order), dropping stale entries."""
        heap = cls.heap
        while heap:
            weight, order, page_id = entry = heap[0]
            if page_id in self._evictable and self._key.get(page_id) == (weight, order):
                return entry
            heappop(heap)
            if self._live.get(page_id) == (weight, order):
                del self._live[page_id]  # so that set_evictable(page, True) re-queues it
        return None
