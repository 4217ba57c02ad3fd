"""The catalog is input too: its decoders and its damaged records.

1. Fuzz: ``decode_model``, ``decode_block``, ``decode_page`` and ``StoreState.decode`` get
   random bytes, damaged valid encodings and well-formed framing around random JSON; each
   returns a record of its type or raises ``CorruptionError``, nothing else
   (``TS_FUZZ_EXAMPLES`` hypothesis examples per decoder, default 200).
2. Damaged records in a real store: one bit of a model's catalog record flipped in the
   LMDB file (``TS_CATALOG_FLIPS``, default 300), then ``load_model`` and ``verify()``.
"""

from __future__ import annotations

import json
import random
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import random_model

import tensorstore as ts
from tensorstore import catalog as cat
from reliability_common import BLOCK_BYTES, PAGE_SIZE, env_int, raw_env

_FUZZ = env_int("TS_FUZZ_EXAMPLES", 200)
_SETTINGS = settings(max_examples=_FUZZ, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _valid_encodings() -> dict[str, bytes]:
    """One real record of each kind, as a store writes it (so the fuzz follows format changes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
            s.add_model("m", {"w\u00e9": np.arange(3000, dtype=np.float32), "b": np.int8(3), "e": np.zeros((0, 3), np.float16)}, {"k": [1, "v"]})
        env = raw_env(path, readonly=True)
        try:
            dbs = {n: env.open_db(n, create=False) for n in (b"models", b"blocks", b"pagemeta", b"meta")}
            with env.begin() as txn:

                def first(db: bytes) -> bytes:
                    with txn.cursor(db=dbs[db]) as cur:
                        assert cur.first()
                        return bytes(cur.value())

                return {
                    "model": bytes(txn.get(b"m", db=dbs[b"models"])),
                    "block": first(b"blocks"),
                    "page": first(b"pagemeta"),
                    "state": bytes(txn.get(b"state", db=dbs[b"meta"])),
                }
        finally:
            env.close()


VALID = _valid_encodings()

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _damaged(draw, valid: bytes):
    """A valid encoding with a few bytes changed, cut or added."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif how == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[i:]
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[i]
    return bytes(data)


@st.composite
def _one_flip(draw, valid: bytes):
    """A valid encoding with one bit flipped: what disk rot does, and often still decodes."""
    data = bytearray(valid)
    data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@st.composite
def _framed_model(draw):
    """Right magic and length, then JSON of any shape (sometimes a model-like dict), then ids."""
    if draw(st.booleans()):
        head = draw(_json)
    else:
        tensor = st.fixed_dictionaries({}, optional={k: _json for k in ("name", "dtype", "shape", "nbytes", "step", "blocks")})
        head = draw(st.fixed_dictionaries({"tensors": st.lists(tensor, max_size=3)}, optional={"id": _json, "created": _json, "metadata": _json}))
    text = json.dumps(head).encode()
    n = len(text) if draw(st.integers(0, 3)) else draw(st.integers(0, 2**32 - 1))
    return b"TSM1" + struct.pack("<I", n) + text + draw(st.binary(max_size=64))


@st.composite
def _framed_state(draw):
    keys = [f for f in cat.StoreState.__dataclass_fields__]
    return json.dumps(draw(st.dictionaries(st.sampled_from(keys + ["extra"]), _json, max_size=len(keys)))).encode()


DECODERS = {
    "decode_model": (lambda b: cat.decode_model("m", b), cat.ModelRecord, _framed_model()),
    # A block record has a fixed length: random bytes of exactly that length decode.
    "decode_block": (lambda b: cat.decode_block(1, b), cat.BlockRecord, st.binary(min_size=len(VALID["block"]), max_size=len(VALID["block"]))),
    "decode_page": (lambda b: cat.decode_page(1, b), cat.PageRecord, st.binary(min_size=8, max_size=80)),
    "StoreState.decode": (cat.StoreState.decode, cat.StoreState, _framed_state()),
}
_VALID_OF = {"decode_model": "model", "decode_block": "block", "decode_page": "page", "StoreState.decode": "state"}


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_decoders_raise_only_corruption_error(decoder, counts):
    decode, kind, framed = DECODERS[decoder]
    valid = VALID[_VALID_OF[decoder]]
    assert isinstance(decode(valid), kind)  # the positive control
    tally = {"decoded": 0, "CorruptionError": 0}

    @_SETTINGS
    @given(data=st.one_of(st.binary(max_size=600), _damaged(valid), _one_flip(valid), framed))
    def run(data):
        try:
            record = decode(data)
        except ts.CorruptionError:
            tally["CorruptionError"] += 1
            return
        except BaseException as exc:  # noqa: BLE001 - any other type is the failure
            pytest.fail(f"{decoder}({data!r}) raised {type(exc).__name__}: {exc}")
        assert isinstance(record, kind)
        tally["decoded"] += 1

    run()
    counts(f"{decoder} fuzz examples", f"{sum(tally.values())} {tally}")
    assert tally["CorruptionError"] > 0


# -- damaged model records in a real store ---------------------------------------------

MODEL = random_model(0)


def _put_record(path, value: bytes) -> None:
    env = raw_env(path)
    try:
        db = env.open_db(b"models", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"m", value, db=db)
    finally:
        env.close()


@pytest.fixture(scope="module")
def record_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog") / "store"
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        s.add_model("m", MODEL)
        s.add_model("other", random_model(1))
    env = raw_env(path, readonly=True)
    db = env.open_db(b"models", create=False)
    with env.begin() as txn:
        original = bytes(txn.get(b"m", db=db))
    env.close()
    return path, original


def _outcome(path) -> tuple[str, str]:
    """(what load_model did, what verify did) on the store as it is on disk now."""
    with ts.open(path, "r") as s:
        try:
            got = s.load_model("m")
            same = list(got) == list(MODEL) and all(
                got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes() for k, v in MODEL.items()
            )
            load = "exact" if same else "different"
        except ts.CorruptionError:
            load = "CorruptionError"
        except Exception as exc:  # noqa: BLE001 - recorded; the tests judge it
            load = f"{type(exc).__name__}: {exc}"
        try:
            verify = "ok" if s.verify().ok else "problems"
        except Exception as exc:  # noqa: BLE001
            verify = f"raised {type(exc).__name__}: {exc}"
    return load, verify


@pytest.fixture(scope="module")
def flip_sweep(record_store):
    """Flip one random bit of the model's record, look, put it back; many times."""
    path, original = record_store
    rng = random.Random(7)
    results = []
    for _ in range(env_int("TS_CATALOG_FLIPS", 300)):
        i, bit = rng.randrange(len(original)), rng.randrange(8)
        damaged = bytearray(original)
        damaged[i] ^= 1 << bit
        _put_record(path, bytes(damaged))
        results.append((i, bit, *_outcome(path)))
    _put_record(path, original)
    assert _outcome(path) == ("exact", "ok")
    return results


def _tally(results) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, load, verify in results:
        key = f"load {load.split(':')[0]} / verify {verify.split(':')[0]}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def test_verify_reports_damaged_model_records_without_raising(flip_sweep, counts):
    counts("bit flips in a model's catalog record", len(flip_sweep))
    counts("outcomes", _tally(flip_sweep))
    raised = [r for r in flip_sweep if r[3].startswith("raised")]
    assert raised == [], raised[:3]
    # A record load_model cannot use is always one verify() reports.
    unnoticed = [r for r in flip_sweep if r[2] not in ("exact", "different") and r[3] == "ok"]
    assert unnoticed == [], unnoticed[:3]


def test_load_of_a_damaged_model_record_raises_only_corruption_error(flip_sweep):
    wrong = [r for r in flip_sweep if r[2] not in ("exact", "different", "CorruptionError")]
    assert wrong == [], f"{len(wrong)} of {len(flip_sweep)} flips, e.g. {wrong[:2]}"


@pytest.mark.parametrize("old, new", [(b'"shape":[200,64]', b'"shape":[201,64]'), (b'"dtype":"F32"', b'"dtype":"F06"')])
def test_damaged_shape_or_dtype_raise_corruption_error(record_store, old, new):
    path, original = record_store
    assert original.count(old) >= 1
    head_len = struct.unpack_from("<I", original, 4)[0]
    value = original[:8] + original[8 : 8 + head_len].replace(old, new, 1) + original[8 + head_len :]
    value = value[:4] + struct.pack("<I", head_len + len(new) - len(old)) + value[8:]
    _put_record(path, value)
    try:
        load, verify = _outcome(path)
    finally:
        _put_record(path, original)
    assert verify == "problems"
    assert load == "CorruptionError", load


def test_every_damaging_flip_in_a_model_record_is_detected(flip_sweep, counts):
    silent = [r for r in flip_sweep if r[2] == "different" and r[3] == "ok"]
    counts("flips that changed the loaded model with verify() passing", len(silent))
    assert silent == [], f"{len(silent)} of {len(flip_sweep)} flips, e.g. byte {silent[0][0]}"
