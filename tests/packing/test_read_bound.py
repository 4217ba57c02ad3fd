"""The per-model reads bound: CP-SAT's optimum against brute force, and the relaxation
below every real layout."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorstore_packing import EncodedSizes, InvalidProblemError, PackingProblem, generate, pack, score
from tensorstore_packing.read_bound import deal_out, model_reads_bound, page_budget, realize


@st.composite
def small_families(draw: st.DrawFn) -> PackingProblem:
    """A few blocks read by a few models (one tensor per model), alignment 1."""
    page = 100
    n = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, page), min_size=n, max_size=n))
    n_models = draw(st.integers(1, 3))
    reads = [draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)) for _ in range(n_models)]
    return PackingProblem.from_tensors(
        {f"t{m}": r for m, r in enumerate(reads)},
        sizes,
        page,
        models={f"m{m}": [f"t{m}"] for m in range(n_models)},
        alignment=1,
    )


def brute_force(problem: PackingProblem, max_pages: int, objective: str) -> float:
    """Best mean (or worst) pages read / bound over every assignment of whole blocks."""
    sizes = problem.block_bytes.tolist()
    blocks_of = [
        sorted({b for t in problem.model_tensors_of(m).tolist() for b in problem.tensor_blocks_of(t).tolist()})
        for m in range(problem.n_models)
    ]
    bound = [
        max(-(-sum(sizes[b] for b in bs) // problem.page_bytes), sum(2 * sizes[b] > problem.page_bytes for b in bs))
        for bs in blocks_of
    ]
    counted = [m for m in range(problem.n_models) if bound[m]]
    best = math.inf
    for pages in itertools.product(range(max_pages), repeat=len(sizes)):
        load = [0] * max_pages
        for b, p in enumerate(pages):
            load[p] += sizes[b]
        if max(load) > problem.page_bytes:
            continue
        ratios = [len({pages[b] for b in blocks_of[m]}) / bound[m] for m in counted]
        value = sum(ratios) / len(ratios) if objective == "mean" else max(ratios)
        best = min(best, value)
    return best


@settings(max_examples=40, deadline=None)
@given(small_families(), st.integers(0, 1), st.sampled_from(["mean", "worst"]))
def test_exact_optimum_is_brute_force_and_the_relaxation_is_below_it(problem, extra, objective):
    budget = -(-int(problem.block_bytes.sum()) // problem.page_bytes)
    budget = max(budget, int(np.count_nonzero(2 * problem.block_bytes > problem.page_bytes))) + extra
    relaxed = model_reads_bound(problem, budget, objective=objective, exact=False, time_limit=20, num_workers=1)
    assert relaxed.status == "OPTIMAL"
    expected = brute_force(problem, budget, objective)
    if expected == math.inf:  # whole blocks need more pages than their volume
        with pytest.raises(InvalidProblemError, match=f"do not fit in {budget} pages"):
            model_reads_bound(problem, budget, objective=objective, exact=True, time_limit=20, num_workers=1)
        return
    exact = model_reads_bound(problem, budget, objective=objective, exact=True, time_limit=20, num_workers=1)
    assert exact.status == "OPTIMAL"
    assert exact.best == pytest.approx(expected, abs=1e-9)
    assert relaxed.lower_bound <= exact.best + 1e-9
    # the exact layout is a real one: dealt out whole, it reads what the solver says
    result = score(problem, realize(problem, exact))
    assert result.pages <= budget
    assert result.model_reads().pages_read.tolist() == exact.pages_read.tolist()


def test_the_relaxation_cuts_blocks_that_real_layouts_cannot():
    # one model, five blocks of 40 in pages of 100: whole, two fit a page and they take
    # three pages; cut, two pages hold the 200 bytes (the bound)
    problem = PackingProblem.from_tensors(
        {"t": [0, 1, 2, 3, 4]}, [40] * 5, 100, models={"m": ["t"]}, alignment=1
    )
    exact = model_reads_bound(problem, 3, exact=True, time_limit=10, num_workers=1)
    relaxed = model_reads_bound(problem, 3, exact=False, time_limit=10, num_workers=1)
    assert exact.pages_read.tolist() == [3] and exact.best == pytest.approx(1.5)
    assert relaxed.pages_read.tolist() == [2] and relaxed.best == pytest.approx(1.0)


def test_two_models_that_share_data_cannot_both_have_their_bound():
    # shared block S of 60 bytes, 50 private to each of a and b, pages of 100: S fits
    # beside neither, so each model reads S's page and its own: 2 pages, its bound
    problem = PackingProblem.from_tensors(
        {"a": [0, 1], "b": [0, 2]}, [60, 50, 50], 100, models={"a": ["a"], "b": ["b"]}, alignment=1
    )
    exact = model_reads_bound(problem, 3, exact=True, time_limit=10, num_workers=1)
    assert exact.pages_read.tolist() == [2, 2] and exact.best == pytest.approx(1.0)
    # S of 40 and 60 each: each model's 100 bytes fit one page, but S sits beside only
    # one of them, and the other reads two pages: mean (1 + 2) / 2
    tight = PackingProblem.from_tensors(
        {"a": [0, 1], "b": [0, 2]}, [40, 60, 60], 100, models={"a": ["a"], "b": ["b"]}, alignment=1
    )
    found = model_reads_bound(tight, 2, exact=True, time_limit=10, num_workers=1)
    assert sorted(found.pages_read.tolist()) == [1, 2] and found.best == pytest.approx(1.5)
    worst = model_reads_bound(tight, 2, objective="worst", exact=True, time_limit=10, num_workers=1)
    assert worst.best == pytest.approx(2.0)


def test_the_bound_is_below_two_stage_on_an_encoded_family():
    instance = generate(300, seed=3, n_models=6, n_groups=2, block_bytes=16 * 1024,
                        page_bytes=256 * 1024, encoded=EncodedSizes.typical())
    problem = instance.problem
    budget = page_budget(problem)
    found = model_reads_bound(problem, budget, time_limit=10, num_workers=1)
    layout = pack(problem, "two-stage", time_limit=2, num_workers=1)
    assert layout.pages <= budget
    assert found.lower_bound <= layout.model_reads().mean_ratio + 1e-9
    real = score(problem, realize(problem, found, time_limit=5, num_workers=1))
    quick = score(problem, deal_out(problem, found))
    assert real.pages <= budget and quick.pages <= budget
    assert real.model_reads().mean_ratio >= found.lower_bound - 1e-9
    assert real.cost <= quick.cost + 1e-9  # CP-SAT starts from the quick layout


def test_page_budget_is_the_targets():
    problem = PackingProblem.from_tensors({"t": list(range(20))}, [100] * 20, 100, models={"m": ["t"]}, alignment=1)
    assert page_budget(problem) == 21  # floor(1.02 * 20 + 1)
    problem = PackingProblem.from_tensors({"t": list(range(50))}, [100] * 50, 100, models={"m": ["t"]}, alignment=1)
    assert page_budget(problem) == 52  # floor(1.02 * 50 + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_pages": 1}, "max_pages must be an int >= 2"),
        ({"max_pages": 2.5}, "max_pages must be an int"),
        ({"objective": "median"}, "objective must be one of mean, worst"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    problem = PackingProblem.from_tensors({"t": [0, 1]}, [80, 80], 100, models={"m": ["t"]}, alignment=1)
    with pytest.raises(InvalidProblemError, match=message):
        model_reads_bound(problem, **kwargs)
    with pytest.raises(ValueError):
        model_reads_bound(problem, **kwargs)


def test_a_problem_without_models_is_refused():
    problem = PackingProblem.from_tensors({"t": [0]}, [10], 100)
    with pytest.raises(InvalidProblemError, match="no models"):
        model_reads_bound(problem)


def test_a_hint_is_a_start_the_solver_keeps_or_betters():
    instance = generate(300, seed=4, n_models=6, n_groups=2, block_bytes=16 * 1024,
                        page_bytes=256 * 1024, encoded=EncodedSizes.typical())
    problem = instance.problem
    layout = pack(problem, "greedy-2")
    budget = max(page_budget(problem), layout.pages)
    for exact in (False, True):
        found = model_reads_bound(problem, budget, exact=exact, time_limit=3, num_workers=1, hint=layout.block_page)
        assert found.best <= layout.model_reads().mean_ratio + 1e-9
    with pytest.raises(InvalidProblemError, match="one page label per block"):
        model_reads_bound(problem, budget, hint=layout.block_page[:-1])
