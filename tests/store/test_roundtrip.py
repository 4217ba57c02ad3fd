"""Round trips are bit-exact for every dtype, shape and memory layout."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from support import bits, tensors

import tensorstore as ts

MODELS = st.dictionaries(st.text(min_size=1, max_size=20).filter(str.isprintable), tensors(), min_size=1, max_size=4)


def round_trip_is_bit_exact(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("rt") / "store"
    with ts.open(path, "w", page_size="16KiB", block_bytes="1KiB") as store:
        store.add_model("m", model)
        out = store.load_model("m")
        assert list(out) == list(model)
        for name, arr in model.items():
            got = out[name]
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert bits(got) == bits(arr)
            assert bits(store.load_tensor("m", name)) == bits(arr)
        assert store.verify().ok


# The same property twice: a few examples in every run, many in the slow soak (make bench).
test_round_trip_is_bit_exact = settings(max_examples=25)(given(model=MODELS)(round_trip_is_bit_exact))
test_round_trip_is_bit_exact_soak = pytest.mark.slow(settings(max_examples=400)(given(model=MODELS)(round_trip_is_bit_exact)))


def test_nan_payloads_and_negative_zero_survive(store):
    payloads = np.array([0x7FC00001, 0x7F800001, 0xFFC12345, 0x80000000, 0x00000001], dtype=np.uint32)
    floats = payloads.view(np.float32)
    store.add_model("m", {"x": floats})
    assert store.load_model("m")["x"].view(np.uint32).tolist() == payloads.tolist()


def test_big_endian_input_is_stored_by_value(store):
    be = np.arange(1000, dtype=">f4")
    store.add_model("m", {"x": be})
    out = store.load_model("m")["x"]
    assert out.dtype == np.dtype("=f4")
    assert np.array_equal(out, be)


def test_loaded_arrays_are_private_and_writable(store):
    a = np.arange(5000, dtype=np.float32)
    store.add_model("a", {"x": a})
    store.add_model("b", {"x": a})
    x = store.load_model("a")["x"]
    x[:] = -1  # must not change what the store or another model holds
    assert np.array_equal(store.load_model("b")["x"], a)
    assert np.array_equal(store.load_model("a")["x"], a)


@pytest.mark.parametrize("value", [np.float32(1.5), np.int8(-3), np.bool_(True)])
def test_numpy_scalars_round_trip_as_0d(store, value):
    store.add_model("m", {"s": value})
    out = store.load_model("m")["s"]
    assert out.shape == () and out.dtype == np.asarray(value).dtype and out == value


def test_blocks_found_stored_leave_no_bytes_in_the_page(raw_store):
    """A block is copied into the free space of the page it would go to before it is hashed;
    one found stored already must neither take that space nor leave its bytes there."""
    store = raw_store  # the copy-before-hash path is the raw codec's
    rng = np.random.default_rng(1)
    a = rng.standard_normal(3000).astype(np.float32)  # 12000 bytes: blocks of 4096, 4096, 3808
    b = rng.standard_normal(1000).astype(np.float32)  # 4000 bytes
    d = rng.standard_normal(500).astype(np.float32)  # 2000 bytes
    store.add_model("m", {"a": a, "a again": a.copy(), "b": b})
    # "c" is new and opens the page; "a" is then copied to its free space and found stored;
    # "d" must land where "a" was copied.
    n = {"c": -b, "a": a, "d": d}
    store.add_model("n", n)
    blocks = store.catalog()["blocks"].to_pylist()
    offsets = {(r["model"], r["tensor"], r["index"]): r["offset"] for r in blocks}
    assert offsets[("n", "c", 0)] == 16000 and offsets[("n", "d", 0)] == 20000
    (page,) = store.catalog()["pages"].to_pylist()
    assert page["used_bytes"] == page["live_bytes"] == 22000 == store.stats().unique_bytes
    with store.env.read() as txn:
        payload = bytes(store.page_file.read(txn, page["page_id"]))
    assert payload[22000:] == bytes(len(payload) - 22000)
    out = store.load_model("n")
    assert all(bits(out[k]) == bits(v) for k, v in n.items())
    assert bits(store.load_model("m")["a again"]) == bits(a)
    assert store.verify().ok
