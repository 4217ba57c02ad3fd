"""The policy comparison: target checks and the command line."""

from __future__ import annotations

import json

import pytest

from tensorstore_bufferpool import belady, simulate
from tensorstore_bufferpool.compare import KnownShifts, Row, TrueRates, check, compare, main, online_bound
from tensorstore_bufferpool.workload import generate


def row(capacity: int, queueing: float, best_baseline: float, belady: float) -> Row:
    ratios = {"queueing": queueing, "lru": best_baseline, "lfu": 0.0, "arc": 0.0, "s3fifo": 0.0, "mru": 0.0}
    return Row(capacity, capacity / 100, ratios, queueing, belady)


def test_check_passes_and_fails_each_target():
    good = [row(5, 0.45, 0.0, 0.5), row(10, 0.80, 0.70, 0.82), row(20, 0.90, 0.89, 0.92)]
    results = check(good, model_size=10, shifting=True)
    assert {name: r["ok"] for name, r in results.items()} == {
        "not_worse": True, "near_belady": True, "shift_gain": True, "small_cache": True,
    }
    bad = [row(5, 0.2, 0.0, 0.5), row(10, 0.69, 0.70, 0.80), row(20, 0.90, 0.89, 0.92)]
    results = check(bad, model_size=10, shifting=True)
    assert not results["not_worse"]["ok"]
    assert results["not_worse"]["worst_margin"] < 0
    assert not results["near_belady"]["ok"]  # 0.80 - 0.69 > 0.03
    assert not results["small_cache"]["ok"]  # 0.2 < 0.5 * 0.5
    assert "shift_gain" not in check(bad, model_size=10, shifting=False)


def test_shift_gain_compares_mean_miss_ratios():
    rows = [row(10, 0.83, 0.80, 0.9), row(20, 0.91, 0.90, 0.95)]
    outcome = check(rows, model_size=10, shifting=True)["shift_gain"]
    assert outcome["miss_ratio_vs_best"] == pytest.approx((0.17 + 0.09) / (0.20 + 0.10))
    assert outcome["ok"] is True
    rows = [row(10, 0.81, 0.80, 0.9), row(20, 0.91, 0.90, 0.95)]
    assert check(rows, model_size=10, shifting=True)["shift_gain"]["ok"] is False


def test_a_small_comparison_runs_and_the_queueing_policy_hits_where_lru_cannot():
    report = compare(seed=0, n_requests=150, n_models=8)
    assert set(report["workloads"]) == {"zipf", "pareto", "zipf-shift", "pareto-shift"}
    for result in report["workloads"].values():
        smallest = result["rows"][0]
        assert smallest["capacity_pages"] < result["model_size"]
        assert smallest["hit_ratio"]["lru"] == 0.0
        assert smallest["hit_ratio"]["queueing"] > 0.0
        for r in result["rows"]:
            assert all(h <= r["belady"] + 1e-12 for h in r["hit_ratio"].values())


