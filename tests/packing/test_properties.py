"""Property tests: on random problems every packer returns a valid placement whose
metrics agree with a from-scratch recomputation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.packing.helpers import check_result, problems
from tensorstore_packing import ALGORITHMS, TwoStageOptions, pack
from tensorstore_packing.cpsat import ClusterModel, cluster_cost, solve_cluster
from tensorstore_packing.fit import best_fit_decreasing, next_fit

FAST_CP = TwoStageOptions(time_limit=0.5, cluster_time_limit=0.1, num_workers=1, family_time_limit=0.1)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "two-stage"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_greedy_packers_place_every_block_validly(algorithm, problem):
    check_result(pack(problem, algorithm))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), read_weight=st.sampled_from([0.0, 1.0, 20.0]))
def test_two_stage_places_every_block_validly(problem, read_weight):
    result = pack(problem, "two-stage", read_weight=read_weight, options=FAST_CP)
    check_result(result)
    assert result.status in {"OPTIMAL", "FEASIBLE", "FALLBACK"}
    assert result.solver is not None and result.solver.reason


@st.composite
def clusters(draw: st.DrawFn) -> tuple[ClusterModel, list]:
    """A random cluster and a feasible hint that gives every item a new page."""
    n = draw(st.integers(2, 5))
    capacity = draw(st.integers(8, 40))
    classes = [
        [(draw(st.integers(1, capacity)), 1)] + draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), max_size=1))
        for _ in range(n)
    ]
    # keep every item within a page so that the one-item-per-page hint is feasible
    classes = [c if sum(s * m for s, m in c) <= capacity else c[:1] for c in classes]
    readers = draw(st.lists(st.lists(st.integers(0, n - 1), min_size=2, max_size=n, unique=True), max_size=3))
    model = ClusterModel(
        capacity=capacity, base_load=[0] * n, is_new=[True] * n, item_classes=classes,
        item_cost=draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)),
        tensor_items=readers, tensor_cost=draw(st.lists(st.integers(0, 300), min_size=len(readers), max_size=len(readers))),
        page_cost=100,
    )
    hint = [[[m * (k == i) for k in range(n)] for _, m in c] for i, c in enumerate(classes)]
    return model, hint


@settings(max_examples=40, deadline=None)
@given(case=clusters())
def test_cp_sat_cluster_solution_is_feasible_and_no_worse_than_its_hint(case):
    model, hint = case
    solution = solve_cluster(model, hint, time_limit=2.0, num_workers=1)
    assert solution.counts is not None
    for item, classes in zip(solution.counts, model.item_classes):
        for per_page, (_, m) in zip(item, classes):
            assert sum(per_page) == m and min(per_page) >= 0  # every block placed once
    for k in range(len(model.base_load)):
        load = sum(size * solution.counts[i][c][k] for i, cls in enumerate(model.item_classes) for c, (size, _) in enumerate(cls))
        assert load <= model.capacity
    assert cluster_cost(model, solution.counts) <= cluster_cost(model, hint)


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 100), max_size=60),
    starts=st.lists(st.integers(0, 59), max_size=5),
)
def test_next_fit_respects_capacity_order_and_segment_starts(sizes, starts):
    sizes = np.array(sizes, dtype=np.int64)
    starts = np.array([s for s in starts if s < sizes.size], dtype=np.int64)
    bins = next_fit(sizes, 100, starts)
    assert np.all(np.diff(bins) >= 0) and (bins.size == 0 or bins[0] == 0)
    assert np.all(np.bincount(bins, weights=sizes) <= 100) if sizes.size else True
    for s in starts.tolist():
        if s > 0:
            assert bins[s] != bins[s - 1]


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 100), max_size=60))
def test_best_fit_decreasing_respects_capacity_and_is_near_optimal(sizes):
    sizes = np.array(sizes, dtype=np.int64)
    bins = best_fit_decreasing(sizes, 100)
    if sizes.size:
        assert np.all(np.bincount(bins, weights=sizes) <= 100)
        # any-fit: no two bins are both at most half full, so bins <= 2 * volume + 1
        n_bins = int(bins.max()) + 1
        assert n_bins <= 2 * sizes.sum() / 100 + 1
        assert n_bins >= -(-int(sizes.sum()) // 100)
