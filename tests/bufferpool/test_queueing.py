"""The queueing-model priority policy and its rate estimates."""

from __future__ import annotations

import math
import random

import pytest

from bufferpool import belady, simulate
from bufferpool.queueing import QueueingReplacer
from bufferpool.rates import DecayedCounts, RequestRates


def fill(replacer: QueueingReplacer, pages: list[int]) -> None:
    for page in pages:
        replacer.record_access(page)
        replacer.set_evictable(page, True)


def test_pages_of_no_known_model_go_first_least_recent_first():
    q = QueueingReplacer(8)
    q.set_sharing({1: ["a"], 2: ["a"]})
    q.note_request("a")
    fill(q, [3, 1, 4, 2, 3])  # 3 and 4 are in no model's list; 3 used again last
    assert [q.evict(), q.evict()] == [4, 3]


def test_a_page_shared_by_more_requested_models_outlives_private_pages():
    q = QueueingReplacer(8)
    q.set_sharing({0: ["a", "b"], 1: ["a"], 2: ["b"]})
    for model in ["a", "a", "a", "b"]:
        q.note_request(model)
    fill(q, [0, 2, 1])  # recency does not matter: b's page goes first, the shared one last
    assert q.page_rate(0) == pytest.approx(q.page_rate(1) + q.page_rate(2))
    assert q.page_rate(2) < q.page_rate(1)
    assert [q.evict(), q.evict(), q.evict()] == [2, 1, 0]


def test_within_one_sharing_class_the_most_recently_used_page_goes_first():
    q = QueueingReplacer(8)
    q.set_sharing({p: ["a"] for p in range(5)})
    q.note_request("a")
    fill(q, [4, 0, 3, 1, 2])
    assert [q.evict() for _ in range(5)] == [2, 1, 3, 0, 4]


def test_below_one_model_size_a_stable_subset_hits_where_lru_gets_nothing():
    pages = {"m": list(range(10))}
    trace = ["m"] * 10
    # 4 frames, a loop over 10 pages: Belady keeps 3 pages put and gets a few more hits
    # from the rotating frame; evicting the page just used does the same.
    assert belady(trace, pages, 4).hits == 30
    assert simulate(trace, pages, 4, "queueing").hits == 30
    assert simulate(trace, pages, 4, "lru").hits == 0


def test_a_cheaper_to_reload_page_goes_first_among_equals():
    q = QueueingReplacer(8, read_overhead_bytes=0)
    q.set_sharing({1: ["a"], 2: ["a"]})
    q.note_request("a")
    fill(q, [1, 2])
    q.set_page_bytes(1, 100, 4096)  # mostly empty page: cheap to reload
    q.set_page_bytes(2, 4096, 4096)
    assert q.evict() == 1  # recency alone would have picked 2


def _value(q: QueueingReplacer, page: int, nbytes: int, frame: int, horizon: float) -> float:
    """v_p exactly as the module docstring states it (o = 0)."""
    return (1.0 - math.exp(-q.page_rate(page) * horizon)) * nbytes / frame


@pytest.mark.parametrize("horizon", [0.5, 200.0])
def test_eviction_follows_the_documented_formula(horizon):
    """A busy half-empty page against a rarely used full one: the horizon decides."""
    q = QueueingReplacer(8, horizon=horizon, read_overhead_bytes=0)
    q.set_sharing({1: ["busy"], 2: ["rare"]})
    for i in range(60):
        q.note_request("rare" if i % 10 == 0 else "busy")
    fill(q, [1, 2])
    q.set_page_bytes(1, 1024, 4096)
    q.set_page_bytes(2, 4096, 4096)
    values = {p: _value(q, p, n, 4096, horizon) for p, n in ((1, 1024), (2, 4096))}
    assert q.evict() == min(values, key=values.get)


