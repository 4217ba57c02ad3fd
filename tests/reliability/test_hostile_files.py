"""Hostile model files: safetensors headers that lie, npz files that carry pickles.

``tensorstore.formats.read_model_file`` must refuse a bad file with ``FileFormatError``:
never another exception type, never a crash, never a huge allocation (the fuzz runs with
the address space capped at 1 GiB above what the process already uses, so an attempted
huge allocation surfaces as a MemoryError and fails the test). A file it accepts must hold
exactly the bytes its header points at. npz pickles are refused and never unpickled: the
payloads below would create a file when unpickled, and the file must not appear.

Fuzz size: ``TS_FUZZ_EXAMPLES`` (default 200) hypothesis examples per strategy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import tensorstore as ts
from reliability_common import env_int
from tensorstore.formats import read_model_file

_FUZZ = env_int("TS_FUZZ_EXAMPLES", 200)
_SETTINGS = settings(max_examples=_FUZZ, deadline=None, database=None, suppress_health_check=list(HealthCheck))
GiB = 1 << 30


@contextlib.contextmanager
def address_space_cap(extra: int = GiB):
    """Cap this process's address space at its current size + ``extra`` for the block."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(hard, vm + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _st_file(path: Path, header: bytes | dict, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _refused(path: Path) -> str:
    """Read ``path``; it must be refused with FileFormatError. Return the message."""
    try:
        read_model_file(path)
    except ts.FileFormatError as exc:
        return str(exc)
    except BaseException as exc:  # noqa: BLE001 - any other type is the failure being tested
        pytest.fail(f"{path.name}: raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
    pytest.fail(f"{path.name}: a lying file was accepted")


def _t(dtype: str, shape: list, start: int, stop: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, stop]}


LYING = {
    "offsets past the end": ({"w": _t("F32", [4], 0, 1 << 20)}, 16, None),
    "end offset one past the data": ({"w": _t("F32", [4], 0, 17)}, 16, None),
    "overlapping tensors": ({"a": _t("F32", [4], 0, 16), "b": _t("F32", [4], 8, 24)}, 24, None),
    "same bytes twice": ({"a": _t("F32", [4], 0, 16), "b": _t("F32", [4], 0, 16)}, 16, None),
    "gap between tensors": ({"a": _t("U8", [4], 4, 8)}, 8, None),
    "reversed offsets": ({"a": _t("U8", [4], 8, 4)}, 8, None),
    "negative offset": ({"a": _t("U8", [4], -4, 0)}, 8, None),
    "shape product overflows int64": ({"w": _t("F32", [2**62, 2**62], 0, 16)}, 16, None),
    "shape product overflows uint64": ({"w": _t("F64", [2**32, 2**32, 2**32], 0, 16)}, 16, None),
    "dimension past int64": ({"w": _t("F32", [2**63 + 5], 0, 16)}, 16, None),
    "dimension past uint64": ({"w": _t("F32", [2**64 + 4], 0, 16)}, 16, None),
    "negative dimension": ({"w": _t("F32", [-4], 0, 16)}, 16, None),
    "huge shape, tiny data": ({"w": _t("F64", [1 << 40], 0, 8)}, 8, None),
    "size disagrees with dtype": ({"w": _t("F64", [4], 0, 16)}, 16, None),
    "size not a multiple of the dtype": ({"w": _t("F32", [3], 0, 14)}, 14, None),
    "unknown dtype": ({"w": _t("Q99", [4], 0, 4)}, 4, None),
    "dtype not a string": ({"w": {"dtype": 7, "shape": [4], "data_offsets": [0, 4]}}, 4, None),
    "shape not a list": ({"w": {"dtype": "U8", "shape": "4", "data_offsets": [0, 4]}}, 4, None),
    "missing data_offsets": ({"w": {"dtype": "U8", "shape": [4]}}, 4, None),
    "three offsets": ({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 2, 4]}}, 4, None),
    "metadata not strings": ({"__metadata__": {"a": {"b": 1}}, "w": _t("U8", [4], 0, 4)}, 4, None),
    "header is a list": (b"[1, 2, 3]", 0, None),
    "header is not JSON": (b"{'w': 1}", 0, None),
    "non-UTF-8 header": (b'{"w\xff\xfe": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', 1, None),
    "header cut short": (b'{"w": {"dtype": "U8", "sha', 0, None),
    "header length larger than the file": ({"w": _t("U8", [4], 0, 4)}, 4, 4096),
    "header length one too large": ({"w": _t("U8", [4], 0, 4)}, 4, "+1"),
    "header length one too small": ({"w": _t("U8", [4], 0, 4)}, 4, "-1"),
    "header length zero": ({"w": _t("U8", [4], 0, 4)}, 4, 0),
    "huge header length": ({"w": _t("U8", [4], 0, 4)}, 4, 2**63),
    "largest header length": ({"w": _t("U8", [4], 0, 4)}, 4, 2**64 - 1),
    "header length 99 MB": ({"w": _t("U8", [4], 0, 4)}, 4, 99_000_000),
    "header length 200 MB": ({"w": _t("U8", [4], 0, 4)}, 4, 200_000_000),
}


