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

:class:`ChangepointRates` (the queueing policy's default) does better on both counts: it is
Bayesian online changepoint detection (Adams & MacKay, 2007) with a Dirichlet–categorical
model of which model each request is for. It keeps a few hypotheses about when popularity
last changed ("the current run started at request τ"), weighs them by how well each
predicted the requests since, and predicts with the weighted mixture of their posterior
means. With no shift the oldest run keeps almost all the weight (all the history counts,
no decay); after a shift the run that starts at it takes over within a few dozen requests,
and in between the prediction blends the two instead of switching abruptly.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from operator import itemgetter
from typing import Protocol

from ._checks import positive_float, positive_int
from .errors import InvalidArgumentError


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


_weight = itemgetter(1)


class ChangepointRates:
    r"""Per-model request rates by Bayesian online changepoint detection (pruned).

    Model: popularity is piecewise constant; at each request it changes with probability
    ``hazard`` (to a new, unknown popularity); within a run of constant popularity the
    requests are i.i.d. categorical with a symmetric Dirichlet(``prior``) prior over the
    ``M`` = models seen + 1 categories (the extra one stands for every model not seen yet).
    The posterior over the start ``τ_h`` of the current run is kept on at most
    ``hypotheses`` candidate starts, each with weight ``w_h`` and the counts ``c_{h,m}`` of
    each model's requests since ``τ_h``. On a request for ``m``:

    .. code-block:: text

        w_h   <- w_h (1 - hazard) (c_{h,m} + prior) / (n_h + prior M)     n_h = requests since τ_h
        w_new  = hazard / M                      a run starting with this request
        normalise; drop hypotheses below ``min_weight``; if one too many remain, merge two
        whose starts differ by at most ``merge`` x the younger one's length, else drop the lightest

    and the rate of any model is the posterior predictive
    ``r_m = Σ_h w_h (c_{h,m} + prior) / (n_h + prior M)``. Cost: O(hypotheses) per request,
    O(hypotheses × models) to recompute every rate (once per clock tick, on demand).

    Parameters
    ----------
    hazard
        Prior probability that popularity changes at a given request (1/hazard: the
        expected number of requests between changes). Small values cost little under a
        steady popularity; detection speed depends mostly on the evidence.
    prior
        Dirichlet pseudo-count per model.
    hypotheses
        Most run-start hypotheses kept.
    min_weight
        Hypotheses whose weight falls below this are dropped.
    merge
        Two runs whose starts differ by at most this fraction of the younger one's length
        predict alike: they are merged (into the older) before any run is dropped, so
        that a long stream does not fill every slot with near-copies of the oldest run.

    Attributes
    ----------
    restarts
        Number of times the most probable run start moved later: detected shifts (a shift
        may be counted a few times while the estimate of its position settles).
    change_point
        Request number (0-based) at which the most probable current run starts.
    confidence
        Posterior probability of that start: close to 1 under a steady popularity, lower
        while the requests are still deciding whether popularity has just changed.
    """

    def __init__(
        self,
        hazard: float = 1e-3,
        prior: float = 0.5,
        hypotheses: int = 8,
        min_weight: float = 1e-4,
        merge: float = 0.1,
    ) -> None:
        self.hazard = positive_float(hazard, "hazard")
        if self.hazard >= 1.0:
            raise InvalidArgumentError(f"hazard must be < 1, got {hazard!r}")
        self.prior = positive_float(prior, "prior")
        self.hypotheses = positive_int(hypotheses, "hypotheses")
        self.min_weight = positive_float(min_weight, "min_weight")
        if isinstance(merge, bool) or not isinstance(merge, (int, float)) or not 0.0 <= merge < math.inf:
            raise InvalidArgumentError(f"merge must be a number >= 0, got {merge!r}")
        self.merge = float(merge)
        if self.min_weight * (self.hypotheses + 1) >= 1.0:  # the heaviest run must survive
            raise InvalidArgumentError(f"min_weight must be < 1/(hypotheses + 1), got {min_weight!r}")
        self._seen: dict[Hashable, None] = {}
        self._runs: list[list] = [[0, 1.0, {}]]  # [start, weight, {model: requests since start}]
        self._t = 0  # requests observed
        self._rates: dict[Hashable, float] = {}
        self._unseen = 0.0
        self._rates_at = -1
        self.restarts = 0
        self.change_point = 0
        self.confidence = 1.0

    def observe(self, model: Hashable, now: float) -> None:
        """Count a request for ``model`` (the clock is the number of requests observed)."""
        seen = self._seen
        if model not in seen:
            seen[model] = None
        a, t = self.prior, self._t
        a_m = a * (len(seen) + 1)
        keep = 1.0 - self.hazard
        new = self.hazard / (len(seen) + 1)  # a fresh run predicts 1/M for any model
        total = lightest = new
        runs = self._runs
        for run in runs:
            counts = run[2]
            c = counts.get(model, 0)
            run[1] = weight = run[1] * keep * (c + a) / (t - run[0] + a_m)
            total += weight
            if weight < lightest:
                lightest = weight
            counts[model] = c + 1
        runs.append([t, new, {model: 1}])
        floor = self.min_weight * total
        if lightest < floor or len(runs) > self.hypotheses:
            if lightest < floor:
                runs = self._runs = [run for run in runs if run[1] >= floor]
            if len(runs) > self.hypotheses:  # one too many: merge two alike, or drop the lightest
                self._merge_or_drop(runs, t)
            total = sum(run[1] for run in runs)
        best = runs[0]
        for run in runs:
            run[1] /= total
            if run[1] > best[1]:
                best = run
        self._t = t + 1
        if best[0] > self.change_point:
            self.restarts += 1
        self.change_point = best[0]
        self.confidence = best[1]

    def _merge_or_drop(self, runs: list[list], t: int) -> None:
        """Make room for one run: merge two adjacent runs whose starts differ by at most
        ``merge`` times the younger one's length (their predictions are then alike), into
        the older; if no two are that close, drop the lightest run."""
        merge = self.merge
        for i in range(len(runs) - 1):  # runs are in order of start
            older, younger = runs[i], runs[i + 1]
            if younger[0] - older[0] <= merge * (t - younger[0]):
                older[1] += younger[1]
                del runs[i + 1]
                return
        runs.remove(min(runs, key=_weight))

    def rate(self, model: Hashable, now: float) -> float:
        """Posterior predictive probability that the next request is for ``model``: O(runs)."""
        if self._rates_at == self._t:
            return self._rates.get(model, self._unseen)
        a, t = self.prior, self._t
        a_m = a * (len(self._seen) + 1)
        return sum(w * (counts.get(model, 0) + a) / (t - start + a_m) for start, w, counts in self._runs)

    def snapshot(self) -> tuple[dict[Hashable, float], float]:
        """Every seen model's rate, and the rate of any model not seen yet: O(runs × models)."""
        if self._rates_at != self._t:
            self._compute()
        return self._rates, self._unseen

    def _compute(self) -> None:
        a, t = self.prior, self._t
        a_m = a * (len(self._seen) + 1)
        rates = dict.fromkeys(self._seen, 0.0)
        scale = 0.0
        for start, weight, counts in self._runs:
            x = weight / (t - start + a_m)
            scale += x
            for model, c in counts.items():
                rates[model] += x * c
        unseen = scale * a
        for model in rates:
            rates[model] += unseen
        self._rates, self._unseen, self._rates_at = rates, unseen, t
