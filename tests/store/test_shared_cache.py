"""The shared tensor cache: one copy in shared memory for every process that loads a tensor."""

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings, strategies as st
from support import bits, tensors

import tensorstore as ts
from tensorstore.reader import Reader

WORKER = Path(__file__).parents[1] / "helpers" / "shared_worker.py"
TENSOR = 12_000  # float32 elements: 48 KB, more than one 16 KiB page, so never one run


def _model(seed: int, n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"w{i}": rng.standard_normal(TENSOR).astype(np.float32) for i in range(n)}


@pytest.fixture
def paths(tmp_path):
    store = tmp_path / "store"
    with ts.open(store, "w", page_size="16KiB", block_bytes="4KiB") as s:
        s.add_model("base", _model(0))
        s.add_model("copy", _model(0))  # the same tensors under another name
        s.add_model("other", _model(1))
        s.add_model("tenant-b", _model(0), domain="b")  # same bytes, another dedup domain
    return store, tmp_path / "cache"


def _cached_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.t"))


def _worker(store: Path, cache: Path, models: str, hold: bool = False) -> subprocess.Popen:
    args = [sys.executable, str(WORKER), str(store), str(cache), models] + (["--hold"] if hold else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


def test_a_second_process_maps_what_the_first_published(paths):
    store, cache = paths
    first = _worker(store, cache, "base")
    a = _report(first)
    first.communicate("")
    assert a["stats"]["misses"] == 4 and a["stats"]["hits"] == 0
    second = _worker(store, cache, "base,copy")
    b = _report(second)
    second.communicate("")
    assert b["stats"]["misses"] == 0 and b["stats"]["hits"] == 8  # nothing assembled again
    model = _model(0)
    expected = {k: xxhash.xxh3_64_hexdigest(v.tobytes()) for k, v in model.items()}
    for name in ("base", "copy"):
        assert {k.split("/")[1]: v for k, v in b["digests"].items() if k.startswith(name + "/")} == expected
    assert len(_cached_files(cache)) == 4  # equal tensors of two models are one entry


def test_shared_tensors_are_read_only_and_outlive_the_store(paths):
    store, cache = paths
    s = ts.open(store, "r", shared_cache=cache)
    with s.reader() as r:
        t = r.load_model("base")
    stats = s.cache_stats()
    assert stats.shared_bytes == stats.shared.mapped_bytes == 4 * TENSOR * 4 and stats.private_bytes == 0
    with pytest.raises(ValueError, match="read-only"):
        t["w0"][0] = 1
    with pytest.raises(ValueError):
        t["w0"].flags.writeable = True
    s.close()  # the mappings depend on nothing the store owned
    model = _model(0)
    assert all(np.array_equal(t[k], v) for k, v in model.items())
    private = np.array(t["w0"])
    private[0] = 1  # a copy is the caller's own


def test_domains_never_share_entries(paths):
    store, cache = paths
    with ts.open(store, "r", shared_cache=cache) as s, s.reader() as r:
        a = r.load_model("base")
        b = r.load_model("tenant-b")
        stats = s.cache_stats().shared
        assert stats.misses == 8 and stats.hits == 0  # equal bytes, but not one entry
        assert all(np.array_equal(a[k], b[k]) for k in a)
        del a, b


def test_a_killed_process_references_are_reclaimed(paths):
    store, cache = paths
    holder = _worker(store, cache, "base", hold=True)
    assert _report(holder)["stats"]["misses"] == 4
    with ts.open(store, "r", shared_cache=cache, shared_cache_keep_alive=0) as s:
        assert s.shared_cache.reclaim(keep_alive=0) == 0  # held by a live process: kept
        assert len(_cached_files(cache)) == 4
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert s.shared_cache.reclaim(keep_alive=0) == 4  # the kernel dropped the dead process's locks
    assert _cached_files(cache) == []


def test_unused_tensors_stay_for_the_keep_alive_window(paths):
    store, cache = paths
    with ts.open(store, "r", shared_cache=cache, shared_cache_keep_alive=3600) as s:
        with s.reader() as r:
            r.load_model("base")  # published, then dropped at once
        gc.collect()
        assert s.cache_stats().shared.mapped_tensors == 0
        assert s.shared_cache.reclaim() == 0 and len(_cached_files(cache)) == 4
        assert s.shared_cache.reclaim(keep_alive=0) == 4


def test_the_budget_evicts_least_recently_used_unheld_tensors(paths):
    store, cache = paths
    one = TENSOR * 4 + 8  # a tensor file: its bytes and their 8-byte checksum
    with ts.open(store, "r", shared_cache=cache, shared_cache_bytes=3 * one) as s, s.reader() as r:
        keys = []
        for name in ("w0", "w1", "w2"):
            r.load_tensor("base", name)  # each dropped after use
            keys.append(set(_cached_files(cache)))
        gc.collect()
        oldest = keys[0].pop()
        os.utime(cache / oldest, (1, 1))  # make the order certain, not a matter of clock ticks
        kept = r.load_tensor("base", "w3")  # over budget: the least recently used goes
        files = _cached_files(cache)
        assert len(files) == 3 and oldest not in files
        assert np.array_equal(kept, _model(0)["w3"])


def test_tensors_in_use_are_never_evicted_and_overflow_is_served_privately(paths):
    store, cache = paths
    one = TENSOR * 4 + 8  # a tensor file: its bytes and their 8-byte checksum
    with ts.open(store, "r", shared_cache=cache, shared_cache_bytes=2 * one) as s, s.reader() as r:
        t = r.load_model("base")  # four tensors, room for two: two are private copies
        stats = s.cache_stats().shared
        assert stats.misses == 2 and stats.fallbacks == 2 and len(_cached_files(cache)) == 2
        assert all(np.array_equal(t[k], v) for k, v in _model(0).items())
        assert sum(Reader.is_view(a) for a in t.values()) == 2
        del t


def test_the_cache_takes_the_store_permissions(paths):
    store, cache = paths
    os.chmod(store, 0o700)
    os.chmod(store / "data.mdb", 0o600)
    with ts.open(store, "r", shared_cache=cache) as s, s.reader() as r:
        r.load_model("base")
    assert cache.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in cache.iterdir()} == {0o600}


