"""Delta references found by content (SPEC §4a): a block with no reference by position is
stored as a delta of the nearest stored block in the LSH index, kept alive like any
reference, never a delta itself."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from support import bits, rewrite_block_bytes

import tensorstore as ts
from tensorstore import contentrefs
from tensorstore.corpora import derived

GEOMETRY = dict(page_size="64KiB", block_bytes="4KiB")


@pytest.fixture
def store(store_path):
    with ts.open(store_path, "w", content_refs=True, **GEOMETRY) as s:
        yield s
FLOATS = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def _base(rng: np.random.Generator, dtype=np.float32, rows: int = 192) -> dict[str, np.ndarray]:
    return {
        "embed": (rng.standard_normal((rows, 64)) * 0.05).astype(dtype),
        "layer.0.weight": (rng.standard_normal((64, 64)) * 0.05).astype(dtype),
        "layer.0.bias": (rng.standard_normal(64) * 0.01).astype(dtype),
    }


def _fine_tune(model: dict[str, np.ndarray], rng: np.random.Generator, scale: float = 1e-3) -> dict[str, np.ndarray]:
    """Every weight moved a little, relative to its size (a full fine-tune)."""
    return {k: (v.astype(np.float32) * (1 + rng.standard_normal(v.shape).astype(np.float32) * scale)).astype(v.dtype)
            for k, v in model.items()}


def _renamed(model: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/" + k.replace(".", "/"): v for k, v in model.items()}


def _blocks(store, model: str) -> list[dict]:
    return [r for r in store.catalog()["blocks"].to_pylist() if r["model"] == model]


def _same(store, name: str, model: dict[str, np.ndarray]) -> bool:
    got = store.load_model(name)
    return set(got) == set(model) and all(
        got[k].dtype == v.dtype and got[k].shape == v.shape and bits(got[k]) == bits(v) for k, v in model.items())


@settings(max_examples=20, deadline=None)
@given(dtype=st.sampled_from(sorted(FLOATS)), seed=st.integers(0, 2**32 - 1), steps=st.sampled_from([1, 2, 4]))
def test_a_renamed_fine_tune_is_stored_mostly_as_deltas(tmp_path_factory, dtype, seed, steps):
    rng = np.random.default_rng(seed)
    base = _base(rng, FLOATS[dtype])
    # weights moved by a few units in the last place of their dtype
    tuned = _renamed(_fine_tune(base, rng, steps * float(ml_dtypes.finfo(FLOATS[dtype]).eps)), "exported")
    counts = {}
    for content_refs in (False, True):
        path = tmp_path_factory.mktemp("cr") / "store"
        with ts.open(path, "w", content_refs=content_refs, **GEOMETRY) as store:
            store.add_model("base", base)
            store.add_model("tuned", tuned)
            base_ids = {r["block_id"] for r in _blocks(store, "base")}
            new = [r for r in _blocks(store, "tuned") if r["block_id"] not in base_ids]
            counts[content_refs] = sum(r["encoding"] == "delta" for r in new)
            assert _same(store, "tuned", tuned) and _same(store, "base", base)
            if content_refs:
                assert len(new) >= 6
                # the references are the base's blocks (the names told nothing)
                assert all(r["ref_block"] in base_ids for r in new if r["encoding"] == "delta")
                assert counts[True] >= 0.8 * len(new)
                assert store.verify().ok
    assert counts[False] == 0  # by position alone there is no reference at all


def test_deleting_the_model_that_owns_the_reference_keeps_the_dependant(store):
    rng = np.random.default_rng(1)
    base = _base(rng)
    tuned = _renamed(_fine_tune(base, rng), "other")
    store.add_model("base", base)
    store.add_model("tuned", tuned)
    refs = {r["ref_block"] for r in _blocks(store, "tuned") if r["encoding"] == "delta"}
    assert refs
    store.delete_model("base")
    assert _same(store, "tuned", tuned)
    assert store.verify().ok
    kept = {r["block_id"] for r in store.catalog()["blocks"].to_pylist()}
    assert not (refs & kept)  # no model holds them any more...
    assert store.stats().unique_bytes > sum(v.nbytes for v in tuned.values())  # ...yet they are kept
    store.delete_model("tuned")  # the last dependant: the references go with it
    s = store.stats()
    assert (s.unique_blocks, s.unique_bytes, s.encoded_bytes, s.pages) == (0, 0, 0, 0)
    assert store.verify().ok


def test_a_reference_is_never_a_delta(store):
    """Two renamed fine-tunes of one base: the second is nearest the first's blocks too,
    which are deltas; its references must be the base's (decode depth 1)."""
    rng = np.random.default_rng(2)
    base = _base(rng)
    first = _fine_tune(base, rng, 1e-4)
    second = {k: v.copy() for k, v in first.items()}
    second["embed"][::7] *= np.float32(1.001)  # a sibling: nearer the first than the base
    store.add_model("base", base)
    store.add_model("first", _renamed(first, "a"))
    store.add_model("second", _renamed(second, "b"))
    rows = store.catalog()["blocks"].to_pylist()
    encoding = {r["block_id"]: r["encoding"] for r in rows}
    deltas = [r for r in rows if r["encoding"] == "delta"]
    assert any(r["model"] == "second" for r in deltas)
    assert all(encoding.get(r["ref_block"], "gone") != "delta" for r in deltas)
    store.delete_model("base")
    store.delete_model("first")
    assert _same(store, "second", _renamed(second, "b"))
    assert store.verify().ok


