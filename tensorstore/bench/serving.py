"""Many serving processes on one machine: memory (PSS) and cold start, shared cache or not.

``tensorstore bench --suite serving --corpus minilm`` stores a family, then runs worker
processes that load models and hold them, and reads each worker's proportional set size
(``Pss`` in ``/proc/PID/smaps_rollup``: a page shared by k processes counts 1/k in each, so
the sum over processes is the memory they take together). Two ways of serving:

* ``shared``: ``ts.open(store, "r", shared_cache=...)`` and ``store.reader().load_model``:
  tensors that lie in one run are views of the store's memory map; the others are mapped
  from the shared cache, assembled once by the first process that needs them.
* ``safetensors``: one file per model, ``safetensors.numpy.load_file`` in every process.

Scenarios: every worker loads every model; each loads a different fine-tune; all load
the same fine-tune. The fixed cost of a process (interpreter, libraries, an open store)
is measured with idle workers and reported apart.

Cold start: while one process holds the family in the shared cache, a new process opens
the store and loads one model; against a new process loading the same model from its
safetensors file after the file was evicted from the OS page cache.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .compare import _drop_cache, stored_corpus

SCENARIOS = ("all-models", "one-fine-tune-each", "same-fine-tune")


def pss_bytes(pid: int) -> dict[str, int]:
    """``Pss`` and its anonymous / file / shmem parts for one process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Rss"):
                out[key] = int(rest.split()[0]) * 1024
    return out


# -- the worker (run as: python -m tensorstore.bench.serving worker ...) ---------------------


def _worker(mode: str, store: str, cache: str, files: list[str], models: list[str]) -> None:
    import xxhash
    from safetensors.numpy import load_file

    import tensorstore as ts

    t0 = time.perf_counter()  # libraries are imported: what is timed is getting the models
    if mode == "shared":
        s = ts.open(store, "r", shared_cache=cache)
        with s.reader() as r:
            held = [r.load_model(m) for m in models]
    elif mode == "safetensors":
        held = [load_file(f) for f in files]
    elif mode == "idle-shared":
        s = ts.open(store, "r", shared_cache=cache)
        held = []
    else:  # idle-safetensors
        held = []
    seconds = time.perf_counter() - t0
    # Read every byte once, as serving would: a mapped page counts in PSS once touched.
    for tensors in held:
        for a in tensors.values():
            xxhash.xxh3_64_digest(a.reshape(-1).view("u1") if a.size else b"")
    print(json.dumps({"seconds": seconds, "tensors": sum(len(h) for h in held)}), flush=True)
    sys.stdin.read()  # hold everything until the parent says so


def _start(mode: str, store: Path, cache: Path, files: list[Path], models: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "tensorstore.bench.serving", "worker", mode, str(store), str(cache),
            ",".join(map(str, files)), ",".join(models)]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _run_group(mode: str, store: Path, cache: Path, jobs: list[tuple[list[Path], list[str]]]) -> dict:
    """Start one worker per job, one after another (the first fills the shared cache, as a
    rolling start would); when all hold their models, read every worker's PSS."""
    procs, seconds = [], []
    try:
        for files, models in jobs:
            p = _start(mode, store, cache, files, models)
            procs.append(p)
            seconds.append(json.loads(p.stdout.readline())["seconds"])
        pss = [pss_bytes(p.pid) for p in procs]
    finally:
        for p in procs:
            p.communicate("")
    return {
        "pss_sum": sum(x["Pss"] for x in pss),
        "pss_anon_sum": sum(x.get("Pss_Anon", 0) for x in pss),
        "pss_file_sum": sum(x.get("Pss_File", 0) for x in pss),
        "pss_shmem_sum": sum(x.get("Pss_Shmem", 0) for x in pss),
        "pss_each": [x["Pss"] for x in pss],
        "load_seconds": seconds,
    }


