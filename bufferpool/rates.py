r"""Online estimates of each model's request rate: exponential decay, restarted on a shift.

Time is a logical clock that ticks once per request, so a rate is "requests for this model
per request overall" (a share; the shares sum to about 1). Each model's requests are taken
to be a Poisson stream.

Two exponentially decayed counts are kept per model: a *slow* one (half-life ``half_life``,
long, so estimates under a steady popularity are precise) and a *fast* one (half-life
``fast_half_life``). The rate used is the slow estimate, shrunk by a small prior ``β`` so
that a model seen once is not infinitely more likely than one not yet seen:

.. code-block:: text

    rate(m) = (s_m + β) / (S + β M)         s_m: slow count of m, S: sum of all slow counts,
                                            M: models seen so far + 1

A slow estimate alone would follow a shift of popularity only after a half-life or so. So a
CUSUM test (Page, 1954) watches whether the recent requests are better explained by the
fast counts than by the slow ones. Before counting each request, for its model m,

.. code-block:: text

    p_slow = rate(m)
    p_fast = (f_m + κ p_slow) / (F + κ)    fast share, shrunk towards p_slow with κ
                                            pseudo-requests (so it equals p_slow unless the
                                            recent past really disagrees)
    g      = max(0, g + ln(p_fast / p_slow))

and when ``g`` exceeds ``change_threshold`` the slow counts are restarted from the requests
counted since ``g`` last left zero (the estimated change point) and ``g`` goes back to zero.
Under a steady popularity the fast shares are only noisier, ``g`` keeps falling back to
zero and the slow memory is kept; after a shift ``g`` climbs within a few dozen requests.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Protocol

from ._checks import positive_float


class RateEstimator(Protocol):
    """What the queueing policy needs from a rate estimator."""

    def observe(self, model: Hashable, now: float) -> None:
        """Count a request for ``model`` at clock time ``now``."""

    def rate(self, model: Hashable, now: float) -> float:
        """Estimated requests of ``model`` per request, at clock time ``now``."""


class DecayedCounts:
    """Exponentially decayed event counts per key (and their total) on a caller's clock.

    Parameters
    ----------
    half_life
        Clock ticks after which an event counts half.
    """

    __slots__ = ("half_life", "_alpha", "_count", "_stamp", "_total", "_total_stamp")

    def __init__(self, half_life: float) -> None:
        self.half_life = positive_float(half_life, "half_life")
        self._alpha = 0.5 ** (1.0 / self.half_life)
        self._count: dict[Hashable, float] = {}
        self._stamp: dict[Hashable, float] = {}  # clock time of each stored count
        self._total = 0.0
        self._total_stamp = 0.0

    def add(self, key: Hashable, now: float, weight: float = 1.0) -> None:
        """Count ``weight`` events of ``key`` at time ``now`` (``now`` never decreases)."""
        self._count[key] = self.count(key, now) + weight
        self._stamp[key] = now
        self._total = self.total(now) + weight
        self._total_stamp = now

    def count(self, key: Hashable, now: float) -> float:
        """Decayed count of ``key`` at time ``now`` (0.0 for an unseen key)."""
        count = self._count.get(key)
        if count is None:
            return 0.0
        return count * self._alpha ** (now - self._stamp[key])

    def total(self, now: float) -> float:
        """Decayed count of all keys at time ``now``."""
        return self._total * self._alpha ** (now - self._total_stamp)

    def rate(self, key: Hashable, now: float) -> float:
        """Events of ``key`` per tick: for a Poisson stream, E[count] = rate / (1 - alpha)."""
        return self.count(key, now) * (1.0 - self._alpha)

    def reset(self, counts: dict[Hashable, float], now: float) -> None:
        """Replace every count by ``counts``, as of time ``now``."""
        self._count = dict(counts)
        self._stamp = dict.fromkeys(counts, now)
        self._total = sum(counts.values())
        self._total_stamp = now

    def __len__(self) -> int:
        return len(self._count)


class RequestRates:
    """Per-model request rates (shares of all requests), following shifts of popularity.

    Parameters
    ----------
    half_life
        Half-life of the slow counts, in requests.
    fast_half_life
        Half-life of the fast counts that the shift test compares against.
    change_threshold
        CUSUM threshold, in nats of evidence; ``None`` turns restarts off (plain decay).
    prior
        Pseudo-count ``β`` added to every model's slow count.
    shrink
        Pseudo-requests ``κ`` pulling the fast share towards the slow one.

    Attributes
    ----------
    restarts
        Number of shifts detected so far.
    """

    def __init__(
        self,
        half_life: float = 400.0,
        fast_half_life: float = 10.0,
        change_threshold: float | None = 5.0,
        prior: float = 0.5,
        shrink: float = 10.0,
    ) -> None:
        self._slow = DecayedCounts(half_life)
        self._fast = DecayedCounts(fast_half_life)
        self.change_threshold = (
            math.inf if change_threshold is None else positive_float(change_threshold, "change_threshold")
        )
        self._prior = positive_float(prior, "prior")
        self._shrink = positive_float(shrink, "shrink")
        self._evidence = 0.0  # the CUSUM statistic g
        self._denominator = (math.nan, 0.0)  # (time, S + β M) cached: rate() is hot
        self._since_change: dict[Hashable, float] = {}  # requests since g last left zero
        self.restarts = 0

    def observe(self, model: Hashable, now: float) -> None:
        """Count a request for ``model`` at time ``now``."""
        p_slow = self.rate(model, now)
        fast_count, fast_total = self._fast.count(model, now), self._fast.total(now)
        p_fast = (fast_count + self._shrink * p_slow) / (fast_total + self._shrink)
        self._evidence += math.log(p_fast / p_slow)
        if self._evidence <= 0.0:
            self._evidence = 0.0
            self._since_change.clear()
        else:
            self._since_change[model] = self._since_change.get(model, 0.0) + 1.0
        if self._evidence > self.change_threshold:
            self.restarts += 1
            self._since_change[model] -= 1.0  # counted again just below
            self._slow.reset(self._since_change, now)
            self._evidence = 0.0
            self._since_change = {}
        self._slow.add(model, now)
        self._fast.add(model, now)
        self._denominator = (math.nan, 0.0)

    def rate(self, model: Hashable, now: float) -> float:
        """Estimated share of requests that are for ``model``, at time ``now``."""
        at, denominator = self._denominator
        if at != now:
            denominator = self._slow.total(now) + self._prior * (len(self._slow) + 1)
            self._denominator = (now, denominator)
        return (self._slow.count(model, now) + self._prior) / denominator
