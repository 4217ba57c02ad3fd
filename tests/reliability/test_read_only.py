"""A store opened with mode "r" never writes.

data.mdb keeps its bytes, its mtime and its inode across every read the API and the CLI
offer, and across every write attempt, each of which fails with ``ReadOnlyError`` (only
lock.mdb, LMDB's reader table, may change). On a read-only file system (a read-only bind
mount; skipped where mounting is refused) mode "r" works and a writing mode fails cleanly.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from support import random_model

import tensorstore as ts
from reliability_common import BLOCK_BYTES, PAGE_SIZE, file_state


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "store"
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        for i in range(3):
            m = random_model(0)
            m["layer.0.weight"] = m["layer.0.weight"] + np.float32(1e-4 * i)  # near-duplicates: dedup has work
            s.add_model(f"m{i}", m, metadata={"i": i})
    time.sleep(0.05)  # any write below would now show in the mtime
    return path


def _reads(s: ts.Store) -> int:
    """Every read the API offers; return how many calls were made."""
    n = 0
    for name in s:
        got = s.load_model(name)
        assert got["embed.weight"].tobytes() == random_model(0)["embed.weight"].tobytes()
        s.load_tensor(name, "norm.weight")
        s.model_info(name)
        n += 3
    assert len(s) == 3 and "m0" in s and "nope" not in s and s.models() == ["m0", "m1", "m2"]
    assert s.stats().models == 3
    assert s.verify().ok
    assert s.catalog()["models"].num_rows == 3
    report = s.dedup(dry_run=True, tolerance=0.5)  # planning only: reads, changes nothing
    assert report.dry_run
    s.cache_stats()
    return n + 8


def _write_attempts(s: ts.Store) -> int:
    attempts = [
        lambda: s.add_model("new", {"x": np.zeros(3)}),
        lambda: s.add_model("m0", random_model(5), replace=True),
        lambda: s.delete_model("m1"),
        lambda: s.repack(),
        lambda: s.repack("greedy-2"),
        lambda: s.dedup(tolerance=0.5),
        lambda: s.dedup("m2", tolerance=0.5, evaluate=lambda name, t: 1.0),
    ]
    for attempt in attempts:
        with pytest.raises(ts.ReadOnlyError, match="read-only"):
            attempt()
    # A bad call that is not a write fails too, without writing.
    with pytest.raises(ts.ModelNotFoundError):
        s.load_model("nope")
    return len(attempts) + 1


def test_read_only_handles_never_touch_data_mdb(built, counts):
    before = file_state(built)
    calls = 0
    for cache in (None, "256KiB"):
        with ts.open(built, "r", cache_bytes=cache) as s:
            for _ in range(2):  # warm loads too
                calls += _reads(s)
            calls += _write_attempts(s)
            calls += _reads(s)
    # Opening with arguments that do not fit fails before anything is written.
    with pytest.raises(ts.InvalidArgumentError):
        ts.open(built, "r", page_size="1MiB")
    with pytest.raises(ts.StoreExistsError):
        ts.open(built, "w-")
    after = file_state(built)
    assert after[0] == before[0], "data.mdb changed content"
    assert after[1:] == before[1:], "data.mdb changed mtime or inode"
    counts("read-only calls and refused writes with data.mdb unchanged", calls + 2)


def test_read_only_commands_never_touch_data_mdb(built, tmp_path):
    before = file_state(built)
    cli = [sys.executable, "-m", "tensorstore"]
    commands = [
        ["ls", str(built)], ["ls", str(built), "--json"], ["stats", str(built), "--json"], ["verify", str(built)],
        ["export", str(built), "m0", str(tmp_path / "m0.safetensors")], ["dedup", str(built), "--dry-run", "--json"],
    ]
    for args in commands:
        done = subprocess.run(cli + args, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr)
    assert file_state(built) == before


def test_read_only_on_a_read_only_file_system(built, bind_read_only, counts):
    ro = bind_read_only(built)
    before = file_state(built)
    with ts.open(ro, "r") as s:
        _reads(s)
        _write_attempts(s)
    for mode in ("a", "r+"):
        with pytest.raises(ts.StoreError) as info:
            ts.open(ro, mode)
        assert "Read-only file system" in str(info.value)
        counts(f"mode {mode!r} on a read-only file system raises", f"{type(info.value).__name__}: {str(info.value).replace(str(ro), 'P')}")
    assert file_state(built) == before
