"""Checksums catch damage; the map grows by itself; counters stay consistent."""

import numpy as np
import pytest
from support import random_model

import tensorstore as ts
import tensorstore.environment as environment
from tensorstore.readpath import ReadPath


def _flip_byte_in_page(path, page_id, offset):
    """Flip one byte of a stored page, in place in the LMDB file (as disk rot would)."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=8)
    db = env.open_db(b"pages")
    with env.begin(write=True) as txn:
        key = page_id.to_bytes(8, "big")
        value = bytearray(txn.get(key, db=db))
        value[offset] ^= 0x01
        txn.put(key, bytes(value), db=db)
    env.close()


def test_a_flipped_byte_is_caught_on_read_and_by_verify(store_path):
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        s.add_model("a", random_model(0))
        s.add_model("b", {"other": np.arange(100, dtype=np.float32)})
        page = s.catalog()["blocks"].filter(__import__("pyarrow.compute", fromlist=["x"]).equal(s.catalog()["blocks"]["model"], "a")).column("page_id")[0].as_py()
    _flip_byte_in_page(store_path, page, 100)
    with ts.open(store_path, "r") as s:
        with pytest.raises(ts.CorruptionError, match=f"page {page} failed its checksum; it holds blocks of models 'a'"):
            s.load_model("a")
        report = s.verify()
        assert not report.ok and any(f"page {page}" in p for p in report.problems)
        raw = s.load_model("a", verify=False)  # the damage is real: one value differs
        assert sum(not np.array_equal(raw[k], v) for k, v in random_model(0).items()) == 1


def test_the_map_grows_past_its_initial_size(store_path, monkeypatch):
    monkeypatch.setattr(environment, "_MIN_MAP", 1 << 20)
    big = {"w": np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)}  # 8 MiB
    with ts.open(store_path, "w", page_size="256KiB", block_bytes="64KiB") as s:
        initial = s.env.env.info()["map_size"]
        for i in range(3):
            s.add_model(f"m{i}", {"w": big["w"] + i})
        assert s.env.env.info()["map_size"] > initial
        assert s.stats().unique_bytes == 3 * big["w"].nbytes
        assert np.array_equal(s.load_model("m2")["w"], big["w"] + 2)
        assert s.verify().ok


def test_the_map_grows_when_full_mid_transaction(store_path, monkeypatch):
    # No room was reserved up front: the transaction hits MapFullError, is aborted,
    # the map grows and the whole add runs again.
    monkeypatch.setattr(environment, "_MIN_MAP", 1 << 20)
    monkeypatch.setattr(environment.Environment, "_ensure_room", lambda self, n: None)
    arr = np.random.default_rng(1).standard_normal(1 << 21).astype(np.float32)  # 8 MiB
    with ts.open(store_path, "w") as s:
        s.add_model("m", {"x": arr})
        assert np.array_equal(s.load_model("m")["x"], arr) and s.verify().ok


def test_a_reader_keeps_its_snapshot_while_a_writer_changes_the_store(store_path):
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as w:
        w.add_model("a", random_model(0))
        r = ts.open(store_path, "r")  # a second handle in one process shares the environment
        try:
            with r.env.read() as txn:
                before = r.load_model("a")
                w.delete_model("a")
                w.add_model("a", random_model(1))
                # the snapshot did not move: the old model, whole, from the old pages
                snap = {t.name: ReadPath(r, txn, True).tensor(t) for t in r.record(txn, "a").tensors}
                assert all(np.array_equal(snap[k], v) for k, v in before.items())
            assert np.array_equal(r.load_model("a")["embed.weight"], random_model(1)["embed.weight"])
        finally:
            r.close()


def test_handles_in_one_process_share_the_environment(store_path):
    with ts.open(store_path, "w") as a, ts.open(store_path, "r") as b:
        a.add_model("m", {"x": np.arange(3)})
        assert list(b) == ["m"]
        with pytest.raises(ts.ReadOnlyError):
            b.delete_model("m")
        with pytest.raises(ts.StoreExistsError, match="open in this process"):
            ts.open(store_path, "w")
    with ts.open(store_path, "r") as ro:
        with pytest.raises(ts.ReadOnlyError, match="close those handles"):
            ts.open(store_path, "a")
        assert list(ro) == ["m"]


def _pages(store):
    with store.env.read() as txn:
        return {i: bytes(store.page_file.read(txn, i)) for i in store.page_file.ids(txn)}


def test_a_page_id_names_the_same_bytes_forever(store):
    # Appends to open pages, compaction after deletes and repack all write new page ids.
    seen: dict[int, bytes] = {}
    steps = [
        lambda: store.add_model("a", random_model(0)),
        lambda: store.add_model("b", {"small": np.arange(100, dtype=np.float32)}),
        lambda: store.add_model("c", random_model(1)),
        lambda: store.delete_model("a"),
        lambda: store.add_model("d", {"small": np.arange(300, dtype=np.int16)}),
        lambda: store.add_model("c", random_model(2), replace=True),
        lambda: store.repack(),
        lambda: store.add_model("e", {"x": np.ones(50, np.float64)}),
    ]
    changed_ids = 0
    for step in steps:
        before = set(seen)
        step()
        now = _pages(store)
        for page_id, payload in now.items():
            if page_id in seen:
                assert seen[page_id] == payload, f"page {page_id} changed content under the same id"
            seen[page_id] = payload
        changed_ids += len(before - set(now))
        assert store.verify().ok
    assert changed_ids > 0  # pages really were rewritten along the way


def test_warm_loads_follow_every_change(store):
    # Loads reuse where a model's bytes lie while the store is unchanged; any commit,
    # from this handle or another, must be seen by the next load.
    store.add_model("m", {"x": np.arange(5000, dtype=np.float32)})
    assert store.load_model("m")["x"][0] == 0
    store.add_model("m", {"x": np.arange(5000, dtype=np.float32) + 1}, replace=True)
    assert store.load_model("m")["x"][0] == 1
    store.add_model("filler", random_model(3))
    store.delete_model("m")
    store.add_model("m", {"x": np.full(5000, 7, np.float32)})
    store.repack()
    assert (store.load_model("m")["x"] == 7).all()
    with ts.open(store.path, "r+") as other:
        other.add_model("m", {"x": np.full(5000, 9, np.float32)}, replace=True)
    assert (store.load_model("m")["x"] == 9).all()


def _flip_from_another_process(path, page_id, offset):
    """Damage a page while this process has the store open (LMDB allows one environment
    per file per process: another process writes)."""
    import subprocess
    import sys

    code = f"""
