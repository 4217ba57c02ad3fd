"""Damage on disk: flipped bytes in pages, a truncated or replaced data.mdb.

Pages: one bit at a random offset of a random stored page value (payload or checksum) is
flipped with the ``lmdb`` package while no store handle is open. Every flip must be caught
by ``verify()`` and by loading a model that uses the page in a fresh process
(``CorruptionError`` naming the page); the bit is then flipped back and the store is whole
again. ``TS_CORRUPTIONS`` flips (default 40; the slow test: ``TS_CORRUPTIONS`` or 1000).

The data file: truncated at several points or overwritten with random bytes, opening must
raise a ``StoreError`` subclass, in a subprocess so that a crash is seen as one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import random_model

import tensorstore as ts
from reliability_common import BLOCK_BYTES, PAGE_SIZE, env_int, raw_env, worker

PAGE_BYTES = 64 << 10
VALUE_BYTES = PAGE_BYTES + 8  # payload + XXH3-64 checksum


def _build(path) -> tuple[dict[int, list[str]], dict[int, int]]:
    """A store whose pages hold blocks of several models; return page id -> models using it,
    and page id -> bytes used (the rest of the page is zero padding, covered by the checksum)."""
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        shared = np.random.default_rng(99).standard_normal((64, 64)).astype(np.float32)
        for i in range(6):
            s.add_model(f"m{i}", random_model(i) | {"shared": shared})
        s.add_model("small", {"x": np.arange(50, dtype=np.int8)})
        blocks = s.catalog()["blocks"].to_pylist()
        used = {p["page_id"]: p["used_bytes"] for p in s.catalog()["pages"].to_pylist()}
    users: dict[int, set[str]] = {}
    for b in blocks:
        users.setdefault(b["page_id"], set()).add(b["model"])
    return {p: sorted(m) for p, m in users.items()}, used


def _flip(path, page_id: int, offset: int, bit: int) -> None:
    env = raw_env(path)
    try:
        db = env.open_db(b"pages", create=False)
        with env.begin(write=True) as txn:
            key = page_id.to_bytes(8, "big")
            value = bytearray(txn.get(key, db=db))
            assert len(value) == VALUE_BYTES
            value[offset] ^= 1 << bit
            txn.put(key, bytes(value), db=db)
    finally:
        env.close()


def _flips(tmp_path, n: int, counts) -> None:
    path = tmp_path / "store"
    users, used = _build(path)
    pristine = {}
    with ts.open(path, "r") as s:
        assert s.verify().ok
        for name in s:
            pristine[name] = {k: v.tobytes() for k, v in s.load_model(name).items()}
    loader = worker("fork_loader")
    loader.expect("ready")
    rng = random.Random(20240601)
    by_verify = by_load = 0
    hits = {"block data": 0, "padding": 0, "checksum": 0}
    try:
        for trial in range(n):
            page_id = rng.choice(sorted(users))
            # Mostly anywhere in the value; every 8th trial in the stored checksum, every 8th
            # (shifted) in the zero padding after the last block: both must count too.
            if trial % 8 == 3:
                offset = rng.randrange(PAGE_BYTES, VALUE_BYTES)
            elif trial % 8 == 7 and used[page_id] < PAGE_BYTES:
                offset = rng.randrange(used[page_id], PAGE_BYTES)
            else:
                offset = rng.randrange(VALUE_BYTES)
            hits["checksum" if offset >= PAGE_BYTES else "padding" if offset >= used[page_id] else "block data"] += 1
            bit = rng.randrange(8)
            _flip(path, page_id, offset, bit)
            where = f"trial {trial}: page {page_id}, byte {offset}"

            with ts.open(path, "r") as s:
                report = s.verify()
            assert not report.ok, f"{where}: verify() missed the flip"
            assert any(f"page {page_id} failed its checksum" in p for p in report.problems), (where, report.problems)
            by_verify += 1

            model = rng.choice(users[page_id])
            loader.send(json.dumps([str(path), model]))
            got = json.loads(loader._lines.get(timeout=60))
            assert got["result"] == "CorruptionError", f"{where}: loading {model} in a fresh process gave {got}"
            assert f"page {page_id}" in got["message"], (where, got)
            by_load += 1

            _flip(path, page_id, offset, bit)  # undo: the next trial starts from a whole store
    finally:
        loader.close_stdin()
    loader.result(timeout=60)
    with ts.open(path, "r") as s:  # every flip was undone: the store is exactly as built
        assert s.verify().ok
        for name, tensors in pristine.items():
            assert {k: v.tobytes() for k, v in s.load_model(name).items()} == tensors
    counts("single-bit flips in page values", n)
    counts("caught by verify()", by_verify)
    counts("caught by a load in a fresh process (CorruptionError)", by_load)
    counts("flips by place (block data / padding / checksum)", hits)
    counts("pages in the store", len(users))


def test_every_flipped_bit_in_a_page_is_caught(tmp_path, counts):
    _flips(tmp_path, env_int("TS_CORRUPTIONS", 40), counts)


@pytest.mark.slow
def test_every_flipped_bit_in_a_page_is_caught_many(tmp_path, counts):
    _flips(tmp_path, env_int("TS_CORRUPTIONS", 1000), counts)


# -- the data file itself -------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "store"
    _build(path)
    return path


def _short(got: dict, path: Path) -> str:
    return f"{got['result']}: {got.get('message', '').replace(str(path), 'P')}"


def _damaged(built, tmp_path, damage) -> Path:
    path = tmp_path / "store"
    shutil.copytree(built, path)
    (path / "lock.mdb").unlink()
    data = path / "data.mdb"
    data.write_bytes(damage(data.read_bytes()))
    return path


def _open_elsewhere(path, mode: str = "r") -> dict:
    return worker("open_and_load_all", path, mode).outcome(timeout=60)


def _random(seed: int, keep: int = 0):
    def damage(b: bytes) -> bytes:
        return b[:keep] + random.Random(seed).randbytes(len(b) - keep)

    return damage


@pytest.mark.parametrize("mode", ["r", "a"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_are_not_a_store(built, tmp_path, seed, mode, counts):
    path = _damaged(built, tmp_path, _random(seed))
    before = (path / "data.mdb").read_bytes()
    got = _open_elsewhere(path, mode)
    assert got["result"] == "NotAStoreError", got
    assert (path / "data.mdb").read_bytes() == before  # opening did not write into it
    if seed == 1:
        counts(f"opening random bytes (mode {mode!r}) raises", _short(got, path))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_pages_behind_intact_meta_pages(built, tmp_path, seed, counts):
    # LMDB's two meta pages (8 KiB) intact, every other byte random: the B-tree is garbage.
    path = _damaged(built, tmp_path, _random(seed, keep=8192))
    got = _open_elsewhere(path)
    assert got["result"] in ("NotAStoreError", "CorruptionError"), got
    if seed == 1:
        counts("opening random pages behind intact meta pages raises", _short(got, path))


@pytest.mark.parametrize("size", [100, 4096, 4097])
def test_a_file_cut_inside_its_meta_pages_is_not_a_store(built, tmp_path, size, counts):
    path = _damaged(built, tmp_path, lambda b: b[:size])
    got = _open_elsewhere(path)
    assert got["result"] == "NotAStoreError", got
    counts(f"opening data.mdb cut to {size} bytes raises", _short(got, path))


def test_an_empty_data_file_is_a_clear_error(built, tmp_path):
    got = _open_elsewhere(_damaged(built, tmp_path, lambda b: b""))
    assert got["result"] in ("NotAStoreError", "CorruptionError"), got


@pytest.mark.parametrize("cut", ["8192 bytes", "half", "all but 64 KiB"])
def test_a_truncated_data_file_is_a_clear_error(built, tmp_path, cut):
    keep = {"8192 bytes": lambda n: 8192, "half": lambda n: n // 2, "all but 64 KiB": lambda n: n - 65536}[cut]
    got = _open_elsewhere(_damaged(built, tmp_path, lambda b: b[: keep(len(b))]))
    assert got["result"] in ("NotAStoreError", "CorruptionError"), got
