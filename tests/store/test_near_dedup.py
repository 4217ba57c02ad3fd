"""Store.dedup(): near-duplicate blocks share a representative within an accuracy budget."""

import math

import numpy as np
import pytest
from support import chain_family, snapshot

import tensorstore as ts

ROWS, COLS = 256, 64  # a 64 KiB float32 tensor: 16 blocks of 4 KiB


# These tests pin the pass's mechanics on raw blocks, where every private float block is a
# candidate; a block that deltas use as their reference is never private (test_encoded.py).
@pytest.fixture
def store(raw_store):
    return raw_store


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
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        s.add_model("base", base)
        s.add_model("tuned", tuned)
    with ts.open(store_path, "r") as s:
        assert s.dedup(dry_run=True).bytes_saved > 0
        with pytest.raises(ts.ReadOnlyError):
            s.dedup()


def test_digits_family_within_budget(tmp_path):
    from tensorstore.corpora import digits

    fam = digits.build_family()
    with ts.open(tmp_path / "s", "w", page_size="256KiB", block_bytes="16KiB", codec="raw") as s:
        for n, t in fam.items():
            s.add_model(n, t)
        exact = s.stats().unique_bytes
        report = s.dedup(evaluate=digits.evaluate, max_accuracy_drop=0.01, tolerance=0.05)
        assert s.stats().unique_bytes == exact - report.bytes_saved < exact
        for m in report.models:
            assert m.accuracy_after >= m.accuracy_before - 0.01
            assert digits.evaluate(m.model, s.load_model(m.model)) == m.accuracy_after  # measured on what is stored
        assert s.verify().ok


_chain_family = chain_family


