"""Smaller hardening items of issue 14: named errors for damaged counts, the load-plan
cache under threads, and the shared cache's temporary files under a live writer."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from support import random_model

import tensorstore as ts
import tensorstore.store as store_module
from tensorstore.blockwriter import BlockWriter


def test_a_reference_count_that_runs_out_is_a_corruption_error(tmp_path):
    with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB") as s:
        s.add_model("a", {"x": np.arange(1024, dtype=np.float32)})  # one block, one reference
        block = int(s.model_info("a").tensors[0].block_ids[0])
        before = s.stats()

        def release_twice(txn):
            writer = BlockWriter(txn, s.env.dbs, s.page_file, s.state(txn))
            writer.release(block)
            writer.release(block)  # as a damaged count would make it

        with pytest.raises(ts.CorruptionError, match=f"block {block} is released more often.*restore the store"):
            s.env.write(release_twice)
        assert s.stats() == before and s.verify().ok


def test_threads_sharing_a_handle_share_its_load_plans_safely(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_MAX_PLANS", 1)  # every load evicts another's plan
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors: list[BaseException] = []
    models = {f"m{i}": random_model(i) for i in range(6)}
    try:
        with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB") as s:
            for n, t in models.items():
                s.add_model(n, t)

            def load(k: int) -> None:
                try:
                    for j in range(300):
                        name = f"m{(k + j) % 6}"
                        got = s.load_model(name)
                        assert all(np.array_equal(got[t], v) for t, v in models[name].items())
                except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(exc)

            threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_a_live_writers_temporary_file_is_not_reaped_however_long_it_takes(tmp_path):
    import os
    import time

    from tensorstore.sharedcache import SharedCache

    cache_dir = tmp_path / "cache"
    cache = SharedCache(cache_dir, 1 << 20, 300.0, 0o700, 0o600)
    started, go_on = threading.Event(), threading.Event()
    key = bytes(range(16))
    want = np.arange(256, dtype=np.uint8).tobytes() * 4

    def fill(buffer):
        started.set()
        go_on.wait(60)  # a long assembly
        buffer[:] = want

    result = []
    writer = threading.Thread(target=lambda: result.append(cache.acquire(key, len(want), fill)))
    writer.start()
    try:
        assert started.wait(30)
        tmp = [p for p in cache_dir.iterdir() if p.name.startswith("tmp-")]
        assert len(tmp) == 1
        old = time.time() - 3600  # older than any staleness limit
        os.utime(tmp[0], (old, old))
        # a dead writer's file beside it: no lock, a pid that is no process
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        orphan = cache_dir / f"tmp-{int(dead.stdout)}-1-00"
        orphan.write_bytes(b"half")
        os.utime(orphan, (old, old))
        # another process sweeps the cache
        sweep = subprocess.run(
            [sys.executable, "-c", "import sys; from tensorstore.sharedcache import SharedCache; "
             "SharedCache(sys.argv[1], 1 << 20, 300.0, 0o700, 0o600).reclaim()", str(cache_dir)],
            capture_output=True, text=True, timeout=60,
        )
        assert sweep.returncode == 0, sweep.stderr
        assert tmp[0].exists(), "a live writer's temporary file was reaped"
        assert not orphan.exists(), "a dead writer's temporary file was kept"
    finally:
        go_on.set()
        writer.join(60)
    assert result and result[0] is not None and bytes(result[0])[: len(want)] == want  # then its checksum
    del result
    cache.close()
