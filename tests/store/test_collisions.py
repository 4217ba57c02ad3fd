"""Exact dedup confirms a digest match before sharing a block.

MurmurHash3 collisions can be constructed, but not cheaply enough for a test: these
tests make the store's block digest deliberately weak (a digest of the first 64 bytes
only), so that two blocks with equal heads and different tails collide, as a crafted
pair would. Everything else is the real store.
"""

import json

import lmdb
import numpy as np
import pytest
from support import colliding_pair, head_only_digest, head_only_digests

import tensorstore as ts
from tensorstore import catalog as cat


@pytest.fixture
def weak_digest(monkeypatch):
    monkeypatch.setattr("tensorstore.store.block_digests", head_only_digests)
    monkeypatch.setattr("tensorstore.blockwriter.block_digest", head_only_digest)
    monkeypatch.setattr("tensorstore.verify.block_digest", head_only_digest)


def _snapshot(store):
    s = store.stats()
    return (s.models, s.unique_blocks, s.unique_bytes, s.encoded_bytes, s.pages, tuple(store.models()))


@pytest.mark.parametrize("codec", ["raw", "auto"])
def test_a_colliding_block_is_refused_and_the_store_is_unchanged(store_path, weak_digest, codec):
    a, b = colliding_pair()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec=codec) as store:
        store.add_model("a", {"w": a})
        before = _snapshot(store)
        with pytest.raises(ts.HashCollisionError, match="tensor 'w'.*different bytes.*nothing was stored"):
            store.add_model("b", {"w": b})
        assert _snapshot(store) == before
        assert store.load_model("a")["w"].tobytes() == a.tobytes()
        assert store.verify().ok


@pytest.mark.parametrize("codec", ["raw", "auto"])
def test_equal_blocks_are_still_shared(store_path, weak_digest, codec):
    a, _ = colliding_pair()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec=codec) as store:
        store.add_model("a", {"w": a})
        blocks = store.stats().unique_blocks
        store.add_model("copy", {"w": a.copy()})
        assert store.stats().unique_blocks == blocks
        assert store.load_model("copy")["w"].tobytes() == a.tobytes()


def test_encoded_blocks_carry_a_blake3_digest_and_raw_ones_none(store_path):
    a, _ = colliding_pair()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("a", {"packed": np.repeat(a[:16], 64), "raw": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)})
        with store.env.read() as txn:
            records = [cat.decode_block(cat.ID.unpack(k)[0], v) for k, v in txn.cursor(db=store.env.dbs["blocks"])]
    encodings = {b.encoding for b in records}
    assert encodings == {0, 1}, encodings  # one raw, one packed: both kinds checked
    for b in records:
        assert (len(b.strong) == 32) == (b.encoding != 0)


def test_verify_checks_the_blake3_digest(store_path):
    a, _ = colliding_pair()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("a", {"w": np.repeat(a[:16], 64)})
    env = lmdb.open(str(store_path), max_dbs=16, subdir=True)
    blocks_db = env.open_db(b"blocks")
    with env.begin(write=True) as txn:
        (k, v), = list(txn.cursor(db=blocks_db))
        b = cat.decode_block(cat.ID.unpack(k)[0], v)
        txn.put(k, cat.encode_block(cat.BlockRecord(**{**{f: getattr(b, f) for f in b.__slots__}, "strong": bytes(32)})),
                db=blocks_db)
    env.close()
    with ts.open(store_path, "r") as store:
        report = store.verify()
    assert not report.ok and "BLAKE3" in report.problems[0] and "model 'a'" in report.problems[0]


def test_two_colliding_blocks_within_one_add_are_refused(store_path, weak_digest):
    a, b = colliding_pair()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("keep", {"x": np.arange(8, dtype=np.float32)})
        before = _snapshot(store)
        with pytest.raises(ts.HashCollisionError, match="tensor 'w'"):
            store.add_model("b", {"w": np.concatenate([a, b])})
        assert _snapshot(store) == before


def _strip_strong_digests(store_path) -> int:
    """Rewrite every block record as format 2 wrote it: no BLAKE3 digest."""
    env = lmdb.open(str(store_path), max_dbs=16, subdir=True)
    blocks_db, meta = env.open_db(b"blocks"), env.open_db(b"meta")
    stripped = 0
    with env.begin(write=True) as txn:
        for k, v in list(txn.cursor(db=blocks_db)):
            b = cat.decode_block(cat.ID.unpack(k)[0], v)
            stripped += bool(b.strong)
            fields = (b.page_id, b.offset, b.nbytes, b.refs, b.dtype_code, b.domain, b.digest, b.encoding, b.stored, b.ref)
            txn.put(k, cat._seal(cat._BLOCK.pack(*fields)), db=blocks_db)
        fmt = json.loads(txn.get(b"format", db=meta))
        txn.put(b"format", json.dumps(fmt | {"version": 2}).encode(), db=meta)
    env.close()
    return stripped


def test_a_format_2_encoded_block_is_confirmed_by_decoding(store_path, weak_digest):
    a, b = colliding_pair()
    tuned = a + np.float32(1e-4) * np.random.default_rng(2).standard_normal(1024).astype(np.float32)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("a", {"w": a})
        store.add_model("tuned", {"w": tuned})
        assert store.stats().encodings["delta"] == 1
    assert _strip_strong_digests(store_path) == 2  # the packed base and the delta
    with ts.open(store_path, "a") as store:
        before = _snapshot(store)
        with pytest.raises(ts.HashCollisionError):
            store.add_model("b", {"w": b})
        assert _snapshot(store) == before
        store.add_model("copy", {"w": tuned.copy()})  # equal bytes: shared, through a decode
        assert store.stats().unique_blocks == before[1]
        assert store.load_model("copy")["w"].tobytes() == tuned.tobytes()
        assert store.verify().ok
