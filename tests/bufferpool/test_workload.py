"""The workload generator: deterministic, structured as a deduplicated family, skewed."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorstore_bufferpool import sharing_of
from tensorstore_bufferpool.workload import generate


def test_same_seed_same_workload_other_seed_other_trace():
    assert generate(seed=3) == generate(seed=3)
    assert generate(seed=3).trace != generate(seed=4).trace


@given(
    n_models=st.integers(6, 50),
    groups=st.integers(1, 6),
    base=st.integers(0, 5),
    group_pages=st.integers(0, 4),
    private=st.integers(1, 5),
)
def test_family_structure(n_models, groups, base, group_pages, private):
    w = generate(n_models, groups=groups, base_pages=base, group_pages=group_pages,
                 private_pages=private, n_requests=50)
    assert len(w.model_pages) == n_models
    assert w.sharing == sharing_of(w.model_pages)
    assert w.model_size == base + group_pages + private
    holders = Counter(len(models) for models in w.sharing.values())
    assert holders[n_models] >= base  # the base: needed by every model
    assert sum(1 for models in w.sharing.values() if len(models) == 1) >= n_models * private
    assert w.distinct_pages == base + groups * group_pages + n_models * private
    # group pages are shared by the models of exactly one group
    first = next(iter(w.model_pages.values()))
    for page in first[base : base + group_pages]:
        assert 1 <= len(w.sharing[page]) < n_models or groups == 1
    assert len(w.trace) == 50 and set(w.trace) <= set(w.model_pages)


def test_zipf_popularity_matches_its_weights():
    w = generate(20, n_requests=20000, popularity="zipf", skew=1.0, seed=1)
    counts = Counter(w.trace)
    harmonic = sum(1 / k for k in range(1, 21))
    top_share = counts.most_common(1)[0][1] / len(w.trace)
    assert top_share == pytest.approx(1 / harmonic, abs=0.02)
    assert max(w.popularity[0].values()) == pytest.approx(1 / harmonic)


def test_pareto_popularity_is_skewed():
    w = generate(30, n_requests=5000, popularity="pareto", seed=2)
    shares = sorted(Counter(w.trace).values(), reverse=True)
    assert sum(shares[:6]) > 0.4 * len(w.trace)  # the top fifth: over twice its even share


def test_shifting_popularity_changes_the_popular_set():
    w = generate(30, n_requests=1500, shift_every=300, seed=5)
    assert len(w.popularity) == 5 and w.phase_length == 300
    tops = [Counter(w.trace[i : i + 300]).most_common(1)[0][0] for i in range(0, 1500, 300)]
    assert len(set(tops)) >= 3
    for phase, top in zip(w.popularity, tops):
        assert phase[top] == max(phase.values())


def test_without_shifts_there_is_one_phase():
    w = generate(10, n_requests=700)
    assert len(w.popularity) == 1 and w.phase_length == 700


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_models": 0}, ValueError, "n_models"),
        ({"groups": 40}, ValueError, "groups"),
        ({"base_pages": -1}, ValueError, "base_pages"),
        ({"base_pages": 0, "group_pages": 0, "private_pages": 0}, ValueError, "at least one page"),
        ({"popularity": "uniform"}, ValueError, "popularity"),
        ({"skew": 0}, ValueError, "skew"),
        ({"shift_every": 0}, ValueError, "shift_every"),
        ({"n_requests": 1.5}, TypeError, "n_requests"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        generate(**kwargs)
