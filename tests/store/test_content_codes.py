"""Content codes kept in the store (tensorstore.contentcodes): written with the blocks they
describe, gone with them, filed so that every code within 6 bits is found, made once for a
store written before codes were kept, and checked by verify."""

from __future__ import annotations

import json
import os
import tempfile
import time

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reliability_common import raw_env, worker

import tensorstore as ts
from tensorstore import catalog as cat
from tensorstore import contentcodes as cc

GEOMETRY = dict(page_size="64KiB", block_bytes="4KiB")


def _model(seed: int, rows: int = 96) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {
        "embed": (r.standard_normal((rows, 64)) * 0.05).astype(np.float32),
        "w": (r.standard_normal((64, 64)) * 0.05).astype(np.float16),
        "bias": r.standard_normal(64).astype(np.float32),  # 256 bytes: coded
        "scale": np.ones(8, np.float32),  # 32 bytes: below MIN_CODED_BYTES, never coded
        "steps": np.arange(512, dtype=np.int64),  # not a float: never coded
    }


def _tuned(model: dict[str, np.ndarray], seed: int, prefix: str | None = None) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    out = {}
    for k, v in model.items():
        if v.dtype.kind == "f":
            v = (v.astype(np.float32) * (1 + 1e-3 * r.standard_normal(v.shape))).astype(v.dtype)
        out[k if prefix is None else f"{prefix}/{k}"] = v
    return out


def codes(store) -> dict[int, tuple[tuple, int]]:
    """Every kept code: block id -> (class, code)."""
    with store.env.read() as txn, txn.cursor(db=store.env.dbs[cc.CODES_DB]) as cur:
        return {cat.ID.unpack(bytes(k))[0]: cc.decode_code(cat.ID.unpack(bytes(k))[0], v) for k, v in cur}


def coded_blocks(store) -> set[int]:
    """The blocks that must carry a code: live, not deltas, float, at least MIN_CODED_BYTES."""
    with store.env.read() as txn, txn.cursor(db=store.env.dbs["blocks"]) as cur:
        out = set()
        for k, v in cur:
            b = cat.decode_block(cat.ID.unpack(bytes(k))[0], v)
            if cc.coded(b):
                out.add(b.block_id)
        return out


def index_entries(store) -> int:
    with store.env.read() as txn:
        return txn.stat(store.env.dbs[cc.INDEX_DB])["entries"]


def stale_entries(store) -> set[int]:
    """Ids of the index entries whose block has no code record (freed since)."""
    kept = codes(store)
    with store.env.read() as txn, txn.cursor(db=store.env.dbs[cc.INDEX_DB]) as cur:
        ids = {int.from_bytes(bytes(v)[8:], "little") for v in cur.iternext(keys=False, values=True)}
    return ids - set(kept)


def assert_consistent(store) -> None:
    kept = codes(store)
    assert set(kept) == coded_blocks(store)
    stale = stale_entries(store)
    assert not (stale & coded_blocks(store))  # a stale entry never names a block that is coded
    with store.env.read() as txn, txn.cursor(db=store.env.dbs[cc.INDEX_DB]) as cur:
        per_id: dict[int, int] = {}
        for v in cur.iternext(keys=False, values=True):
            i = int.from_bytes(bytes(v)[8:], "little")
            per_id[i] = per_id.get(i, 0) + 1
    assert all(per_id.get(i) == len(cc.PIECES) for i in kept)  # every code filed under each piece
    report = store.verify()
    assert report.ok, report.problems


def test_codes_are_written_with_their_blocks_and_go_with_them(store_path):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        s.add_model("a", _model(1))
        assert_consistent(s)
        first = codes(s)
        # the classes that are never coded really have blocks in the store
        rows = s.catalog()["blocks"].to_pylist()
        assert {r["tensor"] for r in rows if r["block_id"] not in first} >= {"scale", "steps"}
        assert {r["tensor"] for r in rows if r["block_id"] in first} == {"embed", "w", "bias"}
        s.add_model("b", _tuned(_model(1), 2, "x"))  # renamed: deltas by content, not coded
        assert any(r["encoding"] == "delta" for r in s.catalog()["blocks"].to_pylist() if r["model"] == "b")
        assert_consistent(s)
        s.add_model("c", _model(3))
        assert_consistent(s)
        c_blocks = {r["block_id"] for r in s.catalog()["blocks"].to_pylist() if r["model"] == "c"}
        assert c_blocks & set(codes(s))
        s.delete_model("c")
        assert not (c_blocks & set(codes(s)))  # its blocks' codes went with them
        assert_consistent(s)
        s.delete_model("a")  # "b"'s deltas keep a's blocks alive: their codes stay
        assert set(codes(s)) == set(first)
        assert_consistent(s)
        s.delete_model("b")
        assert codes(s) == {} and index_entries(s) == 0
        assert_consistent(s)


