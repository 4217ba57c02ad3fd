"""``tensorstore demo``: the main job, on an embedded model family, with no download.

Trains the digits family (a base and fine-tunes with different frozen layers), stores it,
and reports what a user wants to know: logical against stored bytes, what each model
shares, load time against one safetensors file per model, and a bit-exact check.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from . import open as open_store
from .corpora import digits
from .formats import write_safetensors
from .sharing import model_sharing
from .units import format_size


def run_demo(directory: Path | None = None, *, out=print) -> dict:
    """Run the demo; keep its files in ``directory`` (else a temporary one). Return the figures."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="tensorstore-demo-") as tmp:
            out(f"The demo's store and files are in {tmp}, a temporary directory deleted when the demo ends;")
            out("`tensorstore demo DIR` keeps them in DIR.")
            figures = _run(Path(tmp), out)
        out(f"\nDeleted {tmp}. Run `tensorstore demo DIR` to keep the store and look at it with `tensorstore ls DIR/store`.")
        return figures
    directory.mkdir(parents=True, exist_ok=True)
    out(f"The demo's store and files are kept in {directory.resolve()}.")
    figures = _run(directory, out)
    out(f"\nKept: the store in {directory / 'store'} (try `tensorstore ls {directory / 'store'}`), "
        f"one safetensors file per model in {directory / 'safetensors'}.")
    return figures


