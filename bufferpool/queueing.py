r"""Queueing-model priority: evict the page whose reuse is least likely, per byte and reload cost.

The model (SPEC §6). Each model's requests form a Poisson stream whose rate is estimated
online; a page is needed by every request of every model that uses it, so its requests are
the superposition of those streams — again Poisson, with the sum of the rates. The clock
ticks once per :meth:`QueueingReplacer.note_request`, so rates are in "requests of that
model per request overall". Precisely, at clock time ``T``:

.. code-block:: text

    r_m  = probability that the next request is for model m: by default the posterior
           predictive of a Bayesian online changepoint detector (bufferpool.rates)
    λ_p  = sum of r_m over the models m that need page p           (from set_sharing)
    W    = F / ℓ                                    the horizon, by Little's law: a page stays
                                                    resident ~W requests when F frames turn
                                                    over at ℓ loads per request (ℓ: moving
                                                    average, half-life 400 requests)
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

One exception (``protect_request``): while a request for model ``m`` is being served, a page
of ``m`` that this request has not read yet will be read within the request — its next use
is the nearest of all — so a class holding such pages is passed over (when ``m`` fits in the
cache; if every candidate is such a page, the best one goes anyway).

Efficiency. Pages needed by the same set of models have the same ``λ_p`` at all times, so
pages are grouped into *sharing classes* (one per distinct set: the base, each group, each
model's private pages ...). Each class keeps its pages in access order (a dict; pages
lighter than a full frame apart), and a lazy heap of classes is keyed by the value of
each class's best victim. Keys change only when rates are recomputed or when a lighter
page arrives, so an access or an unpin pushes nothing; a key that grew (its lightest page
left) is corrected when it reaches the top. An eviction costs O(log classes) amortised, an
access O(1); the usual eviction (the top class's most recent page) is a short path of its
own, as it runs right after a page read has pushed everything out of the CPU caches. Rates, ``W`` and every class's value are recomputed in :meth:`note_request` —
per request, not per miss — every ``revalue_every`` requests, at once after a detected
shift, and at every request while the estimator is unsure whether popularity has just
changed; in between, rates move by about 1/(requests seen) per request.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from heapq import heapify, heappop, heappush
from types import MappingProxyType
from typing import Any

from ._checks import positive_float, positive_int, probability, sharing_map
from .errors import InvalidArgumentError, InvalidTypeError
from .rates import ChangepointRates, RateEstimator, RequestRates
from .replacer import Replacer

_NO_MODELS: frozenset[Hashable] = frozenset()
_MAX_HORIZON = 1e12  # requests; stands in for "no loads seen yet"
_LOAD_HALF_LIFE = 400.0  # requests; the moving average of loads per request (Little's law)
_UNSET: Any = object()  # "not given" for options whose None means something
_NO_LIGHT: Mapping[int, tuple[float, int]] = MappingProxyType({})  # read-only: never filled


class _SharingClass:
    """The tracked pages needed by exactly one set of models (so all have the same λ)."""

    __slots__ = (
        "models", "rank", "serial", "pages", "light", "entry", "entry_weight", "rate", "prob", "epoch",
        "guarded_at",
    )

    def __init__(self, models: frozenset[Hashable], serial: int) -> None:
        self.models = models
        self.rank = 1 if models else 0  # on a tie, pages of no known model go first
        self.serial = serial
        # Full pages -> sequence number of their last access, least recent first.
        # (a plain dict keeps insertion order and runs less code than an OrderedDict: an
        # access moves a page to the end by deleting and re-inserting it)
        self.pages: dict[int, int] = {}
        # Pages lighter than a full frame (cheaper to reload) -> (weight, sequence number).
        # (the shared, read-only _NO_LIGHT until the first one: evict's short path tells a
        # class of full pages only, whose key has weight 1.0, by identity)
        self.light: Mapping[int, tuple[float, int]] = _NO_LIGHT
        self.entry: tuple | None = None  # this class's live entry in the class heap
        self.entry_weight = 1.0  # the weight that entry was computed with
        self.rate = 0.0  # λ of every page in the class
        self.prob = 0.0  # P(requested within the horizon)
        self.epoch = -1  # revaluation at which rate and prob were computed
        # The clock of the request being served if its model is guarded and is one of ours
        # (see protect_request): one integer comparison on the miss path, not a set look-up.
        self.guarded_at = -1


class QueueingReplacer(Replacer):
    """Evict the lowest ``v_p = (1 - exp(-λ_p W)) (o + n_p) / B`` (see the module docstring).

    Parameters
    ----------
    capacity
        Number of frames ``F``.
    hazard, prior, hypotheses
        The default rate estimator's prior probability of a popularity change per request,
        Dirichlet pseudo-count and number of run hypotheses; see
        :class:`bufferpool.rates.ChangepointRates`.
    half_life, fast_half_life, change_threshold
        Giving any of these selects the older estimator, exponentially decayed counts
        restarted by a CUSUM test (:class:`bufferpool.rates.RequestRates`, defaults 400,
        10 and 5.0; ``change_threshold=None``: no restarts); ``half_life`` then also sets
        the averaging of loads per request for ``W``.
    horizon
        Fixed horizon ``W`` in requests; ``None`` (default) estimates it by Little's law.
    read_overhead_bytes
        Fixed cost ``o`` of one page read, in byte-equivalents.
    rates
        Another estimator of ``r_m`` (replacing the options above), e.g. the true
        rates of a synthetic workload, to measure how much estimation costs.
    revalue_every
        Requests between two recomputations of every class's value, while the rate
        estimator is sure of the current popularity.
    unsure_below
        While the estimator's ``confidence`` (the probability of its most probable change
        point, see :class:`~bufferpool.rates.ChangepointRates`) is below this, every class is
        revalued at every request: the rates are then moving fast. 0 turns this off.
    protect_request
        Pass over pages that the request being served has still to read (see above).
    """

    name = "queueing"

    def __init__(
        self,
        capacity: int,
        *,
        hazard: float = 1e-3,
        prior: float = 0.5,
        hypotheses: int = 8,
        half_life: float | None = _UNSET,
        fast_half_life: float | None = _UNSET,
        change_threshold: float | None = _UNSET,
        horizon: float | None = None,
        read_overhead_bytes: int = 64 * 1024,
        rates: RateEstimator | None = None,
        revalue_every: int = 4,
        unsure_below: float = 0.99,
        protect_request: bool = True,
    ) -> None:
        super().__init__(capacity)
        legacy = {k: v for k, v in (("half_life", half_life), ("fast_half_life", fast_half_life),
                                    ("change_threshold", change_threshold)) if v is not _UNSET}
        if rates is None:
            if legacy:
                rates = RequestRates(**{"half_life": 400.0, "fast_half_life": 10.0,
                                        "change_threshold": 5.0, **legacy})
            else:
                rates = ChangepointRates(hazard, prior, hypotheses)
        self._rates = rates
        load_half_life = legacy.get("half_life", _LOAD_HALF_LIFE)
        # Little's law: loads per request, averaged with a half-life of some hundred requests.
        self._load_decay = 0.5 ** (1.0 / positive_float(load_half_life, "half_life"))
        self._loads_per_request = 0.0  # decayed sum of loads per request ...
        self._requests_weight = 0.0  # ... and of requests: their ratio is the average
        self._loads_now = 0  # loads since the last request
        self._fixed_horizon = None if horizon is None else positive_float(horizon, "horizon")
        if isinstance(read_overhead_bytes, bool) or not isinstance(read_overhead_bytes, int):
            raise InvalidTypeError(f"read_overhead_bytes must be an int, got {read_overhead_bytes!r}")
        if read_overhead_bytes < 0:
            raise InvalidArgumentError(f"read_overhead_bytes must be >= 0, got {read_overhead_bytes}")
        self._overhead = read_overhead_bytes
        self._revalue_every = positive_int(revalue_every, "revalue_every")
        self._unsure_below = probability(unsure_below, "unsure_below")
        self._protect = bool(protect_request)
        self._clock = 0  # requests noted so far
        self._seq = 0  # access counter: the order of pages within a class
        self._serial = 0
        self._horizon = _MAX_HORIZON
        self._horizon_known = horizon is not None
        self._sharing: dict[int, frozenset[Hashable]] = {}
        self._model_size: dict[Hashable, int] = {}  # pages each model needs
        self._classes: dict[frozenset[Hashable], _SharingClass] = {}
        self._classes_of_model: dict[Hashable, list[_SharingClass]] = {}  # classes seen so far
        self._class_cache: dict[int, _SharingClass] = {}  # page -> its class, tracked or not
        self._class_of: dict[int, _SharingClass] = {}  # tracked page -> its class
        self._occupied: set[_SharingClass] = set()  # classes with tracked pages
        self._heap: list[tuple] = []  # (value, λ, rank, serial, class); lazily cleaned
        self._epoch = 0
        self._rate_of: dict[Hashable, float] = {}  # model rates at the last revaluation
        self._valued_at = -math.inf  # clock time of the last revaluation
        self._restarts = 0
        self._current: Hashable | None = None  # the model of the request being served
        self._request_start = 0  # self._seq when that request was noted
        self._guarded: Hashable | None = None  # that model, if it fits (see protect_request)

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
        self._current = model
        self._request_start = self._seq
        self._guarded = (
            model if self._protect and 0 < self._model_size.get(model, 0) <= self.capacity else None
        )
        self._rates.observe(model, self._clock)
        restarts = getattr(self._rates, "restarts", 0)
        if (
            restarts != self._restarts  # a detected shift makes the old values stale at once
            or self._clock - self._valued_at >= self._revalue_every
            or getattr(self._rates, "confidence", 1.0) < self._unsure_below
            or (not self._horizon_known and self._loads_per_request > 0.0)  # W can be estimated now
        ):
            self._restarts = restarts
            self._revalue()
        else:  # the requested model's rate moved most: its classes valued from now on (pages
            # coming back) use the new one; the others wait for the next revaluation
            self._rate_of[model] = self._rates.rate(model, self._clock)
        # Value now the classes of this model that hold no page: this request is about to
        # load pages into them, and a miss should not pay for it.
        for cls in self._classes_of_model.get(model, ()):
            if self._guarded is not None:
                cls.guarded_at = self._clock
            if cls.entry is None and not cls.pages and not cls.light:
                self._value(cls)

    def set_sharing(self, sharing: Mapping[int, Iterable[Hashable]]) -> None:
        self._sharing = sharing_map(sharing)
        sizes: dict[Hashable, int] = {}
        for models in self._sharing.values():
            for model in models:
                sizes[model] = sizes.get(model, 0) + 1
        self._model_size = sizes
        current = self._current
        self._guarded = current if self._protect and 0 < sizes.get(current, 0) <= self.capacity else None
        # Re-file every tracked page under its new class, in access order; keep weights.
        old = [(seq, page, 1.0) for cls in self._occupied for page, seq in cls.pages.items()]
        old += [(seq, page, weight) for cls in self._occupied for page, (weight, seq) in cls.light.items()]
        old.sort()
        for cls in self._occupied:
            cls.entry = None
        self._classes, self._class_cache, self._class_of = {}, {}, {}
        self._classes_of_model = {}
        self._occupied, self._heap = set(), []
        for seq, page, weight in old:
            cls = self._class_for(page)
            self._occupied.add(cls)
            self._class_of[page] = cls
            if weight < 1.0:
                if cls.light is _NO_LIGHT:
                    cls.light = {}
                cls.light[page] = (weight, seq)
            else:
                cls.pages[page] = seq
        self._revalue()

    def set_page_bytes(self, page_id: int, nbytes: int, frame_bytes: int) -> None:
        cls = self._class_of.get(page_id)
        if cls is None:
            self._require_tracked(page_id)  # raises
        if nbytes >= frame_bytes:  # a full page (the common case): weight 1.0
            if cls.light and page_id in cls.light:  # heavier than before: its key may rise,
                cls.pages[page_id] = cls.light.pop(page_id)[1]  # which is fixed lazily
            return
        weight = (self._overhead + nbytes) / (self._overhead + frame_bytes)
        seq = cls.pages.pop(page_id) if page_id in cls.pages else cls.light[page_id][1]
        if cls.light is _NO_LIGHT:
            cls.light = {}
        cls.light[page_id] = (weight, seq)
        if page_id in self._evictable and (cls.entry is None or weight < cls.entry_weight):
            self._push_class(cls)

    # -- the replacer verbs ---------------------------------------------------------------
    def record_access(self, page_id: int) -> None:
        self._seq = seq = self._seq + 1
        cls = self._class_of.get(page_id)
        if cls is None:  # a new page: tracked, not evictable (it is being loaded)
            cls = self._class_cache.get(page_id) or self._class_for(page_id)
            if not cls.pages and not cls.light:
                self._occupied.add(cls)
            self._class_of[page_id] = cls
            cls.pages[page_id] = seq
            self._loads_now += 1
            return
        pages = cls.pages
        if page_id in pages:
            del pages[page_id]
            pages[page_id] = seq
        else:
            cls.light[page_id] = (cls.light[page_id][0], seq)

    def set_evictable(self, page_id: int, evictable: bool) -> None:
        cls = self._class_of.get(page_id)
        if cls is None:
            self._require_tracked(page_id)  # raises
        if not evictable:
            self._evictable.discard(page_id)
            return
        self._evictable.add(page_id)
        if cls.entry is None:
            self._push_class(cls)
        elif cls.light and page_id in cls.light and cls.light[page_id][0] < cls.entry_weight:
            self._push_class(cls)

    def evict(self) -> int | None:
        # The common case first, in as little code as possible (a miss runs it right after a
        # page read has flushed the CPU caches, code included): the top class is live, has
        # never held a light page, knows its models, and its most recent evictable page is
        # not still to be read by the current request. Anything else: _search_victim.
        heap, evictable = self._heap, self._evictable
        if heap:
            entry = heap[0]
            cls = entry[4]
            if entry is cls.entry and cls.light is _NO_LIGHT and cls.rank:
                pages = cls.pages
                for victim in reversed(pages):
                    if victim in evictable:
                        if pages[victim] > self._request_start or cls.guarded_at != self._clock:
                            del pages[victim]
                            del self._class_of[victim]
                            evictable.remove(victim)
                            if not pages:
                                self._occupied.discard(cls)
                                heappop(heap)  # its entry, on top
                                cls.entry = None
                            return victim
                        break
        return self._search_victim()

    def _search_victim(self) -> int | None:
        """:meth:`evict` in general: stale entries, pinned pages, light pages, the guard."""
        evictable = self._evictable
        if not evictable:
            return None
        heap, aside, victim = self._heap, None, None
        clock = self._clock  # a class of the current request's model has guarded_at == clock
        while heap:
            entry = heap[0]
            cls = entry[4]
            if entry is not cls.entry:
                heappop(heap)  # superseded
                continue
            if cls.light:
                victim, weight, seq = self._victim(cls)
            else:  # the common case, inlined: the most (or least) recent evictable full page
                weight = 1.0
                pages = cls.pages
                for victim in reversed(pages) if cls.rank else pages:
                    if victim in evictable:
                        seq = pages[victim]
                        break
                else:
                    victim = None
            if victim is None:  # every page of the class is pinned: set_evictable re-queues it
                heappop(heap)
                cls.entry = None
                continue
            if weight != cls.entry_weight:  # its lightest page left: the key rose
                heappop(heap)
                self._push_class(cls)
                victim = None
                continue
            if seq <= self._request_start and cls.guarded_at == clock:
                if aside is None:
                    aside = []
                aside.append(heappop(heap))  # still to be read by the current request
                victim = None
                continue
            break
        if aside is not None:
            if victim is None:  # nothing else is evictable: the best of those goes after all
                cls = aside[0][4]
                victim = self._victim(cls)[0]
            for entry in aside:
                heappush(heap, entry)
        if victim is not None:  # (a class left with pages keeps its heap entry)
            del self._class_of[victim]
            evictable.discard(victim)
            if cls.pages.pop(victim, None) is None:
                del cls.light[victim]
            if not cls.pages and not cls.light:
                self._occupied.discard(cls)
                if heap and heap[0] is cls.entry:  # (usually: its entry, now stale, goes at once)
                    heappop(heap)
                cls.entry = None
        return victim

    def remove(self, page_id: int) -> None:
        cls = self._class_of.pop(page_id, None)
        if cls is None:
            return
        self._evictable.discard(page_id)
        if cls.pages.pop(page_id, None) is None:
            del cls.light[page_id]
        if not cls.pages and not cls.light:
            self._occupied.discard(cls)
            cls.entry = None

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._class_of

    # -- read-outs (for tests, notebooks and the curious) ---------------------------------
    def model_rate(self, model: Hashable) -> float:
        """Estimated requests of ``model`` per request, now."""
        return self._rates.rate(model, self._clock)

    def page_rate(self, page_id: int) -> float:
        """``λ_p`` now: the summed rate of the models that need ``page_id``."""
        return math.fsum(self.model_rate(m) for m in self._sharing.get(page_id, _NO_MODELS))

    @property
    def horizon(self) -> float:
        """The horizon ``W`` (requests) used at the last revaluation."""
        return self._horizon

    @property
    def rates(self) -> RateEstimator:
        """The rate estimator."""
        return self._rates

    # -- internals ------------------------------------------------------------------------
    def _class_for(self, page_id: int) -> _SharingClass:
        models = self._sharing.get(page_id)
        cls = self._classes.get(models if models is not None else _NO_MODELS)
        if cls is None:
            self._serial += 1
            cls = self._classes[models or _NO_MODELS] = _SharingClass(models or _NO_MODELS, self._serial)
            for model in cls.models:
                self._classes_of_model.setdefault(model, []).append(cls)
            if self._guarded is not None and self._guarded in cls.models:
                cls.guarded_at = self._clock
        if models is not None:  # (pages of the sharing map only: the cache stays bounded)
            self._class_cache[page_id] = cls
        return cls

    def _victim(self, cls: _SharingClass) -> tuple[Any, float, int]:
        """The class's best evictable page, its weight and its access number (or Nones)."""
        evictable = self._evictable
        if cls.light:
            best = None
            for page, (weight, seq) in cls.light.items():
                if page in evictable:
                    key = (weight, -seq if cls.rank else seq)
                    if best is None or key < best[0]:
                        best = (key, page, seq)
            if best is not None:
                return best[1], best[0][0], best[2]
        pages = cls.pages
        # Known models: most recent first (its next use is the farthest, see the docstring).
        # No known model: least recent first, as recency is then the only hint.
        for page in reversed(pages) if cls.rank else pages:
            if page in evictable:
                return page, 1.0, pages[page]
        return None, 1.0, 0

    def _value(self, cls: _SharingClass) -> None:
        """Set the class's λ and P from the rates of the last revaluation."""
        rate_of = self._rate_of
        rates = []
        for model in cls.models:
            r = rate_of.get(model)
            if r is None:
                r = rate_of[model] = self._rates.rate(model, self._clock)
            rates.append(r)
        # fsum: exact, so the result does not depend on the set's (hash-seeded) order,
        # and neither do ties between classes.
        cls.rate = rate = math.fsum(rates)
        cls.prob = -math.expm1(-rate * self._horizon) if rate > 0.0 else 0.0
        cls.epoch = self._epoch

    def _push_class(self, cls: _SharingClass) -> None:
        """(Re)queue the class with the key of its lightest evictable page."""
        if cls.epoch != self._epoch:
            self._value(cls)
        weight = self._lightest(cls) if cls.light else 1.0
        cls.entry = entry = (cls.prob * weight, cls.rate, cls.rank, cls.serial, cls)
        cls.entry_weight = weight
        heappush(self._heap, entry)

    def _lightest(self, cls: _SharingClass) -> float:
        """The lowest weight among the class's evictable pages (1.0 if all are full)."""
        weight, evictable = 1.0, self._evictable
        for page, (w, _) in cls.light.items():
            if w < weight and page in evictable:
                weight = w
        return weight

    def _revalue(self) -> None:
        """Recompute W and every class's λ and P, and rebuild the class heap."""
        if self._fixed_horizon is not None:
            self._horizon = self._fixed_horizon
        else:
            # completed requests only (the current one has just begun), unless there are none
            loads, requests = self._loads_per_request, self._requests_weight
            if loads == 0.0:
                loads, requests = float(self._loads_now), 1.0
            self._horizon = min(self.capacity * requests / loads, _MAX_HORIZON) if loads > 0 else _MAX_HORIZON
            self._horizon_known = loads > 0
        self._epoch += 1
        # Every model's rate once, so that classes valued before the next revaluation (new
        # ones, or ones whose pages come back) cost a few look-ups, not an estimator call.
        snapshot = getattr(self._rates, "snapshot", None)
        if snapshot is not None:  # all rates at once (cheaper than one by one)
            rates, unseen = snapshot()
            self._rate_of = {model: rates.get(model, unseen) for model in self._model_size}
        else:
            rate, clock = self._rates.rate, self._clock
            self._rate_of = {model: rate(model, clock) for model in self._model_size}
        heap = self._heap = []
        for cls in self._occupied:
            self._value(cls)
            weight = self._lightest(cls) if cls.light else 1.0
            cls.entry = entry = (cls.prob * weight, cls.rate, cls.rank, cls.serial, cls)
            cls.entry_weight = weight
            heap.append(entry)
        heapify(heap)
        self._valued_at = self._clock