def _leaving_entries_stale(monkeypatch) -> None:
    """Deletes as on a full disk (``Store.delete_model``'s retry): codes go, entries stay."""
    delete = cc.delete
    monkeypatch.setattr(cc, "delete", lambda txn, dbs, block_id, keep_entries=False: delete(txn, dbs, block_id, True))


def test_a_lookup_deletes_the_stale_entries_it_meets_and_never_proposes_them(store_path, monkeypatch):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        base = _model(1, rows=256)
        s.add_model("base", base)
        first = set(codes(s))
        _leaving_entries_stale(monkeypatch)
        s.delete_model("base")
        monkeypatch.undo()
        assert stale_entries(s) == first  # freed: code records gone, index entries not
        assert_consistent(s)  # verify allows them
        s.add_model("tuned", _tuned(base, 2, "renamed"))  # its lookups land on the stale entries
        assert stale_entries(s) == set()
        assert not [r for r in s.catalog()["blocks"].to_pylist() if r["encoding"] == "delta"]  # nothing to refer to
        assert_consistent(s)


def test_compact_deletes_every_stale_entry(store_path, monkeypatch):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        s.add_model("keep", _model(2))
        s.add_model("gone", _model(3))
        _leaving_entries_stale(monkeypatch)
        s.delete_model("gone")
        monkeypatch.undo()
        assert stale_entries(s)
        s.compact(time_limit=1)
        assert not stale_entries(s) and index_entries(s) == len(cc.PIECES) * len(codes(s))
        assert_consistent(s)


def test_replacing_a_model_moves_the_codes_to_its_new_blocks(store_path):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        s.add_model("a", _model(1))
        old = set(codes(s))
        s.add_model("a", _model(2), replace=True)
        assert not (old & set(codes(s))) and codes(s)
        assert_consistent(s)


def test_compact_drops_the_codes_of_blocks_it_makes_deltas(store_path):
    with ts.open(store_path, "w", codec="raw", **GEOMETRY) as s:
        s.add_model("base", _model(1))
        s.add_model("tuned", _tuned(_model(1), 2))
        before = set(codes(s))
        assert before == coded_blocks(s)  # raw blocks are coded too
    with ts.open(store_path, "r+", **GEOMETRY) as s:
        report = s.compact(time_limit=2)
        assert report.encodings_after["delta"] > 0
        after = set(codes(s))
        assert after < before
        assert_consistent(s)


def test_a_crash_inside_an_add_rolls_back_blocks_and_codes_together(store_path):
    """An add that fails after its blocks were placed (a late error inside the
    transaction) leaves neither blocks nor codes."""
    with ts.open(store_path, "w", **GEOMETRY) as s:
        s.add_model("a", _model(1))
        before = codes(s)
        with pytest.raises(ts.InvalidArgumentError):
            s.add_model("b", _model(2), files={"../escape": b"x"})  # rejected before the transaction
        model = _model(3)
        model["bad"] = np.zeros((2, 2), dtype=object)
        with pytest.raises(ts.InvalidTensorError):
            s.add_model("c", model)
        assert codes(s) == before
        assert_consistent(s)


# -- the multi-index hash finds exactly the codes within 6 bits --------------------------


def _flip(code: int, bits: list[int]) -> int:
    for b in bits:
        code ^= 1 << b
    return code


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.integers(0, 12), min_size=1, max_size=30),
       layout=st.sampled_from([cc.LAYOUT, cc.Layout((16, 16, 16, 16), 1), cc.Layout((8,) * 8, 0), cc.Layout((16, 16, 16, 16), 0)]),
       data=st.data())
