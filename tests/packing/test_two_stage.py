"""Two-Stage on generated instances: its claims against the other packers, the
CP-SAT fallback paths and the read_weight knob."""

from __future__ import annotations

import numpy as np
import pytest

from tensorstore_packing import ALGORITHMS, PackingProblem, TwoStageOptions, generate, pack
from tests.packing.helpers import check_result

CP = dict(time_limit=1.0, num_workers=2)


@pytest.fixture(scope="module")
def layered():
    return generate(5_000, seed=1).problem


@pytest.fixture(scope="module")
def sparse_tuned():
    return generate(5_000, seed=2, changed_fraction=0.1).problem


@pytest.mark.parametrize("instance", ["layered", "sparse_tuned"])
def test_two_stage_beats_greedy2_and_baseline(instance, request):
    problem = request.getfixturevalue(instance)
    results = {a: pack(problem, a, **CP) for a in ALGORITHMS}
    two = results["two-stage"]
    check_result(two)
    for other in ("baseline", "greedy-2"):
        assert two.pages <= results[other].pages
        assert two.model_reads().mean_pages_read < results[other].model_reads().mean_pages_read
    assert two.mean_read_ratio < results["greedy-2"].mean_read_ratio


def test_targets_on_a_20k_block_instance():
    # issue 4's targets (measured at 100k blocks in the slow benchmark), here at 20k
    problem = generate(20_000, seed=3).problem
    result = pack(problem, "two-stage", time_limit=2.0)
    assert result.pages <= 1.02 * result.lower_bound_pages + 1
    assert result.mean_read_ratio <= 1.1


def test_time_limit_fallback_is_reported_and_still_valid(sparse_tuned):
    result = pack(sparse_tuned, "two-stage", time_limit=0.0)
    check_result(result)
    assert result.status == "FALLBACK"
    assert result.solver.fallback_time > 0
    assert "time limit" in result.solver.reason
    assert result.solver.optimal == result.solver.feasible == 0


def test_tiny_time_limit_mid_run_falls_back(sparse_tuned):
    options = TwoStageOptions(time_limit=0.05, cluster_time_limit=0.02, num_workers=1)
    result = pack(sparse_tuned, "two-stage", options=options)
    check_result(result)
    assert result.solver.fallback_time > 0 and result.status == "FALLBACK"


def test_too_many_leftovers_fall_back_to_best_fit(layered):
    result = pack(layered, "two-stage", options=TwoStageOptions(cp_max_items=10))
    check_result(result)
    assert result.status == "FALLBACK"
    assert result.solver.fallback_size == result.solver.clusters > 0
    assert "too big" in result.solver.reason


def test_cp_sat_improves_on_its_best_fit_start(sparse_tuned):
    greedy = pack(sparse_tuned, "two-stage", time_limit=0.0)
    solved = pack(sparse_tuned, "two-stage", time_limit=3.0)
    assert solved.solver.optimal + solved.solver.feasible > 0
    assert solved.cost < greedy.cost


def test_read_weight_trades_pages_for_reads(sparse_tuned):
    # the best-fit path is deterministic, so the trade-off can be compared exactly
    by_weight = {w: pack(sparse_tuned, "two-stage", read_weight=w, time_limit=0.0) for w in (0.0, 1.0, 10.0)}
    reads = [by_weight[w].weighted_read_ratio for w in (0.0, 1.0, 10.0)]
    pages = [by_weight[w].pages for w in (0.0, 1.0, 10.0)]
    assert reads[0] > reads[1] > reads[2]
    assert pages[0] <= pages[1] <= pages[2]


def test_best_fit_path_is_deterministic(layered):
    a = pack(layered, "two-stage", time_limit=0.0)
    b = pack(layered, "two-stage", time_limit=0.0)
    assert np.array_equal(a.block_page, b.block_page)
    assert np.array_equal(a.block_offset, b.block_offset)


def test_without_models_tensor_order_still_keeps_leftovers_together():
    instance = generate(5_000, seed=1)
    p = instance.problem
    bare = type(p).from_arrays(
        p.block_bytes, p.tensor_ptr, p.tensor_blocks, p.page_bytes, tensor_names=p.tensor_names
    )
    result = pack(bare, "two-stage", time_limit=0.0)
    greedy2 = pack(bare, "greedy-2")
    assert result.pages <= greedy2.pages
    models = instance.models
    assert result.model_reads(models).mean_pages_read < greedy2.model_reads(models).mean_pages_read


