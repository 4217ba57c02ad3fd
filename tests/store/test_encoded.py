"""Encoded blocks (SPEC §4a): packed and delta blocks round-trip bit-exact, references
live as long as a delta needs them, and verify decodes what it checks."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from support import DTYPES, bits, rewrite_block_bytes, snapshot, tensors

import tensorstore as ts
from tensorstore import codec
from tensorstore.dtypes import DTYPES as STORE_DTYPES, layout


# -- the codec alone --------------------------------------------------------------------


@given(name=st.sampled_from(sorted(STORE_DTYPES)), data=st.data())
def test_codec_round_trips_any_bits(name, data):
    """Any bit patterns (NaN payloads, -0.0, subnormals), packed and as a delta (a
    difference, and the XOR that format 3 wrote)."""
    lay = layout(name)
    n = data.draw(st.integers(0, 300)) * lay.width
    block = data.draw(st.binary(min_size=n, max_size=n))
    ref = data.draw(st.binary(min_size=n, max_size=n))
    assert codec.decode(codec.encode(block, lay), n, lay).tobytes() == block
    assert codec.decode(codec.encode(block, lay, ref), n, lay, ref).tobytes() == block
    assert codec.decode(codec.encode(block, lay, ref), n, lay, ref_payload=codec.encode(ref, lay)).tobytes() == block
    xor = codec.encode_xor(block, lay, ref)
    assert codec.decode(xor, n, lay, ref).tobytes() == block
    assert codec.decode(xor, n, lay, ref_payload=codec.encode(ref, lay)).tobytes() == block
    encoding, payload, which = codec.choose(block, lay, [ref])
    if encoding == codec.RAW:
        assert payload is None
    else:
        assert len(payload) <= 0.95 * n
        back = codec.decode(payload, n, lay, ref if encoding == codec.DELTA else None)
        assert back.tobytes() == block


def test_codec_refuses_a_cut_payload():
    lay = layout("F32")
    block = np.linspace(0, 1, 4096, dtype=np.float32).tobytes()
    payload = codec.encode(block, lay)
    for cut in (0, 3, len(payload) // 2, len(payload) - 1):
        with pytest.raises(ValueError):
            codec.decode(payload[:cut], len(block), lay)


def test_a_small_change_is_a_small_delta():
    rng = np.random.default_rng(0)
    base = (rng.standard_normal(16384) * 0.05).astype(np.float32)
    tuned = base + (rng.standard_normal(16384) * 1e-5).astype(np.float32)
    lay = layout("F32")
    delta = codec.encode(tuned.tobytes(), lay, base.tobytes())
    packed = codec.encode(tuned.tobytes(), lay)
    assert len(delta) < 0.8 * len(packed) < 0.8 * tuned.nbytes


@pytest.mark.parametrize("name", ["F32", "BF16", "F16"])
def test_a_delta_is_the_arithmetic_difference_smaller_than_the_xor(name):
    """Weights nudged by small noise: their integer difference keeps its high bytes zero
    where the XOR of a carry sets them (ZipLLM's BitX is the XOR)."""
    rng = np.random.default_rng(1)
    dtype = STORE_DTYPES[name]
    base = (rng.standard_normal(32768) * 0.05).astype(np.float32)
    tuned = (base + rng.standard_normal(32768).astype(np.float32) * 1e-3).astype(dtype)
    base = base.astype(dtype)
    lay = layout(name)
    delta = codec.encode(tuned.tobytes(), lay, base.tobytes())
    assert codec.decode(delta, tuned.nbytes, lay, base.tobytes()).tobytes() == tuned.tobytes()
    assert len(delta) < 0.97 * len(codec.encode_xor(tuned.tobytes(), lay, base.tobytes()))


# -- the store --------------------------------------------------------------------------


def _tuned(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``arr`` with the low byte of about a third of its elements changed: what a light
    fine-tune does to weights, for any dtype."""
    out = np.ascontiguousarray(arr).copy()
    if out.dtype == np.bool_ or out.size == 0:
        return out
    low = out.reshape(-1).view(np.uint8).reshape(out.size, out.dtype.itemsize)[:, 0]
    hit = rng.random(out.size) < 0.3
    low[hit] ^= rng.integers(1, 256, int(hit.sum()), dtype=np.uint8)
    return out


@given(model=st.dictionaries(st.text(min_size=1, max_size=8).filter(str.isprintable), tensors(), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_a_fine_tune_round_trips_through_deltas(tmp_path_factory, model, seed):
    rng = np.random.default_rng(seed)
    tuned = {k: _tuned(v, rng) for k, v in model.items()}
    path = tmp_path_factory.mktemp("enc") / "store"
    with ts.open(path, "w", page_size="16KiB", block_bytes="1KiB") as store:
        store.add_model("base", model)
        store.add_model("tuned", tuned)
        for name, want in (("base", model), ("tuned", tuned)):
            got = store.load_model(name)
            for k, arr in want.items():
                assert got[k].dtype == arr.dtype and got[k].shape == arr.shape and bits(got[k]) == bits(arr)
                assert bits(store.load_tensor(name, k)) == bits(arr)
        assert store.verify().ok
        store.delete_model("base")
        assert all(bits(store.load_model("tuned")[k]) == bits(v) for k, v in tuned.items())
        assert store.verify().ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=st.dictionaries(st.text(min_size=1, max_size=8).filter(str.isprintable), tensors(), min_size=1, max_size=3),
       copies=st.integers(0, 2), run=st.integers(1, 3), ahead=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_runs_of_any_length_store_the_same_blocks(tmp_path_factory, monkeypatch, model, copies, run, ahead, seed):
    """Runs of 1-3 blocks, 0-5 of them encoded ahead of the one being placed, against one
    run per tensor placed as soon as it is encoded: the same distinct blocks, the same
    encoded bytes, the same models."""
    from tensorstore import store as store_module

    model = dict(model) | {f"{k}#copy{c}": v.copy() for c in range(copies) for k, v in model.items()}
    rng = np.random.default_rng(seed)
    tuned = {k: _tuned(v, rng) for k, v in model.items()}
    seen = []
    for batch, runs_ahead in ((run, ahead), (10**6, 0)):
        monkeypatch.setattr(store_module, "_ENCODE_BATCH", batch)
        monkeypatch.setattr(store_module, "_RUNS_AHEAD", runs_ahead)
        path = tmp_path_factory.mktemp("runs") / "store"
        with ts.open(path, "w", page_size="16KiB", block_bytes="256B") as s:
            s.add_model("base", model)
            s.add_model("tuned", tuned)
            st_ = s.stats()
            seen.append((st_.unique_blocks, st_.encoded_bytes, dict(st_.encodings)))
            for name, want in (("base", model), ("tuned", tuned)):
                got = s.load_model(name)
                assert {k: bits(v) for k, v in got.items()} == {k: bits(v) for k, v in want.items()}
    assert seen[0] == seen[1]


def _family(seed: int = 0, rows: int = 256):
    rng = np.random.default_rng(seed)
    base = {
        "embed": (rng.standard_normal((rows, 64)) * 0.05).astype(np.float32),
        "proj": (rng.standard_normal((64, 64)) * 0.05).astype(ml_dtypes.bfloat16),
        "steps": np.arange(100, dtype=np.int64),
    }
    tuned = dict(base)
    tuned["embed"] = base["embed"] + (rng.standard_normal(base["embed"].shape) * 1e-5).astype(np.float32)
    return base, tuned


def test_a_fine_tune_is_stored_as_deltas_of_its_base_found_by_itself(store):
    base, tuned = _family()
    store.add_model("base", base)
    before = store.stats()
    store.add_model("tuned", tuned)  # no base= given
    after = store.stats()
    blocks = store.catalog()["blocks"].to_pylist()
    embed = [r for r in blocks if r["model"] == "tuned" and r["tensor"] == "embed"]
    base_ids = {r["index"]: r["block_id"] for r in blocks if r["model"] == "base" and r["tensor"] == "embed"}
    assert all(r["encoding"] == "delta" and r["ref_block"] == base_ids[r["index"]] for r in embed)
    # the fine-tune's new bytes cost well under its size
    assert after.encoded_bytes - before.encoded_bytes < 0.7 * tuned["embed"].nbytes
    assert after.encodings["delta"] == len(embed)


def test_blocks_repeated_across_runs_are_stored_once(store):
    """A block that repeats one of an earlier run of the same add (runs are 64 blocks,
    several encoded at once; a tensor of 600 blocks of 1 KiB spans ten) is shared, not
    stored again, and so are a delta's copies."""
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((600, 256)).astype(np.float32)
    rows[300] = rows[10]  # the second run repeats a block of the first
    rows[599] = rows[298]  # the third repeats one of the second
    tied = {"a": rows, "b": rows.copy(), "c": rows[:3].copy()}  # whole tensors repeated, runs apart
    with ts.open(store.path.parent / "runs", "w", page_size="64KiB", block_bytes="1KiB") as s:
        s.add_model("m", tied)
        assert s.stats().unique_blocks == 598
        tuned = {k: v + np.float32(1e-4) for k, v in tied.items()}
        s.add_model("tuned", tuned)
        assert s.stats().unique_blocks == 2 * 598
        assert s.stats().encodings["delta"] == 598
        for name, model in (("m", tied), ("tuned", tuned)):
            back = s.load_model(name)
            assert {k: bits(v) for k, v in back.items()} == {k: bits(v) for k, v in model.items()}
        assert s.verify().ok


def test_base_names_the_parent(store):
    base, tuned = _family()
    other = {k: np.zeros_like(v) for k, v in base.items()}
    store.add_model("base", base)
    store.add_model("other", other)
    store.add_model("tuned", tuned, base="other")  # a poor parent, but the one asked for
    rows = [r for r in store.catalog()["blocks"].to_pylist() if r["model"] == "tuned"]
    other_ids = {r["block_id"] for r in store.catalog()["blocks"].to_pylist() if r["model"] == "other"}
    assert not any(r["encoding"] == "delta" and r["ref_block"] not in other_ids for r in rows)
    assert all(bits(store.load_model("tuned")[k]) == bits(v) for k, v in tuned.items())


def test_a_missing_base_is_an_error_and_changes_nothing(store):
    base, tuned = _family()
    store.add_model("base", base)
    before = snapshot(store)
    with pytest.raises(ts.ModelNotFoundError, match="base model 'nope'"):
        store.add_model("tuned", tuned, base="nope")
    with pytest.raises(ts.InvalidArgumentError, match="base model"):
        store.add_model("tuned", tuned, base="")
    assert snapshot(store) == before


def test_references_outlive_their_models_and_go_with_their_last_delta(store):
    base, tuned = _family()
    store.add_model("base", base)
    store.add_model("tuned", tuned)
    store.add_model("tuned2", tuned)  # exact copy: shares the delta blocks
    store.delete_model("base")
    s = store.stats()
    assert s.unique_bytes > sum(v.nbytes for v in tuned.values())  # the references stayed
    for name in ("tuned", "tuned2"):
        assert all(bits(store.load_model(name)[k]) == bits(v) for k, v in tuned.items())
    assert store.verify().ok
    store.delete_model("tuned")
    assert store.verify().ok
    store.delete_model("tuned2")
    s = store.stats()
    assert (s.unique_blocks, s.unique_bytes, s.encoded_bytes, s.pages) == (0, 0, 0, 0)
    assert s.encodings == {"raw": 0, "packed": 0, "delta": 0}
    assert store.verify().ok


def test_replacing_a_model_with_its_own_fine_tune(store):
    base, tuned = _family()
    store.add_model("m", base)
    store.add_model("m", tuned, replace=True)  # the old version is the parent, then released
    assert all(bits(store.load_model("m")[k]) == bits(v) for k, v in tuned.items())
    assert store.verify().ok
    store.delete_model("m")
    assert store.stats().unique_blocks == 0


def test_raw_codec_stores_every_block_as_it_is(store_path):
    base, tuned = _family()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        s = store.stats()
        assert s.encoded_bytes == s.unique_bytes and s.encodings["raw"] == s.unique_blocks
    with ts.open(store_path, "r") as store:  # any handle reads any encoding
        assert bits(store.load_model("tuned")["embed"]) == bits(tuned["embed"])
    with pytest.raises(ts.InvalidArgumentError, match="codec"):
        ts.open(store_path, "r", codec="zip")


def test_loads_through_the_pool_and_reader_decode(store_path):
    base, tuned = _family(rows=1024)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
    with ts.open(store_path, "r", cache_bytes="128KiB") as store:  # smaller than a model
        for _ in range(2):
            assert bits(store.load_model("tuned")["embed"]) == bits(tuned["embed"])
        with store.reader() as r:
            got = r.load_model("tuned")
            assert bits(got["embed"]) == bits(tuned["embed"]) and bits(got["proj"]) == bits(tuned["proj"])
            del got


def test_verify_names_the_models_a_damaged_reference_breaks(store_path):
    base, tuned = _family()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        store.add_model("other", {"x": np.arange(10_000, dtype=np.int32)})
        rows = store.catalog()["blocks"].to_pylist()
        delta = next(r for r in rows if r["model"] == "tuned" and r["encoding"] == "delta")
        ref = delta["ref_block"]
    rewrite_block_bytes(store_path, ref, flip_at=5)
    with ts.open(store_path, "r") as store:
        report = store.verify()
        assert not report.ok
        (problem,) = [p for p in report.problems if f"block {ref} " in p]
        assert "'base'" in problem and "'tuned'" in problem and "'other'" not in problem


def test_verify_catches_a_damaged_delta(store_path):
    base, tuned = _family()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        delta = next(r for r in store.catalog()["blocks"].to_pylist() if r["encoding"] == "delta")
    rewrite_block_bytes(store_path, delta["block_id"], flip_at=delta["stored_bytes"] - 1)
    with ts.open(store_path, "r") as store:
        report = store.verify()
        assert not report.ok and any(f"block {delta['block_id']} " in p and "'tuned'" in p for p in report.problems)


def test_compact_reencodes_a_raw_store_bit_exactly(store_path):
    base, tuned = _family(rows=1024)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        raw = store.stats()
        report = store.compact()
        s = store.stats()
        assert report.encoded_bytes_before == raw.encoded_bytes == raw.unique_bytes
        assert report.encoded_bytes_after == s.encoded_bytes < 0.8 * raw.encoded_bytes
        assert s.encodings["delta"] > 0 and s.unique_bytes == raw.unique_bytes and s.pages < raw.pages
        for name, want in (("base", base), ("tuned", tuned)):
            assert all(bits(store.load_model(name)[k]) == bits(v) for k, v in want.items())
        assert store.verify().ok
        # a second pass finds nothing more to do
        assert store.compact().reencoded_blocks == 0
    with ts.open(store_path, "r") as store:
        with pytest.raises(ts.ReadOnlyError):
            store.compact()


def test_compact_on_an_encoded_store_matches_ingest(store_path):
    base, tuned = _family(rows=1024)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
        ingest = store.stats().encoded_bytes
        store.compact()
        assert store.stats().encoded_bytes <= ingest
        assert store.verify().ok


def test_cli_ls_stats_and_compact_show_encodings(store_path, capsys):
    from tensorstore.cli import main

    base, tuned = _family(rows=1024)
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as store:
        store.add_model("base", base)
        store.add_model("tuned", tuned)
    assert main(["compact", str(store_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoded_bytes_after"] < report["encoded_bytes_before"] and report["reencoded_blocks"] > 0
    assert main(["ls", str(store_path), "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tuned"]["delta_bytes"] > 0 and rows["base"]["delta_bytes"] == 0
    assert rows["tuned"]["delta_bytes"] + rows["tuned"]["packed_bytes"] + rows["tuned"]["raw_bytes"] < rows["tuned"]["private_bytes"]
    assert main(["stats", str(store_path)]) == 0
    assert "encoded bytes" in capsys.readouterr().out
    assert main(["compact", str(store_path / "missing")]) == 1
    assert "no store" in capsys.readouterr().err


COMPACTOR = """
import sys, numpy as np, tensorstore as ts

def tuned(i):  # what model t{i % 3} holds after round i: its metadata says which round
    base = (np.random.default_rng(0).standard_normal((2048, 64)) * 0.05).astype(np.float32)
    return base, base + (np.random.default_rng(i + 1).standard_normal(base.shape) * 1e-5).astype(np.float32)

if __name__ == "__main__":
    path = sys.argv[1]
    for i in range(1000):
        base, w = tuned(i)
        with ts.open(path, "a", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
            if "base" not in s:
                s.add_model("base", {"w": base})
            s.add_model(f"t{i % 3}", {"w": w}, {"round": i}, replace=True)
            print("compacting", flush=True)
            s.compact(time_limit=0.5)
"""


@pytest.mark.parametrize("seed", range(4))
def test_a_process_killed_mid_compact_leaves_a_store_that_verifies(tmp_path, seed):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    path = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-c", COMPACTOR, path], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(1 + seed):
            assert proc.stdout.readline().strip() == "compacting"
        time.sleep(random.Random(seed).uniform(0.0, 0.4))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    namespace: dict = {"__name__": "compactor"}
    exec(COMPACTOR, namespace)  # the writer's own definition of each round's weights
    with ts.open(path, "r") as store:
        report = store.verify()
        assert report.ok, report.problems
        assert bits(store.load_model("base")["w"]) == bits(namespace["tuned"](0)[0])
        for name in store:
            if name != "base":
                i = store.model_info(name).metadata["round"]
                assert bits(store.load_model(name)["w"]) == bits(namespace["tuned"](i)[1])


def test_a_format_1_store_is_read_and_upgraded_when_written(store_path):
    """Stores written before encodings (format 1: shorter block records, no encoded totals)."""
    import lmdb

    from tensorstore import catalog as cat

    base, tuned = _family()
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as store:
        store.add_model("base", base)
    env = lmdb.open(str(store_path), max_dbs=16, subdir=True)
    blocks_db, meta = env.open_db(b"blocks"), env.open_db(b"meta")
    with env.begin(write=True) as txn:
        for k, v in list(txn.cursor(db=blocks_db)):
            b = cat.decode_block(cat.ID.unpack(k)[0], v)
            old = cat._BLOCK_V1.pack(b.page_id, b.offset, b.nbytes, b.refs, b.dtype_code, b.domain, b.digest)
            txn.put(k, cat._seal(old), db=blocks_db)
        fmt = json.loads(txn.get(b"format", db=meta))
        txn.put(b"format", json.dumps(fmt | {"version": 1}).encode(), db=meta)
        state = json.loads(cat._unseal(txn.get(b"state", db=meta), "state"))
        del state["encoded_bytes"], state["encodings"]
        txn.put(b"state", cat._seal(json.dumps(state).encode()), db=meta)
    env.close()
    with ts.open(store_path, "r") as store:
        s = store.stats()
        assert s.encoded_bytes == s.unique_bytes and s.encodings["raw"] == s.unique_blocks
        assert bits(store.load_model("base")["embed"]) == bits(base["embed"]) and store.verify().ok
    with ts.open(store_path, "a") as store:  # written to: the current format from now on
        store.add_model("tuned", tuned)
        assert store.stats().encodings["delta"] > 0 and store.verify().ok
    with ts.open(store_path, "r") as store:
        with store.env.read() as txn:
            assert json.loads(bytes(txn.get(b"format", db=store.env.dbs["meta"])))["version"] == cat.FORMAT_VERSION
        assert bits(store.load_model("tuned")["embed"]) == bits(tuned["embed"])


def test_a_store_of_a_newer_format_is_refused(store_path):
    import lmdb

    with ts.open(store_path, "w") as store:
        store.add_model("m", {"x": np.zeros(3, np.float32)})
    env = lmdb.open(str(store_path), max_dbs=16, subdir=True)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        fmt = json.loads(txn.get(b"format", db=meta))
        txn.put(b"format", json.dumps(fmt | {"version": 99}).encode(), db=meta)
    env.close()
    with pytest.raises(ts.NotAStoreError, match="format version 99.*upgrade"):
        ts.open(store_path, "r")


def test_a_record_with_its_references_changed_keeps_every_other_field():
    """``_with_refs`` builds the record field by field (``dataclasses.replace`` is slow):
    it must carry every field, including ones added later."""
    import dataclasses

    from tensorstore.blockwriter import _with_refs
    from tensorstore.catalog import BlockRecord

    values = {f.name: i + 2 for i, f in enumerate(dataclasses.fields(BlockRecord))}
    values |= {"digest": b"d" * 16, "strong": b"s" * 32}
    b = BlockRecord(**values)
    assert _with_refs(b, 99) == dataclasses.replace(b, refs=99)