def test_search_finds_every_code_within_the_reach_and_no_other(tmp_path, seed, flips, layout, data):
    radius = data.draw(st.integers(0, layout.reach), label="radius")
    rng = np.random.default_rng(seed)
    query = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
    # codes at chosen distances from the query (bits anywhere), and unrelated ones
    stored = [_flip(query, rng.choice(64, size=d, replace=False).tolist()) for d in flips]
    stored += [int(x) for x in rng.integers(0, 2**63, size=20, dtype=np.int64)]
    cls = (0, cc.FLOAT_DTYPES and next(iter(cc.FLOAT_DTYPES)), 4096)
    env = lmdb.open(tempfile.mkdtemp(dir=tmp_path), max_dbs=3, map_size=1 << 26)  # one per example
    dbs = {cc.CODES_DB: env.open_db(cc.CODES_DB.encode()),
           cc.INDEX_DB: env.open_db(cc.INDEX_DB.encode(), dupsort=True, dupfixed=True)}
    with env.begin(write=True) as txn:
        cc.put_many(txn, dbs, [(i, cls, code) for i, code in enumerate(stored, start=1)], layout)
    with env.begin() as txn:
        q = np.array([query], dtype=np.uint64)
        (got,) = cc.search(txn, dbs, cls, q, radius, k=len(stored), layout=layout)
        (nearest,) = cc.search(txn, dbs, cls, q, radius, k=3, layout=layout)
        (other,) = cc.search(txn, dbs, (1,) + cls[1:], q, radius, k=3, layout=layout)
    env.close()
    dist = {i: bin(code ^ query).count("1") for i, code in enumerate(stored, start=1)}
    want = sorted((d, i) for i, d in dist.items() if d <= radius)
    assert got == [i for _, i in want]  # all of them, nearest first, then oldest
    assert nearest == got[:3]
    assert other == []  # another class (domain) shares nothing


def test_search_refuses_a_radius_the_pieces_cannot_guarantee():
    assert cc.MAX_FOUND == 6 and cc.Layout((16, 16, 16, 16), 1).reach == 7
    with pytest.raises(ValueError, match="pieces"):
        cc.Layout((32, 32), 0)
    with pytest.raises(ValueError, match="max_distance"):
        cc.search(None, {}, (0, 0, 0), np.zeros(1, np.uint64), cc.MAX_FOUND + 1, 3)


# -- stores written before codes were kept --------------------------------------------------


def make_legacy(path) -> None:
    """Turn a store into what a format-4 library left: no code tables, no marker."""
    env = raw_env(path)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        for name, flags in ((cc.CODES_DB, {}), (cc.INDEX_DB, {"dupsort": True, "dupfixed": True})):
            txn.drop(env.open_db(name.encode(), txn=txn, **flags), delete=True)
        txn.delete(cc.MARKER_KEY, db=meta)
        fmt = json.loads(bytes(txn.get(b"format", db=meta)))
        txn.put(b"format", json.dumps(fmt | {"version": 4}).encode(), db=meta)
    env.close()


def _family(store) -> dict[str, dict]:
    base = _model(1, rows=256)
    models = {"base": base, "other": _model(7, rows=256)}
    for name, model in models.items():
        store.add_model(name, model)
    return models


def test_a_store_without_codes_is_coded_once_by_the_first_add_that_looks_up(store_path):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        models = _family(s)
        want = coded_blocks(s)
    make_legacy(store_path)
    with ts.open(store_path, "r", **GEOMETRY) as s:  # read-only: readable, verifies, no tables
        assert cc.CODES_DB not in s.env.dbs
        assert s.verify().ok and s.load_model("base")["embed"].tobytes() == models["base"]["embed"].tobytes()
    with ts.open(store_path, "a", content_refs=False, **GEOMETRY) as s:
        assert cc.pending(s)
        s.add_model("c", _model(3))  # content refs off: no backfill, but new blocks get codes
        assert cc.pending(s) and set(codes(s)) == coded_blocks(s) - want
        assert s.verify().ok  # the old blocks lie in the marker's range: not yet a problem
    with ts.open(store_path, "a", **GEOMETRY) as s:
        s.add_model("tuned", _tuned(models["base"], 5, "renamed"))
        assert not cc.pending(s)
        assert_consistent(s)
        tuned = [r for r in s.catalog()["blocks"].to_pylist() if r["model"] == "tuned"]
        deltas = [r for r in tuned if r["encoding"] == "delta"]
        assert len(deltas) >= 0.8 * len([r for r in tuned if r["tensor"] != "renamed/steps"])


