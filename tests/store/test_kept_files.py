"""The files kept with a model (``add_model(..., files=)``) in ``verify()`` and ``catalog()``.

Damage is made underneath the store, with the ``lmdb`` package while no store handle is
open, as disk rot or a stray tool would: a flipped bit, a cut value, a deleted or stray
record. ``verify()`` must name the model and the file; the catalog lists every kept file.
"""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_common import raw_env

import tensorstore as ts
from tensorstore.cli import main

CONFIG = b'{"architectures": ["BertModel"], "hidden_size": 32, "vocab_size": 500}'
FILES = {"config.json": CONFIG, "tokenizer.json": b'{"model": {"vocab": {"a": 0}}}', "sub/vocab.txt": b"[PAD]\n[CLS]\n"}


def _store(path, files=FILES):
    with ts.open(path, "w") as s:
        s.add_model("plain", {"w": np.arange(10, dtype=np.float32)})
        s.add_model("bert", {"w": np.ones((4, 4), np.float16)}, files=files)
        s.add_model("other", {"w": np.zeros(3)}, files={"config.json": b"{}"})
        models = s.catalog()["models"].to_pydict()
    return dict(zip(models["model"], models["model_id"]))


def _raw(path, change) -> None:
    """Apply ``change(txn, db)`` to the store's ``files`` database directly."""
    env = raw_env(path)
    try:
        db = env.open_db(b"files", create=False)
        with env.begin(write=True) as txn:
            change(txn, db)
    finally:
        env.close()


def _key(model_id: int, path: str = "") -> bytes:
    return model_id.to_bytes(8, "big") + path.encode()


def _problems(path) -> list[str]:
    with ts.open(path, "r") as s:
        report = s.verify()
    assert report.ok == (not report.problems)
    return report.problems


def test_an_intact_store_verifies_and_lists_its_files(tmp_path):
    _store(tmp_path / "s")
    assert _problems(tmp_path / "s") == []
    with ts.open(tmp_path / "s", "r") as s:
        rows = s.catalog()["files"].to_pylist()
    want = [("bert", p, len(d), xxhash.xxh3_128_hexdigest(d)) for p, d in FILES.items()]
    want.append(("other", "config.json", 2, xxhash.xxh3_128_hexdigest(b"{}")))
    assert sorted((r["model"], r["file"], r["bytes"], r["digest"]) for r in rows) == sorted(want)