def test_a_cache_directory_open_to_more_users_than_the_store_is_refused(paths):
    store, cache = paths
    os.chmod(store, 0o700)
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    with pytest.raises(ts.SharedCacheError, match="lets others in"):
        ts.open(store, "r", shared_cache=cache)
    with ts.open(store, "r+") as s:  # the failed open left the store usable
        assert "base" in s


def test_a_dead_writer_half_written_file_is_removed(paths):
    store, cache = paths
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with ts.open(store, "r", shared_cache=cache) as s:
        leftover = cache / f"tmp-{int(dead.stdout)}-1-abc"
        leftover.write_bytes(b"partial")
        s.shared_cache.reclaim()
        assert not leftover.exists()


def test_bad_options_are_named(paths):
    store, _ = paths
    with pytest.raises(ts.InvalidArgumentError, match="need shared_cache"):
        ts.open(store, "r", shared_cache_bytes="1MiB")
    with pytest.raises(ts.InvalidArgumentError, match="shared_cache must be"):
        ts.open(store, "r", shared_cache=3)
    with pytest.raises(ts.InvalidArgumentError, match="keep_alive"):
        ts.open(store, "r", shared_cache=True, shared_cache_keep_alive=-1)


SHARED_MODELS = st.dictionaries(st.text(min_size=1, max_size=10).filter(str.isprintable), tensors(), min_size=1, max_size=3)


