"""Every bad input gets a clear error naming what is wrong, and the store stays as it was."""

import numpy as np
import pytest
from support import random_model, snapshot

import tensorstore as ts


@pytest.fixture
def filled(store):
    store.add_model("base", random_model(0))
    return store


def _rejects(store, error, match, call):
    before = snapshot(store)
    with pytest.raises(error, match=match):
        call()
    assert snapshot(store) == before
    assert store.verify().ok


@pytest.mark.parametrize(
    "value, match",
    [
        ([1.0, 2.0], "list, not an array"),
        ("weights", "str, not an array"),
        (None, "NoneType, not an array"),
        ({"a": 1}, "dict, not an array"),
    ],
)
def test_values_that_are_not_arrays(filled, value, match):
    good = np.ones(10, np.float32)
    _rejects(filled, ts.InvalidTensorError, match, lambda: filled.add_model("m", {"ok": good, "bad": value}))


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.array([object(), 1], dtype=object), "Python objects"),
        (np.array(["a", "b"]), "strings"),
        (np.array([b"a"]), "strings"),
        (np.zeros(3, dtype="datetime64[s]"), "dates"),
    ],
)
def test_object_and_string_dtypes(filled, arr, match):
    _rejects(filled, ts.InvalidTensorError, match, lambda: filled.add_model("m", {"x": arr}))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.longdouble, np.dtype([("a", "<f4"), ("b", "<i4")])])
def test_unsupported_dtypes(filled, dtype):
    if np.dtype(dtype) == np.dtype(np.float64):  # longdouble is float64 on some platforms
        pytest.skip("longdouble is float64 here")
    _rejects(filled, ts.InvalidTensorError, "not supported", lambda: filled.add_model("m", {"x": np.zeros(4, dtype)}))


@pytest.mark.parametrize(
    "tensors, match",
    [
        ({"": np.zeros(3)}, "must not be empty"),
        ({"a\x00b": np.zeros(3)}, "control character"),
        ([("w", np.zeros(3)), ("w", np.ones(3))], "appears twice"),
        ({}, "at least one tensor"),
        (np.zeros(3), "mapping"),
        ({3: np.zeros(3)}, "must be a str"),
    ],
)
def test_bad_tensor_names_and_containers(filled, tensors, match):
    _rejects(filled, ts.InvalidTensorError, match, lambda: filled.add_model("m", tensors))


@pytest.mark.parametrize("name, match", [("", "must not be empty"), ("x" * 300, "at most 256"), ("a\nb", "control"), (7, "must be a str")])
def test_bad_model_names(filled, name, match):
    _rejects(filled, ts.InvalidArgumentError, match, lambda: filled.add_model(name, {"x": np.zeros(3)}))


def test_adding_an_existing_name_needs_replace(filled):
    _rejects(filled, ts.ModelExistsError, "replace=True", lambda: filled.add_model("base", random_model(5)))
    assert isinstance(ts.ModelExistsError("x"), KeyError)


def test_metadata_must_be_json(filled):
    _rejects(filled, ts.InvalidArgumentError, "JSON", lambda: filled.add_model("m", {"x": np.zeros(3)}, metadata={"f": object()}))


def test_unknown_model_and_tensor(filled):
    with pytest.raises(KeyError, match="no model 'nope'"):
        filled.load_model("nope")
    with pytest.raises(ts.ModelNotFoundError):
        filled.delete_model("nope")
    with pytest.raises(ts.TensorNotFoundError, match="no tensor 'nope'"):
        filled.load_tensor("base", "nope")
    assert filled.verify().ok


def test_every_write_to_a_read_only_store_is_refused(store_path):
    with ts.open(store_path, "w") as s:
        s.add_model("base", random_model(0))
    content = (store_path / "data.mdb").read_bytes()
    mtime = (store_path / "data.mdb").stat().st_mtime_ns
    with ts.open(store_path, "r") as ro:
        for call in (
            lambda: ro.add_model("m", {"x": np.zeros(3)}),
            lambda: ro.add_model("base", random_model(1), replace=True),
            lambda: ro.delete_model("base"),
        ):
            with pytest.raises(ts.ReadOnlyError, match="read-only"):
                call()
        assert isinstance(ts.ReadOnlyError("x"), PermissionError)
        assert list(ro) == ["base"]
    assert (store_path / "data.mdb").read_bytes() == content
    assert (store_path / "data.mdb").stat().st_mtime_ns == mtime


def test_a_closed_store_says_so(store_path):
    s = ts.open(store_path, "w")
    s.close()
    with pytest.raises(ts.StoreClosedError, match="closed"):
        s.load_model("x")
