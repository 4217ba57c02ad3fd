"""Hostile model and tensor names: stored and returned exactly, or refused cleanly.

A name is either kept byte for byte (listed, loaded, in the catalog, deleted by that exact
name, never confused with a look-alike) or refused with a ``StoreError`` subclass, leaving
the store exactly as it was (``support.snapshot``). Names are LMDB keys and JSON strings,
never paths, so path tricks must have no effect on the file system. A curated list, then
hypothesis over arbitrary text (``TS_FUZZ_EXAMPLES``, default 200 per target).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import random_model, snapshot

import tensorstore as ts
from reliability_common import BLOCK_BYTES, PAGE_SIZE, env_int

HOSTILE = [
    # path separators and traversal
    "a/b", "a\\b", "/", "/etc/passwd", "../../../../tmp/ts-reliability-evil", "..", ".", "./x", "C:\\Windows\\x", "//server/share",
    "ａ／ｂ", "a\u2215b",  # fullwidth and division-slash look-alikes of "/"
    # control characters (C0, DEL, C1) and terminal escapes
    "\x00", "a\x00b", "\n", "x\r\n", "\t", "\x1b[31mred\x1b[0m", "\x7f", "\x85", "\x9b",
    # Unicode: combining marks, precomposed look-alike, zalgo, RTL text and override, emoji
    "e\u0301", "\u00e9", "Z\u0334\u0321\u031ba\u0336l\u0338g\u0337o", "\u05e9\u05dc\u05d5\u05dd", "\u0627\u0644\u0633\u0644\u0627\u0645",
    "\u202eexe.txt", "a\u200db", "a\u200bb", "\ufeffbom", "\u2028", "\u2029", "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467",
    "\U0001F1EB\U0001F1F7", "\uffff", "\ufffe", "\U0010FFFF", "\ue000", "\u0130", "\u0131", "ß", "ẞ",
    # lone surrogates (not encodable as UTF-8) and surrogateescape bytes
    "\ud800", "\udfff", "a\udc80b", "\ud83d",
    # whitespace-only, format strings, injection-shaped text
    " ", "   ", "%s%n%x", "{0}{1}", "' OR 1=1 --", "<script>alert(1)</script>", "${HOME}", "$(rm -rf /)", "*", "?",
]

LONG_MODEL = ["x" * 256, "x" * 257, "é" * 128, "é" * 129, "\U0001F600" * 64, "\U0001F600" * 65, "x" * 100_000]
LONG_TENSOR = ["t" * 4096, "t" * 4097, "\U0001F600" * 1024, "\U0001F600" * 1025, "t" * 1_000_000]


def _payload(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(700).astype(np.float32)


def _try(store: ts.Store, model: str, tensor: str, seed: int) -> str:
    """Add one model under the hostile names; check the outcome; leave the store as it was."""
    before = snapshot(store)
    arr = _payload(seed)
    try:
        store.add_model(model, {tensor: arr, "plain": np.arange(5, dtype=np.int16)})
    except ts.StoreError as exc:
        assert type(exc) is not ts.StoreError, f"refused with the bare base class: {exc!r}"
        assert str(exc), "refused without a message"
        assert snapshot(store) == before, "a refused add changed the store"
        return type(exc).__name__
    # Stored: every way back returns the exact name and the exact bytes.
    assert store.models().count(model) == 1 and model in store
    assert [m for m in store.catalog()["models"].column("model").to_pylist() if m == model] == [model]
    got = store.load_model(model)
    assert list(got) == [tensor, "plain"]
    assert got[tensor].tobytes() == arr.tobytes()
    assert store.load_tensor(model, tensor).tobytes() == arr.tobytes()
    assert store.model_info(model).name == model
    assert store.verify().ok
    store.delete_model(model)
    assert model not in store and sorted(store) == ["base"]
    return "stored"


@pytest.fixture
def base_store(tmp_path):
    with ts.open(tmp_path / "store", "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        s.add_model("base", random_model(0))
        yield s


TRAVERSED = Path("/tmp/ts-reliability-evil")  # where "../../../../tmp/ts-reliability-evil" would land


@pytest.mark.parametrize("name", HOSTILE + LONG_MODEL, ids=lambda n: repr(n)[:40])
def test_hostile_model_names(base_store, name, tmp_path):
    existed = TRAVERSED.exists()
    outcome = _try(base_store, name, "w", 1)
    assert set(os.listdir(base_store.path)) == {"data.mdb", "lock.mdb"}  # no file named after the model
    assert TRAVERSED.exists() == existed and set(os.listdir(tmp_path)) == {"store"}
    control = any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
    unencodable = any(0xD800 <= ord(c) < 0xE000 for c in name)
    too_long = len(name.encode("utf-8", "surrogatepass")) > 256
    assert (outcome == "stored") == (not (control or unencodable or too_long)), outcome


@pytest.mark.parametrize("name", HOSTILE + LONG_TENSOR, ids=lambda n: repr(n)[:40])
def test_hostile_tensor_names(base_store, name):
    outcome = _try(base_store, "m", name, 2)
    control = any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
    unencodable = any(0xD800 <= ord(c) < 0xE000 for c in name)
    too_long = len(name.encode("utf-8", "surrogatepass")) > 4096
    plain = name == "plain"
    assert (outcome == "stored") == (not (control or unencodable or too_long or plain)), outcome


def test_look_alike_names_stay_distinct(base_store):
    # No normalisation: NFC and NFD forms, case variants and look-alikes are different models.
    names = ["e\u0301", "\u00e9", "E\u0301", "a/b", "ａ／ｂ", "a\u2215b", "ß", "ss", "\u0130", "i\u0307", "x", "x\u200b"]
    for i, n in enumerate(names):
        base_store.add_model(n, {"w": _payload(10 + i)})
    assert sorted(base_store) == sorted(names + ["base"])
    for i, n in enumerate(names):
        assert base_store.load_model(n)["w"].tobytes() == _payload(10 + i).tobytes(), repr(n)
    assert base_store.verify().ok


def test_hostile_names_through_the_command_line(tmp_path):
    # `ls --json` returns names exactly; `export` writes only to OUT whatever the model is called.
    path = tmp_path / "store"
    names = ["../../evil", "\u202eexe.txt", "e\u0301", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "a/b/c"]
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        for i, n in enumerate(names):
            s.add_model(n, {"w": _payload(i)})
    cli = [sys.executable, "-m", "tensorstore"]
    out = subprocess.run(cli + ["ls", str(path), "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert sorted(r["model"] for r in listed) == sorted(names)
    before = set(os.listdir(tmp_path))
    for i, n in enumerate(names):
        target = tmp_path / f"out{i}.safetensors"
        done = subprocess.run(cli + ["export", str(path), n, str(target)], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        from tensorstore.formats import read_model_file

        assert read_model_file(target)[0]["w"].tobytes() == _payload(i).tobytes()
    assert set(os.listdir(tmp_path)) == before | {f"out{i}.safetensors" for i in range(len(names))}
    assert set(os.listdir(path)) == {"data.mdb", "lock.mdb"}
    # "../../evil" resolved against the store or the working directory:
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path.parent.parent / "evil").exists()


# -- fuzz -------------------------------------------------------------------------------

# Any code point, surrogates included; some names long enough to cross the byte limits.
_chars = st.characters(codec=None, categories=None)
_names = st.one_of(
    st.text(_chars, min_size=0, max_size=40),
    st.builds(lambda c, n: c * n, st.text(_chars, min_size=1, max_size=3), st.integers(60, 1400)),
)
_FUZZ = env_int("TS_FUZZ_EXAMPLES", 200)


@pytest.mark.parametrize("target", ["model", "tensor"])
def test_fuzzed_names(target, counts):
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp, ts.open(Path(tmp) / "s", "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        s.add_model("base", random_model(0))

        @settings(max_examples=_FUZZ, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(name=_names)
        def run(name):
            model, tensor = (name, "w") if target == "model" else ("m", name)
            outcome = _try(s, model, tensor, 3)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        run()
    total = sum(outcomes.values())
    assert total >= min(_FUZZ, 50)
    assert outcomes.get("stored", 0) > 0 and total - outcomes.get("stored", 0) > 0  # both paths were exercised
    counts(f"fuzzed {target} names", f"{total} {dict(sorted(outcomes.items()))}")
