"""Dedup domains: blocks are shared only among models of one domain (tenant)."""

import numpy as np
import pytest
from support import random_model

import tensorstore as ts


def test_same_data_is_shared_within_a_domain_and_not_across(store):
    m = random_model(0)
    size = sum(v.nbytes for v in m.values())
    store.add_model("a1", m, domain="tenant-a")
    store.add_model("a2", m, domain="tenant-a")
    assert store.stats().unique_bytes == size
    store.add_model("b1", m, domain="tenant-b")
    assert store.stats().unique_bytes == 2 * size
    tables = store.catalog()
    assert dict(zip(tables["models"]["model"].to_pylist(), tables["models"]["domain"].to_pylist())) == {
        "a1": "tenant-a", "a2": "tenant-a", "b1": "tenant-b"}
    assert len(set(tables["distinct_blocks"]["domain"].to_pylist())) == 2
    store.delete_model("a1")
    store.delete_model("a2")
    assert store.stats().unique_bytes == size
    assert all(np.array_equal(v, m[k]) for k, v in store.load_model("b1").items())
    assert store.verify().ok


def test_a_tenant_cannot_learn_from_size_whether_another_holds_a_block(store_path):
    secret = random_model(7)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        s.add_model("victim", secret, domain="victim")
        before = s.stats()
        s.add_model("probe", secret, domain="attacker")  # same bytes, another tenant
        grew = s.stats().unique_bytes - before.unique_bytes
    with ts.open(store_path.with_name("empty"), "w", page_size="64KiB", block_bytes="4KiB") as e:
        e.add_model("probe", secret, domain="attacker")
        alone = e.stats().unique_bytes
    assert grew == alone  # exactly what it costs when nobody holds the data


def test_near_dup_never_uses_another_domains_block(store):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 64)).astype(np.float32)
    store.add_model("base", {"w": w}, domain="a")
    store.add_model("tuned", {"w": w + 1e-5 * rng.standard_normal(w.shape).astype(np.float32)}, domain="b")
    report = store.dedup(tolerance=0.01)
    assert report.bytes_saved == 0
    store.add_model("tuned-a", {"w": w + 1e-5 * rng.standard_normal(w.shape).astype(np.float32)}, domain="a")
    assert store.dedup("tuned-a", tolerance=0.01).bytes_saved > 0


def test_bad_domain_names(store):
    with pytest.raises(ts.InvalidArgumentError, match="control"):
        store.add_model("m", {"x": np.zeros(3)}, domain="a\nb")
    with pytest.raises(ts.InvalidArgumentError, match="must be a str"):
        store.add_model("m", {"x": np.zeros(3)}, domain=5)
    assert len(store) == 0