def test_command_line_json(capsys):
    assert main(["--requests", "60", "--models", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_requests"] == 60
    assert "targets" in report["workloads"]["zipf"]


def _workload(model_pages, trace, popularity, phase_length=None):
    from tensorstore_bufferpool.simulate import sharing_of
    from tensorstore_bufferpool.workload import Workload

    return Workload(model_pages, sharing_of(model_pages), trace, 4096, popularity, phase_length or len(trace))


def test_online_bound_by_hand():
    # One model: every request after the first can hit every cached page of it.
    w = _workload({"a": [0, 1, 2, 3, 4]}, ["a"] * 10, [{"a": 1.0}])
    assert online_bound(w, 5) == pytest.approx(9 * 5 / 50)
    assert online_bound(w, 2) == pytest.approx(9 * 2 / 50)
    # Two models sharing page 0, p(a) = 0.75: λ = 1 for page 0, 0.75 for page 1, 0.25 for 2.
    w = _workload({"a": [0, 1], "b": [0, 2]}, ["a", "b", "a", "a"], [{"a": 0.75, "b": 0.25}])
    # request 1: nothing read yet; 2: {0, 1} read; 3, 4: all read. Capacity 1: page 0 only.
    assert online_bound(w, 1) == pytest.approx((0 + 1 + 1 + 1) / 8)
    assert online_bound(w, 2) == pytest.approx((0 + 1.75 + 1.75 + 1.75) / 8)


@pytest.mark.parametrize("policy", ["queueing", "lru", "s3fifo", "oracle"])
def test_online_bound_dominates_every_policys_expected_hits(policy):
    """The two steps of the bound, checked on a policy's actual cache contents ``C_t`` at
    each request: the request hits at most its pages in ``C_t``, and ``Σ_{p in C_t} λ_p``
    (the expected hits given the past) never exceeds the bound's per-request term."""
    from tensorstore_bufferpool.policies import make_replacer
    from tensorstore_bufferpool.queueing import QueueingReplacer
    from tensorstore_bufferpool.simulate import sharing_of

    w = generate(8, n_requests=400, seed=1, popularity="pareto", shift_every=100)
    capacity = 30
    replacer = (QueueingReplacer(capacity, rates=TrueRates(w)) if policy == "oracle"
                else make_replacer(policy, capacity))
    replacer.set_sharing(sharing_of(w.model_pages))
    resident: set[int] = set()
    expected = accesses = 0.0
    for t, model in enumerate(w.trace):
        popularity = w.popularity[t // w.phase_length]
        expected += sum(popularity[m] for page in resident for m in w.sharing[page])
        at_start, hits = set(resident), 0
        replacer.note_request(model)
        for page in w.model_pages[model]:
            replacer.record_access(page)
            if page in resident:
                hits += 1
            else:
                if len(resident) >= capacity:
                    resident.remove(replacer.evict())
                resident.add(page)
            replacer.set_evictable(page, True)
        assert hits <= len(at_start & set(w.model_pages[model]))
        accesses += len(w.model_pages[model])
    assert expected / accesses <= online_bound(w, capacity) + 1e-12


def test_known_shifts_forgets_at_each_phase_start():
    w = _workload({"a": [0], "b": [1]}, ["a", "a", "b", "b"], [{"a": 1.0}, {"b": 1.0}], phase_length=2)
    rates = KnownShifts(w)
    for now, model in enumerate(w.trace[:2], 1):
        rates.observe(model, now)
    assert rates.rate("a", 2) == pytest.approx(2.5 / 3)  # (2 + 0.5) / (2 + 0.5 * 2)
    rates.observe("b", 3)  # first request of phase 2
    assert rates.rate("a", 3) == pytest.approx(0.5 / 2.5) and rates.rate("b", 3) == pytest.approx(1.5 / 2.5)


def test_check_reports_what_the_references_reach():
    rows = [Row(10, 0.1, {"queueing": 0.8, "lru": 0.7, "lfu": 0, "arc": 0, "s3fifo": 0, "mru": 0},
                0.85, 0.9, bound=0.86, known_shifts=0.82)]
    results = check(rows, model_size=10, shifting=True)
    assert results["near_belady"]["bound_gap"] == pytest.approx(0.04)
    assert results["shift_gain"]["known_shifts"] == pytest.approx(0.18 / 0.3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_full_comparison_figures(seed):
    """The figures in docs/bufferpool.md, within a margin (about 10 s per seed). The
    policy's options were chosen on seeds 100-109; these seeds were not used to choose."""
    report = compare(seed=seed)
    for name, result in report["workloads"].items():
        targets = result["targets"]
        assert targets["not_worse"]["worst_margin"] >= -0.001, name  # ties with LFU at most
        assert targets["small_cache"]["share_of_belady"] >= 0.95, name
        big = [r for r in result["rows"] if r["capacity_pages"] >= result["model_size"]]
        assert max(r["bound"] - r["hit_ratio"]["queueing"] for r in big) <= 0.03, name
        if "shift_gain" in targets:
            assert targets["shift_gain"]["miss_ratio_vs_best"] <= 0.915, name
            assert targets["shift_gain"]["known_shifts"] <= targets["shift_gain"]["miss_ratio_vs_best"]