@pytest.mark.parametrize("case", list(LYING))
def test_lying_safetensors_headers_are_refused(tmp_path, case):
    header, nbytes, length = LYING[case]
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    if isinstance(length, str):
        length = len(raw) + int(length)
    path = _st_file(tmp_path / "lie.safetensors", raw, bytes(range(256))[:nbytes] * 1, length)
    with address_space_cap():
        message = _refused(path)
    assert "lie.safetensors" in message


@pytest.mark.parametrize("content", [b"", b"\x00", b"\x00" * 7, b"\x00" * 8, b"\xff" * 8, b"\x02\x00\x00\x00\x00\x00\x00\x00{", b"PK\x03\x04"])
def test_truncated_safetensors_are_refused(tmp_path, content):
    path = tmp_path / "short.safetensors"
    path.write_bytes(content)
    with address_space_cap():
        _refused(path)


# -- fuzz: headers built from parts, most of them lies ----------------------------------

_DTYPES = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64", "U64", "F64", "F8_E4M3", "F8_E5M2", "C64", "", "f32", "F32 ", "\u0000"]
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ints = st.one_of(
    st.integers(0, 64),
    st.integers(-(2**65), 2**65),
    st.sampled_from([-1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
)
_json_value = st.recursive(
    st.none() | st.booleans() | _ints | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _entry(draw):
    entry = {
        "dtype": draw(st.sampled_from(_DTYPES)),
        "shape": draw(st.lists(_ints, max_size=4)),
        "data_offsets": draw(st.lists(_ints, min_size=2, max_size=2)),
    }
    if draw(st.integers(0, 9)) == 0:  # a wrong type or a missing key now and then
        key = draw(st.sampled_from(sorted(entry)))
        if draw(st.booleans()):
            del entry[key]
        else:
            entry[key] = draw(_json_value)
    return entry


@st.composite
def _lying_file(draw):
    header = draw(st.dictionaries(st.text(min_size=1, max_size=6), _entry(), max_size=4))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4) | _json_value, max_size=2))
    raw = json.dumps(header).encode()
    how = draw(st.integers(0, 5))
    if how == 1 and raw:  # damage one byte of the JSON
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
    elif how == 2:  # invalid UTF-8 somewhere
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + raw[i:]
    data = draw(st.binary(max_size=256))
    length = len(raw)
    if how == 3:
        length = draw(_ints.filter(lambda n: 0 <= n < 2**64))
    elif how == 4:
        length = len(raw) + draw(st.integers(-8, 8) | st.just(len(data) + 1))
    length = max(0, min(length, 2**64 - 1))
    return struct.pack("<Q", length) + raw + data


