"""The sparse-embedding family: its training moves only the rows of tokens it sees, its quick
(synthetic) build, its evaluator, and (if it is cached) the full family's manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorstore.corpora import embedding_family as ef


@pytest.fixture(scope="module")
def quick():
    return ef.quick_family()


def _loss(table, w, b, ids, mask, labels):
    logits = ef.pooled(table, ids, mask) @ w.T + b
    logits = logits - logits.max(axis=1, keepdims=True)
    return float(-(logits[np.arange(len(labels)), labels] - np.log(np.exp(logits).sum(axis=1))).mean())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), vocab=st.integers(20, 200), used=st.integers(1, 15), items=st.integers(2, 12))
def test_training_moves_exactly_the_rows_of_seen_tokens(seed, vocab, used, items):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, 8)).astype(np.float32)
    tokens = rng.choice(vocab, size=min(used, vocab), replace=False)
    ids = rng.choice(tokens, size=(items, 6)).astype(np.int32)
    mask = np.ones_like(ids, dtype=np.int8)
    mask[:, 4:] = rng.integers(0, 2, size=(items, 2))  # some padding: padded ids are not seen
    labels = rng.integers(0, 2, size=items)
    head = ef._init_head(2, 8, seed)
    out, w, b = ef.train(table, head, ids, mask, labels, train_rows=True, epochs=2, batch_size=4, seed=seed)
    seen = np.zeros(vocab, bool)
    seen[ids[mask > 0]] = True
    changed = ef.rows_changed(table, out)
    assert not (changed & ~seen).any()  # unseen rows keep every bit
    assert changed[seen].mean() > 0.9  # and seen rows move (a zero gradient is possible, rare)
    assert out.dtype == np.float32 and out.shape == table.shape


def test_training_lowers_the_training_loss():
    rng = np.random.default_rng(3)
    table = (rng.standard_normal((50, 16)) * 0.1).astype(np.float32)
    labels = rng.integers(0, 2, size=40)
    ids = np.where(labels[:, None] == 1, rng.integers(0, 25, (40, 8)), rng.integers(25, 50, (40, 8))).astype(np.int32)
    mask = np.ones_like(ids, dtype=np.int8)
    head = ef._init_head(2, 16, 0)
    before = _loss(table, *head, ids, mask, labels)
    out, w, b = ef.train(table, head, ids, mask, labels, train_rows=True, epochs=10, batch_size=8, seed=0)
    assert _loss(out, w, b, ids, mask, labels) < 0.5 * before
    frozen, w2, b2 = ef.train(table, head, ids, mask, labels, train_rows=False, epochs=10, batch_size=8, seed=0)
    assert frozen.tobytes() == table.tobytes()  # head only: the table is untouched
    assert _loss(frozen, w2, b2, ids, mask, labels) < before


def test_rows_changed_compares_bits():
    a = np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]], np.float32)
    b = a.copy()
    assert not ef.rows_changed(a, b).any()  # NaN rows with the same bits are unchanged
    b[0, 0] = -0.0
    b[2, 1] = np.nextafter(np.float32(4.0), np.float32(5.0))
    assert ef.rows_changed(a, np.concatenate([b, a[:1]])).tolist() == [True, False, True]


def test_members_and_parents_are_well_formed():
    names = [m.name for m in ef.MEMBERS]
    assert len(names) >= 6 and len(set(names)) == len(names)
    assert ef.MEMBERS[0].parent is None and ef.MEMBERS[0].row_fraction == 0
    for k, m in enumerate(ef.MEMBERS[1:], 1):
        assert m.parent in names[:k]  # a parent comes before its children
        assert 0.03 <= m.row_fraction <= 0.12
    assert any(m.add_words for m in ef.MEMBERS) and any(m.parent != names[0] for m in ef.MEMBERS[1:])


def test_quick_family_changes_a_small_fraction_of_its_parents_rows(quick):
    assert list(quick.models) == [m.name for m in ef.MEMBERS]
    for m in ef.MEMBERS[1:]:
        table, parent = quick.models[m.name][ef.TABLE], quick.models[m.parent][ef.TABLE]
        n = len(parent)
        assert len(table) >= n and table.shape[1] == parent.shape[1]
        changed = ef.rows_changed(parent, table)
        assert changed.sum() == quick.info[m.name]["parent_rows_changed"]
        assert m.row_fraction - 0.01 <= changed.mean() <= m.row_fraction + 0.03  # drawn up to the target
        assert len(table) - n == quick.info[m.name]["rows_appended"]
    assert quick.info["emb-vocab-spam-s6"]["rows_appended"] > 0
    assert quick.models["emb-base"][ef.TABLE].shape == (ef.QUICK_VOCAB, ef.QUICK_WIDTH)


def test_vocabulary_extension_picks_frequent_split_words_and_tokenizes_them_whole():
    from collections import Counter

    data = ef._synthetic_data(ef.QUICK_VOCAB)
    items = data.pool[:80]
    counts = Counter(w for i in items for w in data.words(i))
    eligible = {w: c for w, c in counts.items() if c >= 2 and len(data.piece_ids(w)) >= 3}
    new = ef._new_words(data, items, 5, ())
    assert 0 < len(new) <= 5 and all(w in eligible for w in new)
    assert [eligible[w] for w in new] == sorted((eligible[w] for w in new), reverse=True)
    assert max((c for w, c in eligible.items() if w not in new), default=0) <= min(eligible[w] for w in new)
    assert not set(ef._new_words(data, items, 5, new)) & set(new)  # known words are not added again
    holder = next(i for i in items if new[0] in data.words(i))
    plain, _ = data.tokenize(np.array([holder]), ())
    extended, mask = data.tokenize(np.array([holder]), new)
    assert ef.QUICK_VOCAB in extended[0][mask[0] > 0] and ef.QUICK_VOCAB not in plain[0]
    assert (mask[0] > 0).sum() < (plain[0] > 0).sum() + 1  # a split word became one token


def test_quick_family_is_deterministic(quick):
    again = ef.quick_family()
    for name, tensors in quick.models.items():
        for k, a in tensors.items():
            assert again.models[name][k].tobytes() == a.tobytes()


def test_quick_evaluator(quick):
    for name, tensors in quick.models.items():
        assert quick.evaluate(name, tensors) == pytest.approx(quick.info[name]["heldout_accuracy"])
    base = quick.models["emb-base"]
    assert quick.evaluate("emb-base", base) > 0.6  # better than always "ham"
    broken = base | {"classifier.weight": np.zeros_like(base["classifier.weight"]),
                     "classifier.bias": np.array([0.0, 1.0], np.float32)}  # always "spam"
    assert quick.evaluate("emb-base", broken) == pytest.approx(0.4)  # two of five folders are spam
    with pytest.raises(KeyError, match="not a member"):
        quick.evaluate("nope", base)


def test_evaluate_names_an_unknown_member(tmp_path):
    (tmp_path / "family.json").write_text(json.dumps({"models": [], "parents": {}}))
    with pytest.raises(KeyError, match="is not a member"):
        ef.evaluate("nope", {}, family_dir=tmp_path)
    assert ef.main(["evaluate", "nope", "--family-dir", str(tmp_path)]) == 1


def test_load_family_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedding_family build"):
        ef.load_family(tmp_path)


full_dir = ef.default_family_dir()


@pytest.mark.skipif(not (full_dir / "family.json").exists(), reason="the full embedding family is not cached")
def test_cached_full_family():
    index = json.loads((full_dir / "family.json").read_text())
    family = ef.load_family()
    assert list(family) == index["models"]
    base = family["emb-base"][ef.TABLE]
    assert base.shape == (30522, 384)
    for name in index["models"][1:]:
        m = ef.manifest(name)
        parent = family[m["parent"]][ef.TABLE]
        table = family[name][ef.TABLE]
        changed = ef.rows_changed(parent, table)
        assert changed.sum() == m["parent_rows_changed"]
        assert 0.03 <= changed.mean() <= 0.13
    name = "emb-spam-r08-s2"
    assert ef.evaluate(name, family[name]) == ef.manifest(name)["heldout_accuracy"]