def test_rows_inserted_by_whole_blocks_find_their_blocks_by_content(store):
    """A fine-tuned table with rows inserted: every later block lies further on than its
    parent's, so the reference by position is the wrong block; by content, the right one."""
    rng = np.random.default_rng(3)
    base = _base(rng, rows=640)
    tuned = _fine_tune(base, rng, 1e-3)
    block_rows = 4096 // (64 * 4)
    tuned["embed"] = derived.insert_rows(tuned["embed"], (block_rows, 2 * block_rows, block_rows), seed=0)
    store.add_model("base", base)
    store.add_model("tuned", tuned)
    base_embed = {r["block_id"]: r["index"] for r in _blocks(store, "base") if r["tensor"] == "embed"}
    moved = [r for r in _blocks(store, "tuned") if r["tensor"] == "embed" and r["encoding"] == "delta"]
    shifts = {r["index"] - base_embed[r["ref_block"]] for r in moved}
    assert len(moved) >= 0.8 * len(base_embed) and {1, 3, 4} <= shifts  # found where the rows went
    assert _same(store, "tuned", tuned)
    assert store.verify().ok


def test_unrelated_data_is_packed_not_a_delta(store):
    rng = np.random.default_rng(4)
    store.add_model("a", _base(rng))
    other = _renamed(_base(rng), "x")
    store.add_model("b", other)
    assert not [r for r in _blocks(store, "b") if r["encoding"] == "delta"]
    assert _same(store, "b", other)


def test_references_are_found_again_after_their_blocks_are_freed(store):
    """The handle keeps the index between ingests: freed blocks must leave it."""
    rng = np.random.default_rng(5)
    for round_ in range(3):
        base = _base(rng)
        tuned = _renamed(_fine_tune(base, rng), f"r{round_}")
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        rows = _blocks(store, "tuned")
        assert sum(r["encoding"] == "delta" for r in rows) >= 0.8 * len(rows)
        assert _same(store, "tuned", tuned)
        store.delete_model("base")
        store.delete_model("tuned")
        assert store.stats().unique_blocks == 0


def test_domains_never_share_references(store):
    rng = np.random.default_rng(6)
    base = _base(rng)
    store.add_model("base", base, domain="tenant-a")
    store.add_model("tuned", _renamed(_fine_tune(base, rng), "t"), domain="tenant-b")
    assert not [r for r in _blocks(store, "tuned") if r["encoding"] == "delta"]


def test_a_damaged_reference_fails_the_add_and_changes_nothing(store_path):
    rng = np.random.default_rng(7)
    base = _base(rng)
    with ts.open(store_path, "w", **GEOMETRY) as store:
        store.add_model("base", base)
        packed = next(r for r in _blocks(store, "base") if r["encoding"] == "packed")
    rewrite_block_bytes(store_path, packed["block_id"], flip_at=0)  # its plane headers
    with ts.open(store_path, "a", content_refs=True, **GEOMETRY) as store:
        before = store.stats().to_dict()
        catalog = {n: t.to_pylist() for n, t in store.catalog().items() if n != "models"}
        with pytest.raises(ts.CorruptionError, match="does not decode"):
            store.add_model("tuned", _renamed(_fine_tune(base, rng), "t"))
        assert store.stats().to_dict() == before
        assert {n: t.to_pylist() for n, t in store.catalog().items() if n != "models"} == catalog
        assert store.models() == ["base"]


def test_content_refs_must_be_a_bool(store_path):
    with pytest.raises(ts.InvalidArgumentError, match="content_refs") as info:
        ts.open(store_path, "w", content_refs="yes")
    assert isinstance(info.value, ValueError)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2000), dtype=st.sampled_from(sorted(FLOATS)), seed=st.integers(0, 2**32 - 1))
def test_vectors_sample_every_block_length_into_one_dimension(n, dtype, seed):
    data = np.random.default_rng(seed).standard_normal(n).astype(FLOATS[dtype])
    from tensorstore.dtypes import DTYPE_CODES

    v = contentrefs._vectors([data.tobytes()], DTYPE_CODES[dtype])
    assert v.shape == (1, contentrefs.VECTOR_DIM) and v.dtype == np.float32
    stride = 1
    while -(-n // stride) > contentrefs.VECTOR_DIM:
        stride *= 2
    width = -(-n // stride)
    assert np.array_equal(v[0, :width], data[::stride].astype(np.float32)) and not v[0, width:].any()


def test_content_references_are_on_by_default_and_can_be_turned_off(tmp_path):
    rng = np.random.default_rng(8)
    base = _base(rng)
    tuned = _renamed(_fine_tune(base, rng), "t")
    deltas, new = {}, len(_renamed(base, "t")["t/embed"].tobytes()) // 4096
    for flag in (None, False):
        options = {} if flag is None else {"content_refs": flag}
        with ts.open(tmp_path / f"s{flag}", "w", **options, **GEOMETRY) as s:
            s.add_model("base", base)
            s.add_model("tuned", tuned)
            deltas[flag] = sum(r["encoding"] == "delta" for r in _blocks(s, "tuned"))
    assert deltas[False] == 0 and deltas[None] >= 0.8 * new