def test_backfill_resumes_after_a_kill_and_every_step_leaves_a_store_that_verifies(store_path):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        for i in range(6):
            s.add_model(f"m{i}", _model(10 + i, rows=512))
        want = coded_blocks(s)
    make_legacy(store_path)
    starts = []
    for attempt in range(40):
        w = worker("slow_backfill", store_path, 3, 0.01)  # kills land mid-backfill
        w.expect("ready")
        time.sleep(0.05 + 0.05 * (attempt % 4))
        w.kill()
        with ts.open(store_path, "r") as s:
            report = s.verify()
            assert report.ok, report.problems
            with s.env.read() as txn:
                m = cc.read_marker(txn, s.env.dbs)
            if m is not None:
                starts.append(m.todo_start)
                kept = set(codes(s))
                # coded: exactly the eligible blocks below the marker's start
                assert kept == {i for i in want if i < m.todo_start or i >= m.todo_end}
                if m.complete:
                    break
    assert starts == sorted(starts)  # never goes back
    assert len(set(starts)) >= 3  # killed mid-way several times, resumed each time
    with ts.open(store_path, "a") as s:
        cc.backfill(s)
        assert not cc.pending(s) and set(codes(s)) == want
        assert_consistent(s)


def test_codes_of_another_projection_are_made_again(store_path):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        models = _family(s)
        with s.env.read() as txn:
            m = cc.read_marker(txn, s.env.dbs)
        s.env.write(lambda txn: cc.write_marker(txn, s.env.dbs, cc.Marker("0" * 16, m.todo_start, m.todo_end)))
        assert cc.pending(s)
        s.add_model("tuned", _tuned(models["base"], 5, "renamed"))
        assert not cc.pending(s)
        assert_consistent(s)
        assert any(r["encoding"] == "delta" for r in s.catalog()["blocks"].to_pylist() if r["model"] == "tuned")


# -- verify ------------------------------------------------------------------------------------


def _tamper(path, change) -> None:
    env = raw_env(path)
    with env.begin(write=True) as txn:
        dbs = {cc.CODES_DB: env.open_db(cc.CODES_DB.encode(), txn=txn),
               cc.INDEX_DB: env.open_db(cc.INDEX_DB.encode(), txn=txn, dupsort=True, dupfixed=True)}
        change(txn, dbs)
    env.close()


@pytest.mark.parametrize("damage, message", [
    ("drop", "has no content code"),
    ("dangling", "not stored (a dangling code)"),
    ("unfiled", "missing from the content index"),
    ("garbled", "failed its checksum"),
])
def test_verify_names_a_missing_dangling_or_damaged_code(store_path, damage, message):
    with ts.open(store_path, "w", **GEOMETRY) as s:
        s.add_model("a", _model(1))
        victim, (cls, code) = next(iter(codes(s).items()))

    def change(txn, dbs):
        if damage == "drop":
            cc.delete(txn, dbs, victim)
        elif damage == "dangling":
            cc.put(txn, dbs, 10**9, cls, code ^ 1)
        elif damage == "unfiled":
            key = cc._index_keys(cls, code)[3]
            txn.delete(key, cc._entry(code, victim), db=dbs[cc.INDEX_DB])
        else:
            value = bytearray(txn.get(cat.id_key(victim), db=dbs[cc.CODES_DB]))
            value[0] ^= 0xFF
            txn.put(cat.id_key(victim), bytes(value), db=dbs[cc.CODES_DB])

    _tamper(store_path, change)
    with ts.open(store_path, "r") as s:
        report = s.verify()
    assert not report.ok and any(message in p for p in report.problems), report.problems


def test_a_damaged_index_entry_costs_a_proposal_not_the_add(store_path):
    """An index entry naming a block that is gone is skipped by the lookup."""
    with ts.open(store_path, "w", **GEOMETRY) as s:
        base = _model(1)
        s.add_model("base", base)
        victim, (cls, code) = next((i, v) for i, v in codes(s).items() if v[0][2] == 4096)

    _tamper(store_path, lambda txn, dbs: cc.put(txn, dbs, 10**9, cls, code))  # nearest of all: distance 0
    with ts.open(store_path, "a") as s:
        s.add_model("tuned", _tuned(base, 2, "x"))
        assert any(r["encoding"] == "delta" for r in s.catalog()["blocks"].to_pylist() if r["model"] == "tuned")
        assert 10**9 not in {r["ref_block"] for r in s.catalog()["blocks"].to_pylist()}