def _chain_store(path, family):
    """A store holding ``family`` (small pages and blocks, so that tensors span many)."""
    s = ts.open(path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw")
    for n, t in family.items():
        s.add_model(n, t)
    return s


def _replaced(report):
    return [(m.model, m.candidates, [(r.block_id, r.representative, r.error) for r in m.replaced]) for m in report.models]


def test_a_dry_run_reports_what_the_applied_pass_does(tmp_path):
    # Planned against the unchanged store, a dry run used to count blocks that an earlier
    # model's replacements free (or share) as candidates and representatives of later ones.
    family = _chain_family()
    reports = []
    for dry_run in (True, False):
        with _chain_store(tmp_path / f"s{dry_run}", family) as s:
            reports.append(s.dedup(list(family), tolerance=0.01, dry_run=dry_run))
    dry, applied = reports
    assert _replaced(dry) == _replaced(applied) and dry.bytes_saved == applied.bytes_saved > 0
    # the models one at a time, each against the unchanged store, claim more than can be had
    # (one round, below the first tolerance level: t1's blocks would represent t2's, but t1's
    # own replacement by t2's frees them first)
    with ts.open(tmp_path / "sTrue", "r") as s:
        alone = sum(s.dedup([n], tolerance=0.0009, dry_run=True, keep_bases=False).bytes_saved for n in family)
        together = s.dedup(list(family), tolerance=0.0009, dry_run=True, keep_bases=False).bytes_saved
    assert alone > together > 0


def test_one_pass_equals_one_pass_per_model(tmp_path):
    # The pass keeps one index and follows the store as replacements free blocks; a pass
    # per model builds a fresh one each time. Their results must be identical (in one round:
    # a tolerance below the first level; with several rounds, a pass takes every model
    # through a round before the next).
    family = _chain_family()
    order = list(family)
    results = []
    for per_model in (False, True):
        with _chain_store(tmp_path / f"s{per_model}", family) as s:
            if per_model:
                # any direction: the base ranks would move between per-model passes
                reports = [s.dedup([n], tolerance=0.0009, keep_bases=False) for n in order]
                replaced = [row for r in reports for row in _replaced(r)]
            else:
                replaced = _replaced(s.dedup(order, tolerance=0.0009, keep_bases=False))
            assert s.verify().ok
            results.append((replaced, {n: s.load_model(n) for n in order}))
    (one, stored_one), (each, stored_each) = results
    assert one == each
    assert sum(len(r[2]) for r in one) >= 32  # the family has work in several models
    assert {m for m, _, rows in one if rows} >= {"t1", "t2"}
    for n in order:
        for k in family[n]:
            np.testing.assert_array_equal(stored_one[n][k], stored_each[n][k])


def test_blocks_added_and_removed_during_a_pass_are_followed(store):
    rng = np.random.default_rng(6)
    w, v = (rng.standard_normal((256, 64)).astype(np.float32) for _ in range(2))
    store.add_model("a", {"u": rng.standard_normal((256, 64)).astype(np.float32)})  # near nothing
    store.add_model("b", {"w": w, "v": v})
    store.add_model("x", {"w": w + np.float32(1e-4) * rng.standard_normal(w.shape).astype(np.float32)})
    c = {"v": v + np.float32(1e-4) * rng.standard_normal(v.shape).astype(np.float32)}

    def evaluate(name, tensors):
        if name == "a":  # between the models of the pass: another writer's changes
            store.delete_model("x")
            store.add_model("c", c)
        return 1.0

    report = store.dedup(["a", "b"], evaluate=evaluate, tolerance=0.01, keep_bases=False)  # c is newer than b
    b = report.models[1]
    assert report.models[0].candidates == 0
    assert b.candidates == len(b.replaced) == 16  # v's blocks, by c's; x's blocks are gone
    np.testing.assert_array_equal(store.load_model("b")["v"], c["v"])
    np.testing.assert_array_equal(store.load_model("b")["w"], w)
    assert store.verify().ok


def test_a_models_own_blocks_are_never_its_representatives(store):
    # Two halves of one tensor are near-duplicates of each other, and of nothing else:
    # replacing one by the other would chain replacements within the model.
    rng = np.random.default_rng(7)
    half = rng.standard_normal((128, 64)).astype(np.float32)
    twin = half + np.float32(1e-4) * rng.standard_normal(half.shape).astype(np.float32)
    store.add_model("m", {"w": np.concatenate([half, twin])})
    store.add_model("other", {"w": rng.standard_normal((256, 64)).astype(np.float32)})
    report = store.dedup(tolerance=0.01)
    assert [m.candidates for m in report.models] == [0, 0]
    # Once the twin lives in another model too, it is a representative like any other.
    store.add_model("copy", {"w": twin})
    assert store.dedup(["m"], tolerance=0.01, dry_run=True, keep_bases=False).models[0].candidates == 8


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_non_f32_blocks_are_compared_in_float32(store, dtype):
    # The index keeps no vectors: blocks are read from their pages and converted on fetch.
    import ml_dtypes

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(8)
    base = rng.standard_normal((ROWS, COLS)).astype(np_dtype)
    tuned = (base.astype(np.float32) + np.float32(1e-3) * rng.standard_normal((ROWS, COLS))).astype(np_dtype)
    store.add_model("base", {"w": base})
    store.add_model("tuned", {"w": tuned})
    report = store.dedup("tuned", tolerance=0.02)
    m = report.models[0]
    per_block = 4096 // np_dtype.itemsize
    assert m.candidates == len(m.replaced) == ROWS * COLS // per_block
    a = base.astype(np.float32).reshape(-1, per_block)
    b = tuned.astype(np.float32).reshape(-1, per_block)
    for r in m.replaced:
        (_, k), = r.positions
        expected = np.linalg.norm(b[k] - a[k]) / np.linalg.norm(b[k])
        assert r.error == pytest.approx(expected, rel=1e-4)
    assert store.load_model("tuned")["w"].tobytes() == base.tobytes()
    assert store.verify().ok


def test_the_search_keeps_no_vectors_and_reads_the_live_snapshot(pair):
    from tensorstore.dedup import BlockSearch, private_blocks
    from tensorstore.readpath import ReadPath

    store, base, tuned = pair
    search = BlockSearch()
    with store.env.read() as txn:
        blocks = search.sync(store, txn, ReadPath(store, txn, verify=True))
        record = store.record(txn, "tuned")
        private = private_blocks(record, blocks)
        found = search.find(blocks, private, sorted(private), 0.01)
        first = int(record.tensor("w").block_ids[0])
        np.testing.assert_array_equal(search.vector(first), tuned["w"].reshape(-1)[:1024])
        search.release()
    assert len(found) == 16
    assert all(not search._indexes[c].keep_vectors for c in search._indexes)
    with pytest.raises(RuntimeError, match="no live snapshot"):
        search.vector(first)


def test_blocks_moved_by_a_repack_during_a_pass_are_read_where_they_are(tmp_path):
    # A repack between two models of a pass moves blocks to other pages: the search must
    # read them where the current snapshot has them, and find what a pass without it finds.
    family = _chain_family()
    order = list(family)
    results = []
    for repack in (False, True):
        with _chain_store(tmp_path / f"s{repack}", family) as s:
            moved = []

            def evaluate(name, tensors, s=s, repack=repack, moved=moved):
                if repack and not moved:
                    with s.env.read() as txn:
                        before = {k: bytes(v) for k, v in txn.cursor(db=s.env.dbs["blocks"])}
                    s.repack()
                    with s.env.read() as txn:
                        after = {k: bytes(v) for k, v in txn.cursor(db=s.env.dbs["blocks"])}
                    moved.append(sum(before[k] != after.get(k) for k in before))
                return 1.0

            replaced = _replaced(s.dedup(order, evaluate=evaluate, tolerance=0.01))
            assert s.verify().ok
            results.append(replaced)
            if repack:
                assert moved and moved[0] > 0  # the repack did move blocks
    assert results[0] == results[1]


def test_a_pass_that_fails_on_a_later_model_changes_nothing(tmp_path):
    # The first model's replacements are planned (and would save bytes); the evaluator
    # raises on the second. The pass is one transaction: nothing of the first is applied.
    family = _chain_family()
    with _chain_store(tmp_path / "s", family) as s:
        assert s.dedup(["t1"], tolerance=0.01, dry_run=True, keep_bases=False).bytes_saved > 0
        before = snapshot(s)
        audit_before = s.catalog().get("replacements")

        def evaluate(name, tensors):
            if name == "t2":
                raise RuntimeError("the evaluation cluster is down")
            return 1.0

        with pytest.raises(ts.EvaluatorError, match="'t2'.*the store was not changed"):
            s.dedup(["t1", "t2"], evaluate=evaluate, tolerance=0.01, keep_bases=False)
        assert snapshot(s) == before
        after = s.catalog().get("replacements")
        assert (audit_before is None and after is None) or after.num_rows == audit_before.num_rows == 0
        assert s.verify().ok
        # and the same pass with a working evaluator applies both models
        report = s.dedup(["t1", "t2"], evaluate=lambda n, t: 1.0, tolerance=0.01, keep_bases=False)
        assert report.bytes_saved > 0 and s.stats().unique_bytes < before[0]["unique_bytes"]


def test_a_pass_keeps_the_base_exact_and_moves_the_fine_tune_toward_it(tmp_path):
    rng = np.random.default_rng(11)
    shape = (512, 64)
    base = {k: rng.standard_normal(shape).astype(np.float32) for k in ("w", "e", "g")}

    def tuned(exact: str, far: str) -> dict:
        # "w" near the base's, one tensor shared exactly with it, one retrained (far)
        return {"w": base["w"] + np.float32(1e-4) * rng.standard_normal(shape).astype(np.float32),
                exact: base[exact], far: rng.standard_normal(shape).astype(np.float32)}

    f1, f2 = tuned("e", "g"), tuned("g", "e")  # the base shares blocks with both, they with it alone
    for order in (["base", "f1", "f2"], ["f1", "f2", "base"]):  # the base need not come first
        family = {"base": base, "f1": f1, "f2": f2}
        with ts.open(tmp_path / "-".join(order), "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
            for n in order:
                s.add_model(n, family[n])
            report = s.dedup(tolerance=0.01)
            assert {m.model: len(m.replaced) for m in report.models} == {"base": 0, "f1": 32, "f2": 32}
            for k in base:
                np.testing.assert_array_equal(s.load_model("base")[k], base[k])  # exact
            for name, far in (("f1", "g"), ("f2", "e")):
                got = s.load_model(name)
                np.testing.assert_array_equal(got["w"], base["w"])  # moved to the base
                np.testing.assert_array_equal(got[far], family[name][far])
            assert s.verify().ok
    # asked for any direction, the first model planned may move toward a fine-tune
    with ts.open(tmp_path / "any", "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        s.add_model("base", base)
        s.add_model("f1", f1)
        report = s.dedup(["base", "f1"], tolerance=0.01, keep_bases=False)
        assert len(report.models[0].replaced) == 32
