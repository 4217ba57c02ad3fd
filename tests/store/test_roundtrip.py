"""Round trips are bit-exact for every dtype, shape and memory layout."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tensorstore as ts

DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, ml_dtypes.bfloat16,
          np.int32, np.uint32, np.float32, np.int64, np.uint64, np.float64]


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _random_array(draw, dtype, shape):
    """Arbitrary bit patterns: NaN payloads, -0.0, infinities and subnormals included."""
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * itemsize, max_size=n * itemsize))
    arr = np.frombuffer(raw, dtype=np.uint8).view(dtype) if n else np.zeros(0, dtype)
    if dtype is np.bool_:
        arr = arr.view(np.uint8) % 2 == 1  # a bool array holds only 0 and 1
    return arr.reshape(shape)


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40))
    arr = _random_array(draw, dtype, shape)
    layout = draw(st.sampled_from(["c", "fortran", "strided", "reversed"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif layout == "reversed" and arr.ndim:
        arr = arr[::-1]
    return arr


@given(model=st.dictionaries(st.text(min_size=1, max_size=20).filter(str.isprintable), tensors(), min_size=1, max_size=4))
def test_round_trip_is_bit_exact(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("rt") / "store"
    with ts.open(path, "w", page_size="16KiB", block_bytes="1KiB") as store:
        store.add_model("m", model)
        out = store.load_model("m")
        assert list(out) == list(model)
        for name, arr in model.items():
            got = out[name]
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert _bits(got) == _bits(arr)
            assert _bits(store.load_tensor("m", name)) == _bits(arr)
        assert store.verify().ok


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