@pytest.mark.parametrize("offset", [0, len(CONFIG) // 2, len(CONFIG) - 1])
def test_a_flipped_bit_in_a_kept_file_is_named_with_its_model(tmp_path, capsys, offset):
    ids = _store(tmp_path / "s")

    def flip(txn, db):
        value = bytearray(txn.get(_key(ids["bert"], "config.json"), db=db))
        value[offset] ^= 0x10
        txn.put(_key(ids["bert"], "config.json"), bytes(value), db=db)

    _raw(tmp_path / "s", flip)
    assert _problems(tmp_path / "s") == ["model 'bert' file 'config.json' does not match its recorded digest"]
    assert main(["verify", str(tmp_path / "s")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "1 problem(s) found:", "  model 'bert' file 'config.json' does not match its recorded digest"]
    # The other model's file of the same name is not blamed, and the damage is reported,
    # not repaired: loading still returns the bytes as they now are.
    with ts.open(tmp_path / "s", "r") as s:
        assert s.load_files("other") == {"config.json": b"{}"}
        assert s.load_files("bert")["config.json"] != CONFIG


def test_a_cut_file_a_lost_file_and_a_stray_file_are_named(tmp_path):
    ids = _store(tmp_path / "s")

    def damage(txn, db):
        txn.put(_key(ids["bert"], "tokenizer.json"), FILES["tokenizer.json"][:-3], db=db)
        txn.delete(_key(ids["bert"], "sub/vocab.txt"), db=db)
        txn.put(_key(ids["other"], "added-later.txt"), b"x", db=db)

    _raw(tmp_path / "s", damage)
    assert sorted(_problems(tmp_path / "s")) == sorted([
        f"model 'bert' file 'tokenizer.json' is {len(FILES['tokenizer.json']) - 3} bytes; its manifest records {len(FILES['tokenizer.json'])}",
        "model 'bert' file 'sub/vocab.txt' is missing (its manifest lists it)",
        "model 'other' file 'added-later.txt' is not in its manifest",
    ])


def test_files_of_no_model_and_undecodable_records_are_named(tmp_path):
    ids = _store(tmp_path / "s")
    ghost = max(ids.values()) + 7

    def damage(txn, db):
        txn.put(_key(ghost, "config.json"), b"{}", db=db)
        txn.put(_key(ids["plain"]) + b"\xff\xfe", b"?", db=db)
        txn.put(b"\x01\x02", b"?", db=db)
        txn.put(_key(ids["other"]), b"not json", db=db)

    _raw(tmp_path / "s", damage)
    problems = _problems(tmp_path / "s")
    assert f"the files database keeps 'config.json' for model id {ghost}, which is not in the catalog" in problems
    assert f"a file kept with model id {ids['plain']} has a name that is not UTF-8 (fffe)" in problems
    assert "the files database has a record with a malformed key (0102)" in problems
    assert any(p.startswith("model 'other': the manifest of its kept files does not decode") for p in problems)
    assert len(problems) == 4


def test_files_kept_before_manifests_load_verify_and_list(tmp_path):
    """A store written before manifests were kept: files without a manifest record."""
    ids = _store(tmp_path / "s")
    _raw(tmp_path / "s", lambda txn, db: txn.delete(_key(ids["bert"]), db=db))
    assert _problems(tmp_path / "s") == []
    with ts.open(tmp_path / "s", "r") as s:
        assert s.load_files("bert") == FILES
        rows = {r["file"]: r["digest"] for r in s.catalog()["files"].to_pylist() if r["model"] == "bert"}
    assert rows == dict.fromkeys(FILES)  # known files, no recorded digest
    with ts.open(tmp_path / "s", "a") as s:  # replacing the model records one from now on
        s.add_model("bert", {"w": np.ones((4, 4), np.float16)}, files=FILES, replace=True)
        assert s.verify().ok and None not in s.catalog()["files"].column("digest").to_pylist()


paths = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda p: "/" not in p and "\\" not in p and p not in (".", ".."))


@settings(max_examples=25)
@given(files=st.dictionaries(paths, st.binary(min_size=1, max_size=300), min_size=1, max_size=5), data=st.data())
def test_any_flipped_bit_of_any_kept_file_is_found(tmp_path_factory, files, data):
    path = tmp_path_factory.mktemp("s")
    with ts.open(path, "w") as s:
        s.add_model("m", {"w": np.ones(3)}, files=files)
        model_id = s.catalog()["models"].column("model_id")[0].as_py()
        assert sorted(s.catalog()["files"].column("file").to_pylist()) == sorted(files)
        assert s.verify().ok
    name = data.draw(st.sampled_from(sorted(files)))
    offset = data.draw(st.integers(0, len(files[name]) - 1))
    bit = data.draw(st.integers(0, 7))

    def flip(txn, db):
        value = bytearray(txn.get(_key(model_id, name), db=db))
        value[offset] ^= 1 << bit
        txn.put(_key(model_id, name), bytes(value), db=db)

    _raw(path, flip)
    assert _problems(path) == [f"model 'm' file {name!r} does not match its recorded digest"]


def test_a_store_made_before_files_could_be_kept_verifies_and_lists_none(tmp_path):
    with ts.open(tmp_path / "s", "w") as s:
        s.add_model("plain", {"w": np.arange(10, dtype=np.float32)})
    env = raw_env(tmp_path / "s")
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"files", txn=txn, create=False), delete=True)
    finally:
        env.close()
    with ts.open(tmp_path / "s", "r") as s:  # read-only: the files database stays absent
        assert "files" not in s.env.dbs
        assert s.verify().ok and s.load_files("plain") == {}
        assert s.catalog()["files"].num_rows == 0