@st.composite
def _valid_then_lie(draw):
    """A valid file, then (usually) one lie about it: the near misses a parser can get wrong."""
    n = draw(st.integers(1, 3))
    header, blobs, at = {}, [], 0
    for i in range(n):
        dtype = draw(st.sampled_from(sorted(_ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = _ITEMSIZE[dtype] * int(np.prod(shape, dtype=np.int64))
        header[f"t{i}"] = _t(dtype, shape, at, at + size)
        blobs.append(draw(st.binary(min_size=size, max_size=size)))
        at += size
    data = b"".join(blobs)
    lie = draw(st.sampled_from(["none", "offset", "shape", "dtype", "length", "truncate", "extend"]))
    name = f"t{draw(st.integers(0, n - 1))}"
    if lie == "offset":
        header[name]["data_offsets"][draw(st.integers(0, 1))] += draw(st.integers(-9, 9).filter(bool) | _ints)
    elif lie == "shape":
        header[name]["shape"] = header[name]["shape"] + [draw(_ints.filter(lambda d: d != 1))]
    elif lie == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(_DTYPES).filter(lambda d: _ITEMSIZE.get(d) != _ITEMSIZE[header[name]["dtype"]]))
    raw = json.dumps(header).encode()
    length = len(raw)
    if lie == "length":
        length = max(0, len(raw) + draw(st.integers(-16, 16).filter(bool)))
    elif lie == "truncate":
        assume(data)
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif lie == "extend":
        data = data + draw(st.binary(min_size=1, max_size=16))
    return struct.pack("<Q", length) + raw + data, header, lie


def _read_checked(path: Path):
    try:
        return read_model_file(path)
    except ts.FileFormatError:
        return None
    except BaseException as exc:  # noqa: BLE001
        pytest.fail(f"raised {type(exc).__module__}.{type(exc).__name__} instead of FileFormatError: {exc}")


def test_fuzzed_safetensors_headers(tmp_path, counts):
    path = tmp_path / "fuzz.safetensors"
    tally = {"refused": 0, "accepted": 0}

    @_SETTINGS
    @given(content=_lying_file() | st.binary(max_size=300))
    def run(content):
        path.write_bytes(content)
        got = _read_checked(path)
        if got is None:
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        tensors, _ = got
        assert all(isinstance(a, np.ndarray) for a in tensors.values())
        assert sum(a.nbytes for a in tensors.values()) <= len(content)  # nothing invented

    with address_space_cap():
        run()
    counts("fuzzed safetensors files (built from parts, random bytes)", f"{sum(tally.values())} {tally}")
    assert tally["refused"] > 0


def test_fuzzed_near_valid_safetensors(tmp_path, counts):
    path = tmp_path / "near.safetensors"
    tally: dict[str, int] = {}

    @_SETTINGS
    @given(case=_valid_then_lie())
    def run(case):
        content, header, lie = case
        path.write_bytes(content)
        got = _read_checked(path)
        key = f"{lie}:{'accepted' if got is not None else 'refused'}"
        tally[key] = tally.get(key, 0) + 1
        if lie == "none":  # the honest file must load, exactly
            assert got is not None, "a valid file was refused"
        if got is not None:
            # Whatever was accepted is what the header says, from where it says.
            tensors, _ = got
            body = content[8 + len(json.dumps(header).encode()) :]
            for name, spec in header.items():
                a, b = spec["data_offsets"]
                assert tensors[name].tobytes() == body[a:b], (lie, name)
                assert list(tensors[name].shape) == spec["shape"], (lie, name)

    with address_space_cap():
        run()
    counts("fuzzed near-valid safetensors files (one lie each)", f"{sum(tally.values())} {dict(sorted(tally.items()))}")
    assert tally.get("none:accepted", 0) > 0


# -- npz: pickles are refused, never unpickled ----------------------------------------


class _Trap:
    """Unpickling this creates ``marker`` (a harmless stand-in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_header(descr: str, shape: str) -> bytes:
    text = ("{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


def _pickle_payloads(tmp: Path, marker: str) -> dict[str, Path]:
    trap = _Trap(marker)
    ok = _npy(np.ones(3, np.float32))
    return {
        "object array member": _zip(tmp / "a.npz", {"ok.npy": ok, "evil.npy": _npy(np.array([trap], dtype=object))}),
        "object field in a structured dtype": _zip(tmp / "b.npz", {"evil.npy": _npy(np.array([(trap,)], dtype=[("a", "O")]))}),
        "object header, raw pickle body": _zip(tmp / "c.npz", {"evil.npy": _npy_header("'|O'", "(1,)") + pickle.dumps([trap])}),
        "raw pickle named .npz": (lambda p: (p.write_bytes(pickle.dumps(trap)), p)[1])(tmp / "d.npz"),
        "raw pickle as an npz member": _zip(tmp / "e.npz", {"ok.npy": ok, "evil.npy": pickle.dumps(trap)}),
        "raw pickle member, no .npy suffix": _zip(tmp / "f.npz", {"ok.npy": ok, "evil": pickle.dumps(trap)}),
        "npy file holding a pickle": (lambda p: (p.write_bytes(_npy(np.array([trap], dtype=object))), p)[1])(tmp / "g.npz"),
    }


def test_npz_pickles_are_never_unpickled(tmp_path, counts):
    marker = tmp_path / "UNPICKLED"
    payloads = _pickle_payloads(tmp_path, str(marker))
    # The trap works: plain pickle.loads springs it (so its absence below means something).
    pickle.loads(pickle.dumps(_Trap(str(marker))))
    assert marker.exists()
    marker.unlink()
    refused = 0
    for kind, path in payloads.items():
        try:
            tensors, _ = read_model_file(path)
        except ts.FileFormatError:
            refused += 1
        else:  # whatever is not refused must at least not be an unpickled object
            assert not any(isinstance(v, np.ndarray) and v.dtype.hasobject for v in tensors.values()), kind
        assert not marker.exists(), f"{kind}: the pickle was unpickled"
    counts("npz pickle payloads tried (none unpickled)", f"{len(payloads)}, refused {refused}")
    assert refused >= 5


def test_npz_object_arrays_are_refused_by_name(tmp_path):
    marker = tmp_path / "UNPICKLED"
    for kind in ("object array member", "object field in a structured dtype", "object header, raw pickle body", "raw pickle named .npz", "npy file holding a pickle"):
        path = _pickle_payloads(tmp_path, str(marker))[kind]
        with pytest.raises(ts.FileFormatError, match="pickle|object"):
            read_model_file(path)
        assert not marker.exists()


@pytest.mark.parametrize("kind", ["raw pickle as an npz member", "raw pickle member, no .npy suffix"])
def test_npz_members_that_are_not_arrays_are_refused(tmp_path, kind):
    path = _pickle_payloads(tmp_path, str(tmp_path / "UNPICKLED"))[kind]
    try:
        tensors, _ = read_model_file(path)
    except ts.FileFormatError:
        return
    raise AssertionError(f"accepted; values: {[type(v).__name__ for v in tensors.values()]}")


@pytest.mark.parametrize(
    "shape, body",
    [("(-5,)", 100), ("(1099511627776, 1099511627776)", 100), ("(4,)", 8), ("()", 0), ("(2, 'x')", 0)],
)
def test_npz_with_lying_npy_headers_are_refused(tmp_path, shape, body):
    path = _zip(tmp_path / "lie.npz", {"w.npy": _npy_header("'<f8'", shape) + b"\0" * body})
    with address_space_cap():
        _refused(path)


HUGE_NPZ_REASON = (
    "BUG: an npz member whose .npy header declares 10**13 float64 elements (a 200-byte file) makes "
    "read_model_file raise numpy's MemoryError ('Unable to allocate 72.8 TiB'), not FileFormatError: "
    "np.load allocates the declared size before reading, and formats._read_npz does not catch "
    "MemoryError; `tensorstore add` then dies with a traceback. Repro: zip {'w.npy': npy header "
    "shape (10**13,) + 100 zero bytes}; read_model_file(path)."
)


def test_npz_declaring_a_huge_array_is_refused(tmp_path):
    path = _zip(tmp_path / "huge.npz", {"w.npy": _npy_header("'<f8'", f"({10**13},)") + b"\0" * 100})
    _refused(path)


def test_cli_add_of_an_npz_declaring_a_huge_array_fails_cleanly(tmp_path):
    path = _zip(tmp_path / "huge.npz", {"w.npy": _npy_header("'<f8'", f"({10**13},)") + b"\0" * 100})
    done = subprocess.run([sys.executable, "-m", "tensorstore", "add", str(tmp_path / "store"), str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-500:]


def test_a_valid_file_still_loads(tmp_path):
    # The positive control for everything above: honest files of each kind load exactly.
    w = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    save_file({"w": w}, str(tmp_path / "ok.safetensors"))
    np.savez(tmp_path / "ok.npz", w=w)
    for name in ("ok.safetensors", "ok.npz"):
        with address_space_cap():
            tensors, _ = read_model_file(tmp_path / name)
        assert tensors["w"].tobytes() == w.tobytes() and tensors["w"].shape == w.shape
    assert os.path.getsize(tmp_path / "ok.npz") > 0
