"""The policy comparison: target checks and the command line."""

from __future__ import annotations

import json

import pytest

from bufferpool.compare import Row, check, compare, main


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
