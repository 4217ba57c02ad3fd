"""The compare suite's baselines: each round trip is measured bit for bit, for every dtype."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorstore.bench import baselines

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int64, np.int8, np.uint16, np.bool_,
          ml_dtypes.float8_e4m3fn]


def _random(rng, dtype, shape):
    """Arbitrary bits of ``dtype``: NaN payloads, -0.0, subnormals and infinities included."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(np.bool_).reshape(shape)
    return rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(dtype).reshape(shape)


def _family(seed: int, dtype, changed: float):
    """A base, a fine-tune of it (a fraction of elements changed, a tensor shared whole, a
    tensor of a new shape) and a fine-tune of the fine-tune."""
    rng = np.random.default_rng(seed)
    base = {"a": _random(rng, dtype, (64, 33)), "b": _random(rng, dtype, (17,)), "c": _random(rng, dtype, (5, 3))}

    def tune(parent, rows):
        out = dict(parent)
        a = parent["a"].copy()
        flat = a.reshape(-1).view(np.uint8)
        hit = rng.random(len(flat)) < changed
        # any other byte (a bool stays 0 or 1)
        flat[hit] ^= 1 if a.dtype == np.bool_ else rng.integers(1, 256, hit.sum(), dtype=np.uint8)
        out["a"] = a
        out["c"] = _random(rng, dtype, (rows, 3))  # no tensor of that shape in the parent
        return out

    ft = tune(base, 4)
    return {"base": base, "ft": ft, "ft2": tune(ft, 3)}, {"base": None, "ft": "base", "ft2": "ft"}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), dtype=st.sampled_from(DTYPES), changed=st.sampled_from([0.0, 0.01, 0.3, 1.0]))
def test_zipllm_style_round_trips_every_dtype(seed, dtype, changed):
    family, parents = _family(seed, dtype, changed)
    r = baselines.zipllm_style(family, parents)
    assert r["bit_exact"] is True
    # "b" is shared whole (dedup); "a" of both fine-tunes is XOR-ed with its parent's; each
    # "c" has no same-shaped tensor in its parent
    distinct = baselines.tensor_dedup(family)["distinct_tensors"]
    assert r["delta_tensors"] + r["packed_tensors"] == distinct
    # an "a" equal to an earlier model's (flipping every bool twice gives the base's back) is deduped
    new_a = [n for k, n in enumerate(("base", "ft", "ft2"))
             if k and all(family[n]["a"].tobytes() != family[m]["a"].tobytes() for m in ("base", "ft", "ft2")[:k])]
    assert r["delta_tensors"] == len(new_a)
    assert r["bytes"] <= baselines.tensor_dedup(family)["bytes"] + distinct * 64  # raw planes + small headers


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**20), dtype=st.sampled_from(DTYPES))
def test_tensor_dedup_and_zipnn_dedup_round_trip(seed, dtype):
    family, _ = _family(seed, dtype, 0.05)
    assert baselines.tensor_dedup(family)["bit_exact"] is True
    if baselines.zipnn_available() is None:
        r = baselines.zipnn_tensor_dedup(family)
        assert r["bit_exact"] is True
        assert r["zstd_tensors"] == (0 if np.dtype(dtype).name in ("float32", "float16", "bfloat16") else
                                     baselines.tensor_dedup(family)["distinct_tensors"])


def test_told_the_base_the_xor_leaves_little():
    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal((256, 256)).astype(np.float32)}
    ft = {"w": base["w"].copy()}
    rows = rng.choice(256, 16, replace=False)  # 1/16 of the rows tuned
    ft["w"][rows] += rng.standard_normal((16, 256)).astype(np.float32) * 1e-2
    family = {"base": base, "ft": ft}
    told = baselines.zipllm_style(family, {"base": None, "ft": "base"})
    alone = baselines.zipllm_style(family, {"base": None, "ft": None})
    assert told["bit_exact"] and alone["bit_exact"]
    assert told["delta_tensors"] == 1 and alone["delta_tensors"] == 0
    base_cost = alone["bytes"] / 2  # each alone costs about the same
    assert told["bytes"] - base_cost < 0.2 * base_cost


def test_a_base_must_come_before_its_fine_tunes():
    family, parents = _family(0, np.float32, 0.1)
    reordered = {"ft": family["ft"], "base": family["base"]}
    with pytest.raises(ValueError, match="must be a model listed before it"):
        baselines.zipllm_style(reordered, {"ft": "base", "base": None})
    with pytest.raises(ValueError, match="must be a model listed before it"):
        baselines.zipllm_style({"ft": family["ft"]}, {"ft": "missing"})


@pytest.mark.parametrize("flip", ["bit", "negative zero", "nan payload", "dtype", "missing"])
def test_the_round_trip_check_sees_one_bit(flip):
    a = np.array([0.0, 1.5, np.nan], np.float32)
    family = {"m": {"x": a}}
    other = a.copy()
    if flip == "bit":
        other.view(np.uint32)[1] ^= 1
    elif flip == "negative zero":
        other[0] = -0.0  # equal as numbers, not as bits
    elif flip == "nan payload":
        other.view(np.uint32)[2] ^= 1
    elif flip == "dtype":
        other = a.view(np.int32)
    decoded = {"m": {} if flip == "missing" else {"x": other}}
    assert baselines._family_equal(family, family)
    assert not baselines._family_equal(decoded, family)


def test_file_baselines_round_trip(tmp_path):
    from tensorstore.formats import write_safetensors

    family, _ = _family(1, np.float32, 0.05)
    paths = {}
    for n, tensors in family.items():
        paths[n] = tmp_path / f"{n}.safetensors"
        write_safetensors(paths[n], tensors)
    files = sum(p.stat().st_size for p in paths.values())
    chunks = baselines.chunk_dedup(paths, chunk=4096)
    assert chunks["bit_exact"] and chunks["bytes"] <= files
    z = baselines.zstd_files(paths)
    assert z["bit_exact"] and z["level"] == 3
    if baselines.zipnn_available() is None:
        assert baselines.zipnn_files(paths, family)["bit_exact"]