def _run(directory: Path, out) -> dict:
    out("Training the digits family (a base MLP and fine-tunes with frozen layers)...")
    t0 = time.perf_counter()
    family = digits.build_family()
    out(f"  {len(family)} models in {time.perf_counter() - t0:.1f} s")

    files_dir = directory / "safetensors"
    files_dir.mkdir(exist_ok=True)
    for name, tensors in family.items():
        write_safetensors(files_dir / f"{name}.safetensors", tensors)
    files_bytes = sum(f.stat().st_size for f in files_dir.glob("*.safetensors"))

    store_path = directory / "store"
    t0 = time.perf_counter()
    with open_store(store_path, "w", page_size="256KiB", block_bytes="16KiB") as store:
        for name, tensors in family.items():
            store.add_model(name, tensors)
    ingest = time.perf_counter() - t0

    with open_store(store_path, "r") as store:
        stats = store.stats()
        sharing = model_sharing(store.catalog())
        exact = all(
            np.array_equal(a.view(np.uint8), family[name][k].view(np.uint8))
            for name in family
            for k, a in store.load_model(name).items()
        )
        store_load = _best_of(lambda: [store.load_model(n) for n in family])
        accuracy = {n: digits.evaluate(n, store.load_model(n)) for n in family}
        verified = store.verify()
    from safetensors.numpy import load_file

    file_load = _best_of(lambda: [load_file(str(files_dir / f"{n}.safetensors")) for n in family])

    out("")
    out(f"Store at {store_path}  (pages of {format_size(stats.page_size)}, blocks of {format_size(stats.block_bytes)})")
    width = max(len(r.model) for r in sharing)
    out(f"  {'model':<{width}}  {'size':>10}  {'shared':>10}  {'private':>10}  {'accuracy':>8}")
    for r in sharing:
        out(
            f"  {r.model:<{width}}  {format_size(r.logical_bytes):>10}  {format_size(r.shared_bytes):>10}  "
            f"{format_size(r.private_bytes):>10}  {accuracy[r.model]:>8.3f}"
        )
    out("")
    out(f"  logical bytes (all models as added)  {format_size(stats.logical_bytes)}")
    out(f"  one safetensors file per model       {format_size(files_bytes)}")
    out(f"  distinct block bytes                 {format_size(stats.unique_bytes)}")
    encodings = ", ".join(f"{n} {name}" for name, n in stats.encodings.items())
    out(f"  the same, as stored (encoded)        {format_size(stats.encoded_bytes)}  ({encodings} blocks)")
    out(f"  stored / logical                     {stats.encoded_bytes / stats.logical_bytes:.2f}  "
        f"({stats.logical_bytes / stats.encoded_bytes:.2f}x smaller, lossless)")
    out(f"  pages                                {format_size(stats.stored_bytes)}  ({stats.pages} of "
        f"{format_size(stats.page_size)}; {format_size(stats.padding_bytes)} of it room not yet filled)")
    out(f"  ingest of {len(family)} models                   {ingest * 1000:.0f} ms")
    out(f"  load all models, warm: store {store_load * 1000:.1f} ms, safetensors files {file_load * 1000:.1f} ms")
    out(f"  bit-exact round trip: {'yes' if exact else 'NO'};  verify: {'ok' if verified.ok else verified.problems}")

    # Near-duplicate pass within an accuracy budget, then a repack for reads.
    budget = 0.01
    with open_store(store_path, "r+") as store:
        report = store.dedup(evaluate=digits.evaluate, max_accuracy_drop=budget, tolerance=0.05)
        pack = store.repack()
        after = store.stats()
        near_exact = store.verify().ok
    out("")
    out(f"Near-duplicate pass (accuracy budget {budget} per model, blocks within 5% relative L2 error):")
    for m in report.models:
        if m.replaced:
            out(f"  {m.model:<{width}}  {len(m.replaced):>3} blocks -> shared, {format_size(m.bytes_saved):>10} saved, "
                f"accuracy {m.accuracy_before:.3f} -> {m.accuracy_after:.3f} ({m.evaluations} evaluations)")
    out(f"  distinct block bytes {format_size(stats.unique_bytes)} -> {format_size(after.unique_bytes)}, "
        f"as stored {format_size(stats.encoded_bytes)} -> {format_size(after.encoded_bytes)};  "
        f"{report.evaluations} evaluations in all;  every model within budget: "
        f"{'yes' if all(m.accuracy_after >= m.accuracy_before - budget for m in report.models) else 'NO'}")
    out(f"Repack ({pack.algorithm}): {pack.pages_before} -> {pack.pages_after} pages (lower bound {pack.lower_bound_pages}); "
        f"pages read per model load {pack.mean_pages_read_before:.1f} -> {pack.mean_pages_read_after:.1f}; verify: {'ok' if near_exact else 'FAILED'}")

    # A skewed request stream through a buffer pool that holds a third of the pages.
    cache = max(stats.page_size, (after.pages // 3) * stats.page_size)
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, len(family) + 1)
    requests = rng.choice(list(family), size=200, p=popularity / popularity.sum())
    with open_store(store_path, "r", cache_bytes=cache) as store:
        for name in requests:
            store.load_model(str(name))
        cs = store.cache_stats().pool
    out(f"Buffer pool of {format_size(cache)} ({cache // stats.page_size} of {after.pages} pages), 200 Zipf requests: "
        f"hit ratio {cs.hit_ratio:.2f} ({cs.hits} hits, {cs.misses} misses)")

    # Two serving processes, one copy: the first assembles into shared memory, the next maps.
    first, second = (_serving_process(store_path, directory / "shared-cache", list(family)) for _ in range(2))
    out(f"Shared tensor cache, two processes one after the other: the first assembles {first['misses']} distinct "
        f"tensors ({first['ms']:.1f} ms), the second maps {second['mapped_tensors']} and assembles {second['misses']} "
        f"({second['ms']:.1f} ms); {format_size(second['mapped_bytes'])}, one copy for both")
    return {
        "dedup": report.to_dict() | {"bytes_saved": report.bytes_saved},
        "repack": pack.to_dict(),
        "cache": cs.to_dict(),
        "shared_cache": {"first": first, "second": second},
        "stats": stats.to_dict(),
        "sharing": [r.to_dict() for r in sharing],
        "files_bytes": files_bytes,
        "bit_exact": exact,
        "verify_ok": verified.ok,
        "accuracy": accuracy,
        "load_seconds": {"store": store_load, "safetensors": file_load},
    }


def _best_of(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


_SERVE = """
import json, sys, time
import tensorstore as ts
t0 = time.perf_counter()
store = ts.open(sys.argv[1], "r", shared_cache=sys.argv[2])
with store.reader() as r:
    held = [r.load_model(m) for m in sys.argv[3:]]
ms = (time.perf_counter() - t0) * 1e3
s = store.cache_stats().shared
print(json.dumps({"ms": ms, "hits": s.hits, "misses": s.misses, "mapped_tensors": s.mapped_tensors,
                  "mapped_bytes": s.mapped_bytes}))
"""


def _serving_process(store_path: Path, cache: Path, models: list[str]) -> dict:
    """Load every model in a new process through the shared cache; its counters."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SERVE, str(store_path), str(cache), *models],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
