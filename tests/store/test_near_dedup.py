"""Store.dedup(): near-duplicate blocks share a representative within an accuracy budget."""

import math

import numpy as np
import pytest
from support import snapshot

import tensorstore as ts

ROWS, COLS = 256, 64  # a 64 KiB float32 tensor: 16 blocks of 4 KiB


def _family(noise=1e-4, changed_rows=ROWS):
    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal((ROWS, COLS)).astype(np.float32), "b": rng.standard_normal(COLS).astype(np.float32)}
    tuned = {k: v.copy() for k, v in base.items()}
    tuned["w"][:changed_rows] += noise * rng.standard_normal((changed_rows, COLS)).astype(np.float32)
    return base, tuned


@pytest.fixture
def pair(store):
    base, tuned = _family()
    store.add_model("base", base)
    store.add_model("tuned", tuned)
    return store, base, tuned


def _blocks_changed(tensors, original):
    """How many 4 KiB blocks of `w` differ from the fine-tune as it was added."""
    a = tensors["w"].reshape(-1, 1024)
    b = original["w"].reshape(-1, 1024)
    return int((a != b).any(axis=1).sum())


def test_collapsing_evaluator_never_ends_over_budget(pair):
    store, _, tuned = pair
    limit = 5  # the model "breaks" once more than 5 blocks are replaced
    calls = []

    def evaluate(name, tensors):
        calls.append(name)
        return 0.9 if _blocks_changed(tensors, tuned) <= limit else 0.1

    report = store.dedup("tuned", evaluate=evaluate, max_accuracy_drop=0.05)
    m = report.models[0]
    assert m.candidates == ROWS * COLS * 4 // 4096
    assert len(m.replaced) == limit
    assert m.accuracy_after >= m.accuracy_before - 0.05
    assert m.evaluations == len(calls) <= 2 * math.log2(m.candidates) + 3
    assert _blocks_changed(store.load_model("tuned"), tuned) == limit
    assert store.verify().ok


def test_replacements_save_bytes_and_stay_within_tolerance(pair):
    store, base, tuned = pair
    before = store.stats().unique_bytes
    report = store.dedup("tuned", tolerance=0.01)
    assert not report.accuracy_checked
    saved = report.bytes_saved
    assert saved == 16 * 4096 and store.stats().unique_bytes == before - saved
    out = store.load_model("tuned")
    assert np.array_equal(out["w"], base["w"])  # every block now reads the base's
    for r in report.models[0].replaced:
        assert r.error <= 0.01
    assert np.array_equal(store.load_model("base")["w"], base["w"])  # the base is untouched
    assert store.verify().ok


def test_audit_trail_records_every_replacement_and_goes_with_the_model(pair):
    store, _, _ = pair
    report = store.dedup("tuned", evaluate=lambda n, t: 0.5, max_accuracy_drop=0.0)
    rows = store.catalog()["replacements"].to_pylist()
    assert len(rows) == len(report.models[0].replaced) > 0
    assert {r["block_id"] for r in rows} == {r.block_id for r in report.models[0].replaced}
    assert all(r["model"] == "tuned" and r["accuracy_before"] == 0.5 == r["accuracy_after"] for r in rows)
    store.delete_model("tuned")
    assert store.catalog()["replacements"].num_rows == 0
    assert store.verify().ok


def test_dry_run_changes_nothing(pair):
    store, _, _ = pair
    before = snapshot(store)
    report = store.dedup(dry_run=True)
    assert report.dry_run and report.bytes_saved > 0
    assert snapshot(store) == before


def test_shared_blocks_are_never_candidates(store):
    base, _ = _family()
    store.add_model("a", base)
    store.add_model("b", base)
    report = store.dedup()
    assert report.bytes_saved == 0 and all(m.candidates == 0 for m in report.models)


def test_far_blocks_are_not_replaced(store):
    base, tuned = _family(noise=1.0, changed_rows=ROWS // 2)  # half the rows changed a lot
    store.add_model("base", base)
    store.add_model("tuned", tuned)
    report = store.dedup("tuned", tolerance=0.01)
    assert report.models[0].candidates == 0
    assert np.array_equal(store.load_model("tuned")["w"], tuned["w"])


@pytest.mark.parametrize(
    "evaluate, match",
    [
        (lambda n, t: 1 / 0, "raised"),
        (lambda n, t: float("nan"), "NaN|nan|finite"),
        (lambda n, t: "good", "not a|number"),
        (lambda n, t: None, "not a|number"),
    ],
)
def test_bad_evaluators_leave_the_store_unchanged(pair, evaluate, match):
    store, _, _ = pair
    before = snapshot(store)
    with pytest.raises(ts.EvaluatorError, match=match):
        store.dedup("tuned", evaluate=evaluate)
    assert snapshot(store) == before


@pytest.mark.parametrize("kwargs", [{"max_accuracy_drop": -0.1}, {"max_accuracy_drop": 1.0}, {"tolerance": 0}, {"evaluate": 3}])
def test_bad_arguments(pair, kwargs):
    store, _, _ = pair
    before = snapshot(store)
    with pytest.raises(ts.InvalidArgumentError):
        store.dedup(**kwargs)
    assert snapshot(store) == before


def test_unknown_models(pair):
    store, _, _ = pair
    with pytest.raises(ts.ModelNotFoundError, match="nope"):
        store.dedup(["tuned", "nope"])


def test_read_only_store_can_dry_run_but_not_apply(store_path):
    base, tuned = _family()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        s.add_model("base", base)
        s.add_model("tuned", tuned)
    with ts.open(store_path, "r") as s:
        assert s.dedup(dry_run=True).bytes_saved > 0
        with pytest.raises(ts.ReadOnlyError):
            s.dedup()


def test_digits_family_within_budget(tmp_path):
    from tensorstore.corpora import digits

    fam = digits.build_family()
    with ts.open(tmp_path / "s", "w", page_size="256KiB", block_bytes="16KiB") as s:
        for n, t in fam.items():
            s.add_model(n, t)
        exact = s.stats().unique_bytes
        report = s.dedup(evaluate=digits.evaluate, max_accuracy_drop=0.01, tolerance=0.05)
        assert s.stats().unique_bytes == exact - report.bytes_saved < exact
        for m in report.models:
            assert m.accuracy_after >= m.accuracy_before - 0.01
            assert digits.evaluate(m.model, s.load_model(m.model)) == m.accuracy_after  # measured on what is stored
        assert s.verify().ok