def _fine_tuned_family() -> tuple[dict, dict, dict]:
    """The MiniLM family's layout in small: a base and fine-tunes retraining the top
    layers, all of them or the head only, so sharing is a tree of model sets. Attention
    matrices are 9/16 of a page: no two share a page whole, and every such page's gap
    goes either to data its readers need, or to data some of them read in vain."""
    block, page = 4096, 65536
    sizes: dict[int, int] = {}
    tensors: dict[str, list[int]] = {}
    models: dict[str, list[str]] = {}
    shapes = {w: 9 * block for w in "qkvo"} | {"mlp": 4 * block + 1024, "bias": 384}
    base: dict[str, list[int]] = {}

    def blocks_of(nbytes: int) -> list[int]:
        ids = []
        while nbytes > 0:
            ids.append(len(sizes))
            sizes[ids[-1]] = min(block, nbytes)
            nbytes -= block
        return ids

    for layer in range(6):
        for w, nbytes in shapes.items():
            base[f"layer{layer}.{w}"] = blocks_of(nbytes)
    top = {"head": 6, "top1": 5, "top2": 4, "full": 0}
    for i, retrain in enumerate(["head", "head", "top1", "top1", "top2", "top2", "top2", "full", "full"]):
        name = f"m{i}-{retrain}"
        models[name] = []
        for key, ids in base.items():
            own = int(key[5]) >= top[retrain]
            tensors[f"{name}/{key}"] = blocks_of(sum(sizes[b] for b in ids)) if own else ids
            models[name].append(f"{name}/{key}")
        tensors[f"{name}/head"] = blocks_of(3072)
        models[name].append(f"{name}/head")
    return tensors, sizes, models | {"_page": page}


@pytest.fixture(scope="module")
def fine_tuned():
    tensors, sizes, models = _fine_tuned_family()
    page = models.pop("_page")
    return PackingProblem.from_tensors(tensors, sizes, page, models=models)


def test_fine_tuned_family_reads_fewer_pages_per_model_than_greedy2(fine_tuned):
    # issue 4 on the MiniLM layout: fewer pages read per model than Greedy-2 and the
    # baseline, never more pages; per tensor fewer than Greedy-2 too (every tensor here
    # is a leftover of a page or less, so splits weigh more than on MiniLM)
    results = {a: pack(fine_tuned, a, **CP) for a in ("baseline", "greedy-2", "two-stage")}
    two = results.pop("two-stage")
    check_result(two)
    for other in results.values():
        assert two.pages <= other.pages
        assert two.model_reads().mean_pages_read < other.model_reads().mean_pages_read
    assert two.pages <= 1.02 * two.lower_bound_pages + 1
    assert two.mean_read_ratio < results["greedy-2"].mean_read_ratio


def test_cp_sat_pass_never_adds_a_page(fine_tuned, sparse_tuned):
    for problem in (fine_tuned, sparse_tuned):
        greedy = pack(problem, "two-stage", time_limit=0.0)
        solved = pack(problem, "two-stage", **CP)
        assert solved.pages <= greedy.pages
        assert solved.cost <= greedy.cost + 1e-9


def test_model_set_plan_never_leaves_a_worse_layout():
    from tensorstore_packing import EncodedSizes, page_budget

    problem = generate(300, seed=5, n_models=6, n_groups=2, block_bytes=16 * 1024,
                       page_bytes=256 * 1024, encoded=EncodedSizes.typical()).problem
    # time_limit=0: best fit alone before the plan, the same layout in both runs
    plain = pack(problem, "two-stage", options=TwoStageOptions(time_limit=0, num_workers=1))
    planned = pack(problem, "two-stage", options=TwoStageOptions(time_limit=0, num_workers=1, plan_time_limit=4))
    check_result(planned)
    assert planned.cost <= plain.cost + 1e-9
    assert planned.model_reads().mean_pages_read <= plain.model_reads().mean_pages_read
    if "model-set plan" in planned.solver.reason:  # replaced: within the page target, and cheaper
        assert planned.pages <= page_budget(problem)
        assert planned.cost < plain.cost
    else:
        assert planned.block_page.tolist() == plain.block_page.tolist()


def test_model_set_plan_skips_families_with_many_cells():
    problem = generate(300, seed=5, n_models=6, n_groups=2, block_bytes=16 * 1024, page_bytes=256 * 1024).problem
    options = TwoStageOptions(time_limit=1, num_workers=1, plan_time_limit=30, plan_max_cells=1)
    result = pack(problem, "two-stage", options=options)
    assert "model-set plan" not in result.solver.reason
    assert result.solve_seconds < 30


def test_plan_time_limit_must_not_be_negative():
    with pytest.raises(ValueError, match="plan_time_limit must be >= 0"):
        TwoStageOptions(plan_time_limit=-1)