def round_trip_through_the_shared_cache_is_bit_exact(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("shared")
    with ts.open(root / "store", "w", page_size="4KiB", block_bytes="256B", shared_cache=root / "cache") as s:
        s.add_model("m", model)
        for _ in range(2):  # published, then mapped
            with s.reader() as r:
                out = r.load_model("m")
            for name, arr in model.items():
                assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
                assert bits(out[name]) == bits(arr)
            del out
            gc.collect()


# A few examples in every run, many in the slow soak (make bench).
test_round_trip_through_the_shared_cache_is_bit_exact = settings(max_examples=12, deadline=None)(
    given(model=SHARED_MODELS)(round_trip_through_the_shared_cache_is_bit_exact))
test_round_trip_through_the_shared_cache_soak = pytest.mark.slow(settings(max_examples=200, deadline=None)(
    given(model=SHARED_MODELS)(round_trip_through_the_shared_cache_is_bit_exact)))


@pytest.fixture
def shm_cache():
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ts-test-", dir="/dev/shm")) / "cache"
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


def test_processes_mapping_a_tensor_count_it_once_between_them(tmp_path, shm_cache):
    from tensorstore.bench.serving import pss_bytes

    store, cache = tmp_path / "store", shm_cache
    rng = np.random.default_rng(3)
    model = {f"w{i}": rng.standard_normal(1 << 20).astype(np.float32) for i in range(4)}  # 16 MiB
    with ts.open(store, "w", page_size="1MiB", block_bytes="64KiB") as s:
        s.add_model("m", model)
    procs = [_worker(store, cache, "m", hold=True) for _ in range(2)]
    try:
        reports = [_report(p) for p in procs]
        shmem = [pss_bytes(p.pid).get("Pss_Shmem", 0) for p in procs]
    finally:
        for p in procs:
            p.communicate("")
    cached = sum(f.stat().st_size for f in cache.glob("*.t"))
    # Started together: each tensor is assembled by one of them; the other waits and maps it.
    assert cached == (16 << 20) + 4 * 8 and sum(r["stats"]["misses"] for r in reports) == 4  # 4 tensors + checksums
    assert sum(r["stats"]["hits"] for r in reports) == 4
    assert abs(sum(shmem) - cached) < 0.05 * cached  # one copy between them, not two
    assert all(abs(x - cached / 2) < 0.05 * cached for x in shmem)  # and each pays half


def test_a_model_manifest_is_kept_and_a_damaged_one_is_rebuilt(paths):
    store, cache = paths
    with ts.open(store, "r", shared_cache=cache) as s:
        with s.reader() as r:
            r.load_model("base")
        (manifest,) = cache.glob("*.m")
        manifest.write_bytes(manifest.read_bytes()[:-1] + b"!")  # fails its checksum
        with s.reader() as r:
            t = r.load_model("base")
        assert all(np.array_equal(t[k], v) for k, v in _model(0).items())
        assert s.shared_cache.read_manifest(bytes.fromhex(manifest.stem), 4) is not None  # rewritten
        del t


def test_a_copied_store_keeps_its_own_manifests(paths, tmp_path):
    import shutil

    store, cache = paths
    twin = tmp_path / "twin"
    shutil.copytree(store, twin)  # same block ids, same records; it may diverge from here
    for path in (store, twin):
        with ts.open(path, "r", shared_cache=cache) as s, s.reader() as r:
            r.load_model("base")
    assert len(list(cache.glob("*.m"))) == 2 and len(_cached_files(cache)) == 4


def _tensor_being_written(cache: Path) -> bool:
    # A tensor's temporary file has its full size from the start (posix_fallocate); a
    # manifest's is tiny and lives for microseconds.
    for p in cache.iterdir() if cache.is_dir() else ():
        try:
            if p.name.startswith("tmp-") and p.stat().st_size > 1 << 20:
                return True
        except FileNotFoundError:
            pass
    return False


def test_a_process_killed_while_publishing_leaves_nothing_half_written(tmp_path):
    import time

    store, cache = tmp_path / "store", tmp_path / "cache"
    rng = np.random.default_rng(5)
    # Two tensors just under 64 MiB (with its checksum, a file stays within a 64 MiB default
    # budget): writing one takes tens of milliseconds, time enough to land a kill.
    model = {f"w{i}": rng.standard_normal((1 << 24) - 16).astype(np.float32) for i in range(2)}
    with ts.open(store, "w", page_size="1MiB", block_bytes="64KiB") as s:
        s.add_model("m", model)
    caught = 0
    for _ in range(5):
        victim = _worker(store, cache, "m", hold=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.poll() is None and not _tensor_being_written(cache):
            pass
        victim.send_signal(signal.SIGKILL)  # while a tensor is being written
        victim.wait()
        caught += _tensor_being_written(cache)
        with ts.open(store, "r", shared_cache=cache) as s:
            with s.reader() as r:
                out = r.load_model("m")
            assert all(bits(out[k]) == bits(v) for k, v in model.items())  # nothing partial was mapped
            del out
            gc.collect()
            s.shared_cache.reclaim(keep_alive=0)  # the dead writer's file goes, and the rest: start empty
        assert not [p for p in cache.iterdir() if p.name.startswith("tmp-")]
        assert not list(cache.glob("*.t"))
        if caught >= 2:
            break
    assert caught >= 2  # the kills landed mid-write


def _flip_a_byte_of_a_cached_tensor(cache: Path) -> Path:
    victim = sorted(_cached_files(cache))[0]
    path = cache / victim
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(data)  # a new inode would be a new file: write into the same one
    return path


def test_a_damaged_cached_tensor_is_caught_when_first_mapped_and_replaced(paths):
    store, cache = paths
    first = _worker(store, cache, "base")
    _report(first)
    first.communicate("")
    _flip_a_byte_of_a_cached_tensor(cache)
    second = _worker(store, cache, "base")  # a new process: checks every file it maps
    report = _report(second)
    second.communicate("")
    model = _model(0)
    assert report["stats"]["damaged"] == 1 and report["stats"]["misses"] == 1 and report["stats"]["hits"] == 3
    assert {k.split("/")[1]: v for k, v in report["digests"].items()} == {
        k: xxhash.xxh3_64_hexdigest(v.tobytes()) for k, v in model.items()
    }


def test_verify_always_rechecks_a_cached_tensor_on_every_load(paths):
    store, cache = paths
    with ts.open(store, "r", shared_cache=cache) as s:
        with s.reader() as r:
            kept = r.load_model("base")  # held: the next loads are hits on this mapping
        path = _flip_a_byte_of_a_cached_tensor(cache)
        with s.reader() as r:  # checked when first mapped, not again
            assert not all(np.array_equal(r.load_model("base")[k], v) for k, v in _model(0).items())
        with s.reader(verify="always") as r:
            again = r.load_model("base")
        assert all(bits(again[k]) == bits(v) for k, v in _model(0).items())
        assert s.cache_stats().shared.damaged == 1 and path.exists()
        del kept