def test_the_two_horizons_above_really_disagree():
    picks = set()
    for horizon in (0.5, 200.0):
        q = QueueingReplacer(8, horizon=horizon, read_overhead_bytes=0)
        q.set_sharing({1: ["busy"], 2: ["rare"]})
        for i in range(60):
            q.note_request("rare" if i % 10 == 0 else "busy")
        fill(q, [1, 2])
        q.set_page_bytes(1, 1024, 4096)
        q.set_page_bytes(2, 4096, 4096)
        picks.add(q.evict())
    assert picks == {1, 2}


def test_set_sharing_refiles_pages_already_tracked():
    q = QueueingReplacer(8)
    q.note_request("a")
    fill(q, [1, 2])  # both unknown so far: LRU among them would evict 1
    q.set_sharing({1: ["a"]})
    assert q.evict() == 2  # 2 is still needed by no known model


def test_pinned_pages_are_skipped_and_requeued_when_unpinned():
    q = QueueingReplacer(8)
    q.set_sharing({1: ["a"], 2: ["a"], 3: ["b"]})
    for model in ["a", "a", "b"]:
        q.note_request(model)
    fill(q, [1, 2, 3])
    q.set_evictable(3, False)
    assert q.evict() == 2  # 3 has the lowest value but is pinned
    q.set_evictable(3, True)
    assert q.evict() == 3


def test_the_horizon_follows_littles_law():
    """W = frames / (loads per request): 10 frames, 5 loads per request -> 2 requests."""
    q = QueueingReplacer(10)
    q.set_sharing({p: ["a"] for p in range(60)})
    resident: set[int] = set()
    for page in range(60):
        if page % 5 == 0:
            q.note_request("a")
        q.record_access(page)
        if len(resident) >= 10:
            resident.remove(q.evict())
        resident.add(page)
        q.set_evictable(page, True)
    assert q.horizon == pytest.approx(10 / 5)


def test_model_names_must_be_hashable():
    with pytest.raises(TypeError, match="hashable"):
        QueueingReplacer(4).note_request(["a"])


def test_sharing_values_must_be_collections_not_strings():
    with pytest.raises(TypeError, match="collection of model names"):
        QueueingReplacer(4).set_sharing({1: "model-a"})


# -- rate estimates --------------------------------------------------------------------------
def test_decayed_counts_halve_after_one_half_life():
    counts = DecayedCounts(half_life=10)
    counts.add("a", now=0)
    assert counts.count("a", now=10) == pytest.approx(0.5)
    assert counts.total(now=20) == pytest.approx(0.25)
    assert counts.count("b", now=20) == 0.0


def _stream(rng: random.Random, weights: dict[str, float], n: int) -> list[str]:
    return rng.choices(list(weights), weights=list(weights.values()), k=n)


def test_steady_popularity_is_estimated_without_restarts():
    rates = RequestRates()
    trace = _stream(random.Random(1), {"a": 0.6, "b": 0.3, "c": 0.1}, 3000)
    for now, model in enumerate(trace, 1):
        rates.observe(model, now)
    assert rates.restarts == 0
    assert rates.rate("a", 3000) == pytest.approx(0.6, abs=0.06)
    assert rates.rate("c", 3000) == pytest.approx(0.1, abs=0.04)


def test_a_shift_is_followed_within_a_few_dozen_requests():
    rng = random.Random(2)
    before = _stream(rng, {"a": 0.8, "b": 0.1, "c": 0.1}, 1000)
    after = _stream(rng, {"a": 0.1, "b": 0.8, "c": 0.1}, 40)
    fast, plain = RequestRates(), RequestRates(change_threshold=None)
    for rates in (fast, plain):
        for now, model in enumerate(before + after, 1):
            rates.observe(model, now)
    now = len(before) + len(after)
    assert fast.restarts >= 1
    assert fast.rate("b", now) > fast.rate("a", now)
    assert plain.rate("b", now) < plain.rate("a", now)  # a 400-request half-life alone lags


def test_an_unseen_model_gets_the_prior_not_zero():
    rates = RequestRates(prior=0.5)
    rates.observe("a", 1)
    assert 0.0 < rates.rate("never", 1) < rates.rate("a", 1)
