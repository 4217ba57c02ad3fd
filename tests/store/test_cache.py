"""Loads through the buffer pool (ts.open(..., cache_bytes=N))."""

import threading

import numpy as np
import pytest
from support import random_model

import tensorstore as ts


@pytest.fixture
def family_store(store_path):
    models = {f"m{i}": random_model(i % 3) | {"own": np.full((50, 64), i, np.float32)} for i in range(6)}
    with ts.open(store_path, "w", page_size="16KiB", block_bytes="4KiB") as s:
        for n, m in models.items():
            s.add_model(n, m)
    return store_path, models


def test_loads_through_a_small_pool_are_exact_and_hit(family_store):
    path, models = family_store
    with ts.open(path, "r", cache_bytes="64KiB") as s:
        assert s.cache_stats().pool.requests == 0
        for i in range(30):
            name = f"m{i % 2}"  # two popular models
            out = s.load_model(name)
            assert all(out[k].tobytes() == v.tobytes() for k, v in models[name].items())
        stats = s.cache_stats().pool
        assert stats.requests == 30 and stats.hits > 0 and stats.misses > 0
        assert stats.bytes_loaded <= stats.misses * s.block_bytes  # the pool holds blocks
        assert s.pool.n_frames * s.block_bytes <= 64 * 1024


def test_without_cache_there_are_no_cache_stats(family_store):
    path, _ = family_store
    with ts.open(path, "r") as s:
        assert s.cache_stats().pool is None and s.cache_stats().private_bytes == 0


def test_cache_smaller_than_a_block_is_refused(family_store):
    path, _ = family_store
    with pytest.raises(ts.InvalidArgumentError, match="at least one block"):
        ts.open(path, "r", cache_bytes="1KiB")
    with ts.open(path, "r+") as s:  # the failed open left nothing behind
        s.delete_model("m5")


def test_threads_share_one_pool(family_store):
    path, models = family_store
    errors = []
    with ts.open(path, "r", cache_bytes="48KiB") as s:

        def work(seed):
            rng = np.random.default_rng(seed)
            try:
                for _ in range(25):
                    name = f"m{rng.integers(0, 6)}"
                    out = s.load_model(name)
                    if any(out[k].tobytes() != v.tobytes() for k, v in models[name].items()):
                        errors.append(f"wrong bytes for {name}")
            except Exception as exc:  # surfaced below
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert s.cache_stats().pool.requests == 100


def test_the_pool_follows_changes_to_the_store(family_store):
    path, models = family_store
    with ts.open(path, "a", cache_bytes="64KiB") as s:
        s.load_model("m0")
        s.add_model("m0", {"x": np.arange(10.0)}, replace=True)
        s.repack()
        assert np.array_equal(s.load_model("m0")["x"], np.arange(10.0))
        assert all(s.load_model("m1")[k].tobytes() == v.tobytes() for k, v in models["m1"].items())


def test_the_sharing_map_follows_every_kind_of_change(family_store):
    # Kept between snapshots and reused per model: after replacing, deleting (which
    # compacts pages), repacking and deduplicating it must equal a map built from scratch.
    path, _ = family_store

    def from_scratch(s):
        blocks = s.catalog()["blocks"].to_pylist()
        expected = {}
        for row in blocks:
            expected.setdefault(row["block_id"], set()).add(row["model"])
        return expected

    with ts.open(path, "a", cache_bytes="64KiB") as s:
        changes = [
            lambda: s.add_model("m0", {"x": np.arange(10.0)}, replace=True),
            lambda: s.delete_model("m3"),
            lambda: s.repack(),
            lambda: s.dedup(tolerance=0.5),
        ]
        for change in [lambda: None] + changes:
            change()
            with s.env.read() as txn:
                got = {p: set(names) for p, names in s._sharing(txn).items()}
            assert got == from_scratch(s)


def test_a_warm_pool_serves_encoded_blocks_without_decoding(store_path, monkeypatch):
    from tensorstore import codec

    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal((64, 256)).astype(np.float32)}
    tuned = {"w": base["w"] + np.float32(1e-3) * rng.standard_normal((64, 256)).astype(np.float32)}
    with ts.open(store_path, "w", page_size="16KiB", block_bytes="4KiB") as s:
        s.add_model("base", base)
        s.add_model("tuned", tuned)
        assert s.stats().encodings["delta"] == 16 and s.stats().encodings["packed"] == 16
    decodes = []
    real = codec.decode_many
    monkeypatch.setattr(codec, "decode_many", lambda jobs: decodes.extend(jobs) or real(jobs))
    with ts.open(store_path, "r", cache_bytes="256KiB") as s:
        assert s.load_model("tuned")["w"].tobytes() == tuned["w"].tobytes()
        cold = len(decodes)
        assert cold == 16  # every delta decoded once, against its packed reference
        for _ in range(3):
            assert s.load_model("tuned")["w"].tobytes() == tuned["w"].tobytes()
        assert len(decodes) == cold  # warm: copied from the pool's frames, nothing decoded
        stats = s.cache_stats().pool
        assert stats.hits == 3 * 16 and stats.misses == 16
    with ts.open(store_path, "r") as s:  # without a pool every load decodes
        s.load_model("tuned")
        s.load_model("tuned")
    assert len(decodes) == cold + 32