import lmdb
env = lmdb.open({str(path)!r}, max_dbs=8)
db = env.open_db(b"pages")
with env.begin(write=True) as txn:
    key = ({page_id}).to_bytes(8, "big")
    value = bytearray(txn.get(key, db=db))
    value[{offset}] ^= 0x01
    txn.put(key, bytes(value), db=db)
env.close()
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def _a_page_of(s, model):
    import pyarrow.compute as pc

    blocks = s.catalog()["blocks"]
    return blocks.filter(pc.equal(blocks["model"], model)).column("page_id")[0].as_py()


def test_verify_first_checks_a_page_once_per_process_and_always_on_every_read(store_path):
    model = random_model(0)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        s.add_model("a", model)
        page = _a_page_of(s, "a")
    with ts.open(store_path, "r") as s:
        assert all(np.array_equal(v, model[k]) for k, v in s.load_model("a").items())  # checked: first read
        _flip_from_another_process(store_path, page, 100)
        served = s.load_model("a")  # "first": a page id that passed once is not hashed again
        assert sum(not np.array_equal(v, model[k]) for k, v in served.items()) == 1
        with pytest.raises(ts.CorruptionError, match=f"page {page} failed its checksum"):
            s.load_model("a", verify="always")
        with pytest.raises(ts.CorruptionError, match=f"page {page} failed its checksum"):
            with s.reader(verify="always") as r:
                r.load_model("a")


@pytest.mark.parametrize("cache_bytes", [None, "64KiB"])
@pytest.mark.parametrize("verify", [True, "first", "always"])
def test_a_new_handle_checks_what_it_reads_first_through_the_pool_too(store_path, cache_bytes, verify):
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        s.add_model("a", random_model(0))
        page = _a_page_of(s, "a")
    _flip_byte_in_page(store_path, page, 100)
    with ts.open(store_path, "r", cache_bytes=cache_bytes, verify=verify) as s:
        with pytest.raises(ts.CorruptionError, match=f"page {page} failed its checksum"):
            s.load_model("a")
        assert len(s.load_model("a", verify=False)) == len(random_model(0))  # False: nothing checked


def test_verify_takes_only_the_stated_rules(store_path):
    with ts.open(store_path, "w") as s:
        s.add_model("a", {"x": np.zeros(4, np.float32)})
        for bad in ("sometimes", 2, 1.5):
            with pytest.raises(ts.InvalidArgumentError, match="verify must be True, False, 'first', 'always' or 'never'"):
                s.load_model("a", verify=bad)
    with pytest.raises(ts.InvalidArgumentError, match="verify must be"):
        ts.open(store_path, "r", verify="sometimes")
