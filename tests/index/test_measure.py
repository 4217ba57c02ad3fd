"""The measurement tools: exhaustive reference, synthetic data, measure CLI, magnitude study."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorstore_index import ElementShare, InvalidArgumentError, RelativeL2, exhaustive_match
from tensorstore_index import magnitude_study, measure
from tensorstore_index.synthetic import fine_tuned_blocks


@settings(max_examples=30)
@given(
    n=st.integers(1, 30),
    m=st.integers(0, 12),
    dim=st.integers(1, 12),
    seed=st.integers(0, 999),
    share=st.booleans(),
    exclude=st.booleans(),
)
def test_exhaustive_match_equals_a_naive_loop(n, m, dim, seed, share, exclude):
    rng = np.random.default_rng(seed)
    stored = rng.standard_normal((n, dim)).astype(np.float32)
    queries = stored[rng.integers(0, n, m)] + rng.normal(0, 0.2, (m, dim)).astype(np.float32)
    tol = ElementShare(0.2, 0.5) if share else RelativeL2(0.3)
    ids = np.arange(n) + 10
    own = ids[rng.integers(0, n, m)] if exclude else None
    got = exhaustive_match(ids, stored, queries, tol, query_ids=own)
    for i in range(m):
        errors = [
            tol.errors(queries[i : i + 1], stored[j : j + 1])[0]
            if own is None or ids[j] != own[i] else np.inf
            for j in range(n)
        ]
        best = int(np.argmin(errors))
        if errors[best] <= tol.limit:
            assert got.ids[i] == ids[best] and got.errors[i] == errors[best]
        else:
            assert got.ids[i] == -1 and got.errors[i] == np.inf


def test_synthetic_copies_have_the_stated_noise():
    data = fine_tuned_blocks(20, 30, 5, 64, max_noise=0.1, seed=1)
    copies = data.source >= 0
    assert copies.sum() == 30 and (data.source[~copies] == -1).all()
    base = data.base[data.source[copies]].astype(np.float64)
    measured = np.linalg.norm(data.queries[copies] - base, axis=1) / np.linalg.norm(base, axis=1)
    np.testing.assert_allclose(measured, data.noise[copies], rtol=1e-4)
    assert (data.noise[copies] <= 0.1).all() and np.isnan(data.noise[~copies]).all()
    with pytest.raises(InvalidArgumentError, match="n_base"):
        fine_tuned_blocks(0, 3, 0, 8)


def test_measure_reports_recall_against_the_exhaustive_search():
    result = measure.measure(measure.Workload(dim=512, n_base=512, n_copies=256, n_unrelated=64))
    assert result.exhaustive_found > 50  # about half the copies are within tolerance
    assert result.recall >= 0.95
    assert result.lsh_found <= result.exhaustive_found
    assert result.mode == "scan" and result.block_bytes == 2048


def test_measure_command_prints_json(capsys):
    assert measure.main(["--json", "--quick", "--dims", "1024", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["dim"] for r in report["results"]] == [1024, 8]
    assert [r["mode"] for r in report["results"]] == ["scan", "exact"]
    assert all(r["recall"] >= 0.95 for r in report["results"])
    assert report["machine"]["faiss_threads"] <= 2


def test_measure_command_rejects_unknown_dims(capsys):
    with pytest.raises(SystemExit) as info:
        measure.main(["--dims", "3"])
    assert info.value.code == 2
    assert "no default workload" in capsys.readouterr().err


def test_rescaling_a_unit_keeps_the_network_function():
    weights, x, y = magnitude_study.train_mlp(seed=0)
    scaled = magnitude_study.rescale_unit(weights, 0, 10.0)
    assert np.abs(scaled[0]).max() > np.abs(weights[0]).max()
    # float32 rounding may flip a near-tie or two out of 4000 test points, no more.
    before = magnitude_study.accuracy(weights, x, y)
    assert abs(magnitude_study.accuracy(scaled, x, y) - before) <= 1e-3


@pytest.mark.slow
def test_magnitude_orderings_beat_a_random_order():
    scores = {s.ordering: s.mean_accuracy for s in magnitude_study.study(1.0, seed=0)}
    assert scores["max_abs"] > scores["random"]
