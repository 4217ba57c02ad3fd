"""Exact dedup: shared blocks stored once, reference counts, space freed and reused."""

import numpy as np
import pytest
from support import random_model

import tensorstore as ts


def test_ten_copies_cost_one(store):
    model = random_model(0, scale=4)
    store.add_model("copy-0", model)
    one = store.stats()
    for i in range(1, 10):
        store.add_model(f"copy-{i}", model)
    ten = store.stats()
    assert ten.models == 10
    assert ten.logical_bytes == 10 * one.logical_bytes
    assert ten.unique_bytes == one.unique_bytes
    assert ten.stored_bytes <= 1.05 * one.stored_bytes
    assert ten.blocks == 10 * one.blocks and ten.unique_blocks == one.unique_blocks


def test_head_only_fine_tune_adds_only_its_head(store):
    base = random_model(0, scale=4)
    tuned = dict(base, **{"layer.0.bias": base["layer.0.bias"] + 1})
    store.add_model("base", base)
    before = store.stats().unique_bytes
    store.add_model("tuned", tuned)
    assert store.stats().unique_bytes - before == base["layer.0.bias"].nbytes


def test_identical_blocks_within_a_tensor_are_stored_once(store):
    store.add_model("zeros", {"z": np.zeros((1000, 64), np.float32)})
    s = store.stats()
    assert s.blocks > 10 and s.unique_blocks <= 2  # full blocks all equal; the tail may differ


def test_equal_bytes_of_different_dtypes_are_not_merged(store):
    store.add_model("m", {"f": np.zeros(256, np.float32), "i": np.zeros(256, np.int32)})
    assert store.stats().unique_blocks == 2
    out = store.load_model("m")
    assert out["f"].dtype == np.float32 and out["i"].dtype == np.int32


def test_delete_frees_blocks_no_model_needs(store):
    a, b = random_model(1), random_model(2)
    store.add_model("a", a)
    only_a = store.stats()
    store.add_model("b", b)
    store.delete_model("b")
    after = store.stats()
    assert (after.unique_bytes, after.unique_blocks, after.blocks) == (only_a.unique_bytes, only_a.unique_blocks, only_a.blocks)
    assert after.pages == only_a.pages
    assert "b" not in store and store.verify().ok
    assert all(np.array_equal(v, a[k]) for k, v in store.load_model("a").items())


def test_delete_keeps_blocks_another_model_needs(store):
    m = random_model(3)
    store.add_model("a", m)
    store.add_model("b", m)
    store.delete_model("a")
    assert store.stats().unique_bytes == sum(v.nbytes for v in m.values())
    assert all(np.array_equal(v, m[k]) for k, v in store.load_model("b").items())
    assert store.verify().ok


def test_space_of_deleted_models_is_reused(store):
    store.add_model("keep", random_model(0))
    for i in range(20):
        store.add_model("tmp", random_model(100 + i), replace=True)
    settled = store.stats().file_bytes
    for i in range(20):
        store.add_model("tmp", random_model(200 + i), replace=True)
    s = store.stats()
    assert s.file_bytes <= settled * 1.1  # the file stopped growing: freed pages are reused
    assert s.pages <= 2 * -(-s.unique_bytes // s.page_size) + 1
    assert store.verify().ok


def test_replace_swaps_the_model_atomically(store):
    store.add_model("m", {"x": np.arange(10, dtype=np.float32)}, metadata={"v": 1})
    store.add_model("m", {"y": np.arange(5, dtype=np.int8)}, metadata={"v": 2}, replace=True)
    assert list(store.load_model("m")) == ["y"]
    assert store.model_info("m").metadata == {"v": 2}
    assert len(store) == 1 and store.verify().ok


def test_catalog_tables_have_the_contract_columns(store):
    m = random_model(0)
    store.add_model("a", m)
    store.add_model("b", m)
    tables = store.catalog()
    assert {"model", "tensor", "index", "block_id", "page_id", "nbytes"} <= set(tables["blocks"].column_names)
    assert {"page_id", "used_bytes"} <= set(tables["pages"].column_names)
    assert "model" in tables["models"].column_names
    blocks = tables["blocks"]
    assert blocks.num_rows == store.stats().blocks
    assert sum(blocks.column("nbytes").to_pylist()) == store.stats().logical_bytes
    # a block id means the same place whichever model refers to it
    place = {}
    for row in blocks.to_pylist():
        assert place.setdefault(row["block_id"], row["page_id"]) == row["page_id"]
    assert max(tables["pages"].column("used_bytes").to_pylist()) <= store.page_size


def test_stats_fields(store):
    m = random_model(0)
    store.add_model("a", m)
    s = store.stats()
    assert s.models == 1 and s.tensors == len(m)
    assert s.logical_bytes == sum(v.nbytes for v in m.values())
    assert s.stored_bytes == s.pages * s.page_size >= s.encoded_bytes
    assert s.encoded_bytes <= s.unique_bytes and sum(s.encodings.values()) == s.unique_blocks
    assert s.file_bytes > 0 and s.page_size == 64 << 10 and s.block_bytes == 4 << 10
    assert set(s.to_dict()) >= {"models", "tensors", "logical_bytes", "unique_bytes", "stored_bytes", "file_bytes",
                                "blocks", "unique_blocks", "pages", "page_size", "block_bytes", "encoded_bytes", "encodings"}


def test_small_tensors_share_pages_without_padding(raw_store):
    store = raw_store
    # 300 biases of 256 bytes: packed together, not one page (or block) each
    store.add_model("tiny", {f"b{i}": np.full(64, i, np.float32) for i in range(300)})
    s = store.stats()
    assert s.unique_bytes == 300 * 256
    assert s.pages == -(-s.unique_bytes // s.page_size)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_delete_in_any_order_leaves_an_empty_consistent_store(store, order):
    names = [f"m{i}" for i in range(5)]
    for i, n in enumerate(names):
        store.add_model(n, random_model(i % 2))
    for n in (names if order == "forward" else names[::-1]):
        store.delete_model(n)
        assert store.verify().ok
    s = store.stats()
    assert (s.models, s.blocks, s.unique_blocks, s.unique_bytes, s.pages) == (0, 0, 0, 0, 0)