def _distinct_bytes(store: Path, models: list[str]) -> int:
    """Bytes of the distinct blocks that ``models`` reference."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .. import open as open_store

    with open_store(store, "r") as s:
        blocks = s.catalog()["blocks"]
    rows = blocks.filter(pc.is_in(blocks["model"], value_set=pa.array(models)))
    return sum(dict(zip(rows["block_id"].to_pylist(), rows["nbytes"].to_pylist())).values())


def memory(store: Path, files: dict[str, Path], processes: int) -> list[dict]:
    names = list(files)
    tunes = [n for n in names if n != names[0]] or names
    plans = {
        "all-models": [names] * processes,
        "one-fine-tune-each": [[tunes[i % len(tunes)]] for i in range(processes)],
        "same-fine-tune": [[tunes[0]]] * processes,
    }
    idle = {}
    for mode in ("idle-shared", "idle-safetensors"):
        cache = Path(tempfile.mkdtemp(prefix="ts-cache-", dir="/dev/shm"))
        g = _run_group(mode, store, cache, [([], [])] * processes)
        idle[mode] = g["pss_sum"]
        shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for scenario, jobs in plans.items():
        loaded = sorted({m for job in jobs for m in job})
        distinct = _distinct_bytes(store, loaded)
        logical = sum(os.path.getsize(files[m]) for job in jobs for m in job)
        cache = Path(tempfile.mkdtemp(prefix="ts-cache-", dir="/dev/shm"))
        shared = _run_group("shared", store, cache, [([], job) for job in jobs])
        shutil.rmtree(cache, ignore_errors=True)
        plain = _run_group("safetensors", store, cache, [([files[m] for m in job], []) for job in jobs])
        rows.append({
            "scenario": scenario,
            "processes": processes,
            "distinct_bytes": distinct,
            "file_bytes_loaded": logical,
            "shared": shared,
            "safetensors": plain,
            "idle_shared_pss_sum": idle["idle-shared"],
            "idle_safetensors_pss_sum": idle["idle-safetensors"],
            "shared_over_distinct": (shared["pss_sum"] - idle["idle-shared"]) / distinct,
            "safetensors_over_distinct": (plain["pss_sum"] - idle["idle-safetensors"]) / distinct,
            "safetensors_over_shared": plain["pss_sum"] / shared["pss_sum"],
        })
    return rows


def cold_start(store: Path, files: dict[str, Path], model: str, repeat: int) -> dict:
    """Seconds from a new process's first call to holding ``model``: shared cache (held by
    another process) against safetensors with the file evicted from the page cache."""
    cache = Path(tempfile.mkdtemp(prefix="ts-cache-", dir="/dev/shm"))
    holder = _start("shared", store, cache, [], list(files))
    try:
        holder.stdout.readline()
        shared_warm, shared_cold, plain_cold = [], [], []
        for _ in range(repeat):
            shared_warm.append(_one_shot("shared", store, cache, [], [model]))
            _drop_cache(store / "data.mdb")  # the store's catalog cold too (mapped pages stay)
            shared_cold.append(_one_shot("shared", store, cache, [], [model]))
            _drop_cache(files[model])
            plain_cold.append(_one_shot("safetensors", store, cache, [files[model]], []))
    finally:
        holder.communicate("")
        shutil.rmtree(cache, ignore_errors=True)
    med = statistics.median
    return {
        "model": model,
        "model_bytes": os.path.getsize(files[model]),
        "shared_store_warm_s": med(shared_warm),
        "shared_store_cold_s": med(shared_cold),
        "safetensors_cold_s": med(plain_cold),
        "speedup_store_warm": med(plain_cold) / med(shared_warm),
        "speedup_store_cold": med(plain_cold) / med(shared_cold),
        "repeat": repeat,
    }


def _one_shot(mode: str, store: Path, cache: Path, files: list[Path], models: list[str]) -> float:
    p = _start(mode, store, cache, files, models)
    try:
        return json.loads(p.stdout.readline())["seconds"]
    finally:
        p.communicate("")


def main(corpus: str, workdir: str | None, processes: int = 8, repeat: int = 5) -> dict:
    from ..formats import write_safetensors

    with stored_corpus(corpus, workdir) as (store, family):
        files = {}
        for name, tensors in family.items():
            files[name] = store.parent / f"{name}.safetensors"
            write_safetensors(files[name], tensors)
        del family
        names = list(files)
        return {
            "corpus": corpus,
            "memory": memory(store, files, processes),
            "cold_start": cold_start(store, files, names[1] if len(names) > 1 else names[0], repeat),
        }


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "worker":
        _, _, mode, store, cache, files, models = sys.argv[:7]
        _worker(mode, store, cache, [f for f in files.split(",") if f], [m for m in models.split(",") if m])
