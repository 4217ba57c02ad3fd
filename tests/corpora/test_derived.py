"""Families derived from a cached one (renamed tensors, inserted vocabulary rows): what
they change, and that the change can be undone for the original task's evaluator."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from tensorstore.corpora import derived


def _family(rows: int = 300, members: int = 4) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    base = {"emb.weight": rng.standard_normal((rows, 8)).astype(np.float32),
            "layer.0.weight": rng.standard_normal((8, 8)).astype(np.float32),
            "layer.0.bias": rng.standard_normal(8).astype(np.float32)}
    family = {"base": base}
    for i in range(1, members):
        family[f"m{i}"] = {k: v + np.float32(1e-3 * i) for k, v in base.items()}
    return family


def test_renamed_members_share_no_name_and_keep_their_arrays():
    family = _family()
    out = derived.renamed(family, "base")
    assert out["base"] is family["base"]
    names = [set(t) for m, t in out.items() if m != "base"]
    for i, a in enumerate(names):
        assert not a & set(family["base"]) and all(not a & b for b in names[i + 1:])
    for model in family:
        back = {derived.original_name(k): v for k, v in out[model].items()}
        assert back.keys() == family[model].keys() and all(back[k] is family[model][k] for k in back)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(20, 400), block_bytes=st.sampled_from([None, 32, 64, 256, 1024]))
def test_vocab_insert_moves_rows_and_remove_rows_undoes_it(rows, block_bytes):
    family = _family(rows)
    out = derived.vocab_insert(family, "base", block_bytes)
    assert out["base"] is family["base"]
    row_bytes = 8 * 4
    for i, model in enumerate(family):
        if model == "base":
            continue
        table = out[model]["emb.weight"]
        counts = derived.member_counts(i, None if block_bytes is None else max(1, block_bytes // row_bytes))
        assert table.shape == (rows + sum(counts), 8)
        assert np.array_equal(table[: int(derived.PLACES[0] * rows)], family[model]["emb.weight"][: int(derived.PLACES[0] * rows)])
        assert np.array_equal(derived.remove_rows(table, rows), family[model]["emb.weight"])
        if block_bytes is not None:
            assert all(c % max(1, block_bytes // row_bytes) == 0 for c in counts)
        else:
            assert all(c == r + i for c, r in zip(counts, derived.ROW_COUNTS))


def test_the_evaluator_sees_the_original_tensors():
    family = _family()
    seen = {}

    def evaluate(name, tensors):
        seen[name] = tensors
        return 1.0

    for kind, make in (("renamed", derived.renamed), ("vocab_insert", derived.vocab_insert)):
        out = make(family, "base")
        check = derived.evaluator(kind, evaluate, family["base"])
        for model in family:
            assert check(model, out[model]) == 1.0
            assert seen[model].keys() == family[model].keys()
            assert all(np.array_equal(seen[model][k], family[model][k]) for k in family[model])