# -- random sequences of adds, replaces, deletes --------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "tuned", "renamed", "delete"]), st.integers(0, 3),
                              st.integers(0, 4)), min_size=1, max_size=8),
       codec=st.sampled_from(["auto", "raw"]))
def test_any_sequence_of_changes_keeps_codes_and_blocks_in_step(tmp_path_factory, ops, codec):
    path = tmp_path_factory.mktemp("codes") / "store"
    with ts.open(path, "w", codec=codec, **GEOMETRY) as s:
        for op, slot, seed in ops:
            name = f"m{slot}"
            if op == "delete":
                if name in s:
                    s.delete_model(name)
                continue
            model = _model(seed, rows=64 + 32 * seed)
            if op != "add":
                model = _tuned(model, seed + 100, "r" if op == "renamed" else None)
            s.add_model(name, model, replace=True)
        assert_consistent(s)


# -- SIGKILL mid-write ---------------------------------------------------------------------------


def test_sigkill_mid_write_never_leaves_a_code_without_its_block_or_a_block_without_its_code(tmp_path):
    kills = int(os.environ.get("TS_KILL_POINTS", "10"))
    path = tmp_path / "store"
    rng = np.random.default_rng(99)
    seen_deltas = False
    for i in range(kills):
        w = worker("content_writer", path, i)  # adds, replaces, deletes, compacts until killed
        w.expect("ready")
        time.sleep(float(rng.uniform(0.05, 1.2)))
        w.kill()
        with ts.open(path, "r") as s:
            assert_consistent(s)
            seen_deltas |= s.stats().encodings["delta"] > 0
    assert seen_deltas  # the writer got far enough to store renamed fine-tunes as deltas


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(64, 5000), bad=st.lists(st.integers(0, 4999), max_size=5),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_a_non_finite_element_codes_as_zero_and_leaves_other_rows_alone(seed, n, bad, value, dtype):
    r = np.random.default_rng(seed)
    clean = r.standard_normal(n).astype(dtype)
    other = r.standard_normal(n).astype(dtype)
    dirty, zeroed = clean.copy(), clean.copy()
    for i in bad:
        dirty[i % n], zeroed[i % n] = value, 0
    code_of = {np.float16: "F16", np.float32: "F32", np.float64: "F64"}
    from tensorstore.dtypes import DTYPE_CODES

    got = cc.codes_of([dirty.tobytes(), other.tobytes()], DTYPE_CODES[code_of[dtype]])
    want = cc.codes_of([zeroed.tobytes(), other.tobytes()], DTYPE_CODES[code_of[dtype]])
    # the sample may miss the bad elements; either way the code is that of the zeroed block
    assert got.tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"]), count=st.integers(0, 6),
       elements=st.integers(1, 5000), data=st.data())
def test_vectors_gathered_by_the_kernel_are_numpys(name, count, elements, data):
    """The C kernel's gather and one cast against numpy's sampling block by block: the
    same float32 vectors, bit for bit, for every float dtype, any length, any bits (NaN,
    infinities, float64 past float32's range)."""
    from tensorstore import codec
    from tensorstore.dtypes import DTYPE_CODES, DTYPES

    if codec.KERNEL is None:
        pytest.skip("the C kernel is not built")
    n = elements * DTYPES[name].itemsize
    seed = data.draw(st.integers(0, 2**32 - 1))
    blocks = [np.random.default_rng(seed + i).bytes(n) for i in range(count)]
    if name == "F64" and blocks:
        blocks[0] = np.full(elements, 1e300).tobytes()
    kernel = cc.vectors(blocks, DTYPE_CODES[name])
    saved, codec.KERNEL = codec.KERNEL, None
    try:
        numpy_ = cc.vectors(blocks, DTYPE_CODES[name])
    finally:
        codec.KERNEL = saved
    assert kernel.shape == numpy_.shape == (count, cc.VECTOR_DIM)
    assert kernel.view(np.uint32).tolist() == numpy_.view(np.uint32).tolist()
