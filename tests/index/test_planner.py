"""The accuracy-gated planner: budget always kept, few evaluations, clear errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorstore_index import (
    EvaluationError,
    InvalidArgumentError,
    InvalidTypeError,
    Replacement,
    max_evaluations,
    plan_replacements,
)


class Curve:
    """An evaluate callback over a fixed accuracy curve that records its calls."""

    def __init__(self, accuracies):
        self.accuracies = list(accuracies)  # accuracies[k] for k = 0..n
        self.calls = []

    def __call__(self, k):
        self.calls.append(k)
        return self.accuracies[k]


def collapse_after(n, breaking, base=0.9, drop=0.5):
    return Curve([base if k <= breaking else base - drop for k in range(n + 1)])


def check_invariants(plan, curve, n):
    assert 0 <= plan.k <= n
    assert plan.accuracy >= plan.floor
    assert plan.k == 0 or plan.k in curve.calls  # the chosen prefix was measured
    assert plan.accuracy == (curve.accuracies[plan.k] if plan.k else plan.baseline)
    assert len(curve.calls) == len(set(curve.calls)) == plan.evaluations
    assert all(1 <= k <= n for k in curve.calls)
    assert [(e.prefix_len, e.accuracy) for e in plan.trace] == [
        (k, curve.accuracies[k]) for k in curve.calls
    ]


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_monotone_collapse_is_found_exactly_within_the_evaluation_bound(case):
    n, breaking = case
    curve = collapse_after(n, breaking)
    plan = plan_replacements(list(range(n)), curve, max_accuracy_drop=0.05, baseline=0.9)
    check_invariants(plan, curve, n)
    assert plan.k == breaking
    assert plan.accepted == tuple(range(breaking))
    assert plan.evaluations <= max_evaluations(n) <= 2 * math.log2(n) + 3


@given(
    st.integers(1, 3000),
    st.floats(0.0, 0.99),
    st.floats(1e-5, 1e-2),
)
def test_gradual_decline_takes_the_largest_prefix_within_budget(n, budget, slope):
    curve = Curve([1.0 - slope * k for k in range(n + 1)])
    plan = plan_replacements(range(n), curve, max_accuracy_drop=budget, baseline=1.0)
    check_invariants(plan, curve, n)
    best = max(k for k in range(n + 1) if curve.accuracies[k] >= 1.0 - budget)
    assert plan.k == best


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=400), st.floats(0.0, 0.5))
def test_non_monotone_accuracy_never_ends_over_budget(tail, budget):
    curve = Curve([0.8, *tail])
    n = len(tail)
    plan = plan_replacements(range(n), curve, max_accuracy_drop=budget, baseline=0.8)
    check_invariants(plan, curve, n)
    assert plan.evaluations <= 2 * math.log2(n) + 3
    if plan.k < n:  # the next prefix was measured and is over budget: a local maximum
        assert plan.k + 1 in curve.calls
        assert curve.accuracies[plan.k + 1] < plan.floor


def test_measured_baseline_counts_as_an_evaluation():
    curve = collapse_after(100, 37)
    plan = plan_replacements(range(100), curve, max_accuracy_drop=0.01)
    assert curve.calls[0] == 0 and plan.baseline == 0.9
    assert plan.k == 37
    assert plan.evaluations == len(curve.calls) <= 2 * math.log2(100) + 3


def test_everything_fits_in_one_evaluation():
    curve = Curve([0.9] * 1001)
    plan = plan_replacements(range(1000), curve, max_accuracy_drop=0.0, baseline=0.9)
    assert plan.k == 1000 and curve.calls == [1000]


def test_nothing_fits():
    curve = collapse_after(64, 0)
    plan = plan_replacements(range(64), curve, max_accuracy_drop=0.1, baseline=0.9)
    assert plan.k == 0 and plan.accepted == () and plan.accuracy == 0.9
    assert curve.calls == [64, 1]


def test_empty_candidates_need_no_evaluation():
    curve = Curve([0.7])
    plan = plan_replacements([], curve, max_accuracy_drop=0.1, baseline=0.7)
    assert (plan.k, plan.evaluations, plan.accuracy, curve.calls) == (0, 0, 0.7, [])


def test_accepted_replacements_are_the_prefix():
    replacements = [Replacement(("w", i), 100 + i, 0.01 * i) for i in range(10)]
    curve = collapse_after(10, 4)
    plan = plan_replacements(replacements, curve, max_accuracy_drop=0.1, baseline=0.9)
    assert plan.accepted == tuple(replacements[:4])
    with pytest.raises(AttributeError):
        plan.k = 5  # frozen


def test_numpy_scalars_are_accepted():
    plan = plan_replacements(
        range(3), lambda k: np.float32(0.5), max_accuracy_drop=0.1, baseline=np.float64(0.5)
    )
    assert plan.k == 3 and isinstance(plan.accuracy, float)


def test_evaluate_raising_is_wrapped_with_its_cause():
    def evaluate(k):
        raise KeyError("tensor 'w' missing")

    with pytest.raises(EvaluationError, match="evaluate\\(8\\) raised KeyError") as info:
        plan_replacements(range(8), evaluate, max_accuracy_drop=0.1, baseline=0.9)
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.prefix_len == 8
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_accuracy_is_a_value_error(value):
    with pytest.raises(InvalidArgumentError, match="finite"):
        plan_replacements(range(4), lambda k: value, max_accuracy_drop=0.1, baseline=0.9)


@pytest.mark.parametrize("value", ["0.9", None, True, [0.9], np.array([0.9, 0.8])])
def test_non_number_accuracy_is_a_type_error(value):
    with pytest.raises(InvalidTypeError, match="real number"):
        plan_replacements(range(4), lambda k: value, max_accuracy_drop=0.1, baseline=0.9)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"max_accuracy_drop": -0.01}, InvalidArgumentError, "\\[0, 1\\)"),
        ({"max_accuracy_drop": 1.0}, InvalidArgumentError, "\\[0, 1\\)"),
        ({"max_accuracy_drop": float("nan")}, InvalidArgumentError, "finite"),
        ({"max_accuracy_drop": "0.1"}, InvalidTypeError, "max_accuracy_drop"),
        ({"max_accuracy_drop": 0.1, "baseline": float("nan")}, InvalidArgumentError, "baseline"),
        ({"max_accuracy_drop": 0.1, "candidates": iter([1, 2])}, InvalidTypeError, "sequence"),
        ({"max_accuracy_drop": 0.1, "evaluate": 0.9}, InvalidTypeError, "callable"),
    ],
)
def test_bad_arguments(kwargs, error, words):
    args = {"candidates": [1, 2], "evaluate": lambda k: 0.9, "baseline": 0.9, **kwargs}
    candidates, evaluate = args.pop("candidates"), args.pop("evaluate")
    with pytest.raises(error, match=words):
        plan_replacements(candidates, evaluate, **args)


def test_max_evaluations_bound():
    sizes = (0, 1, 2, 3, 4, 5, 1024, 1025)
    assert [max_evaluations(n) for n in sizes] == [0, 1, 2, 4, 4, 6, 20, 22]
