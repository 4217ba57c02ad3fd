"""The end-to-end comparison (SPEC §7): this store against what a user would pick instead.

On one corpus (a family of models, each a dict of arrays, with an ``evaluate`` function),
in one run:

- **safetensors**: one file per model;
- **chunk-64k**: those files cut into fixed 64 KiB chunks, each distinct chunk kept once
  (the exact-chunk dedup of content-addressed model hubs);
- **zstd**: each file compressed with zstd (level 3);
- **tensor-dedup**: each distinct tensor (dtype, shape, bytes) kept once;
- **store-exact**: this store, exact block dedup;
- **store-neardup**: this store after the accuracy-gated near-duplicate pass and a repack.

Figures: bytes, accuracy of every model, ingest time, load time warm and cold (cold: the
file dropped from the OS page cache with ``posix_fadvise``), pages read per model load,
and the hit ratio of a buffer pool under a skewed request stream, per policy and Belady.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import open as open_store
from ..formats import write_safetensors

CHUNK = 64 << 10


def _drop_cache(path: Path) -> None:
    """Evict a file's pages from the OS page cache (it must not be mapped by us)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _median(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(_timed(fn) for _ in range(repeat))


def run(
    family: dict[str, dict[str, np.ndarray]],
    evaluate: Callable[[str, dict[str, np.ndarray]], float],
    workdir: Path,
    *,
    page_size: int | str = "1MiB",
    block_bytes: int | str = "64KiB",
    max_accuracy_drop: float = 0.005,
    tolerance: float = 0.05,
    repeat: int = 3,
    requests: int = 2000,
    seed: int = 0,
) -> dict:
    """Measure every alternative on ``family``; return a JSON-ready dict."""
    from safetensors.numpy import load_file
    import zstandard

    workdir.mkdir(parents=True, exist_ok=True)
    names = list(family)
    logical = sum(a.nbytes for t in family.values() for a in t.values())
    res: dict = {"models": names, "logical_bytes": logical, "alternatives": {}}
    alt = res["alternatives"]
    accuracy_original = {n: evaluate(n, family[n]) for n in names}

    # One safetensors file per model.
    files = workdir / "safetensors"
    files.mkdir(exist_ok=True)
    t_write = _timed(lambda: [write_safetensors(files / f"{n}.safetensors", family[n]) for n in names])
    paths = {n: files / f"{n}.safetensors" for n in names}
    alt["safetensors"] = {
        "bytes": sum(p.stat().st_size for p in paths.values()),
        "ingest_s": t_write,
        "load_warm_s": _median(lambda: [load_file(str(paths[n])) for n in names], repeat),
        "load_cold_s": _cold(lambda: [load_file(str(paths[n])) for n in names], list(paths.values()), repeat),
        "accuracy": accuracy_original,
    }

    # Fixed 64 KiB chunks of those files, each distinct chunk once.
    seen: set[bytes] = set()
    chunk_bytes = 0
    t0 = time.perf_counter()
    for p in paths.values():
        data = p.read_bytes()
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            digest = hashlib.blake2b(piece, digest_size=16).digest()
            if digest not in seen:
                seen.add(digest)
                chunk_bytes += len(piece)
    alt["chunk-64k"] = {"bytes": chunk_bytes, "ingest_s": time.perf_counter() - t0, "accuracy": accuracy_original}

    # zstd of each file.
    cctx = zstandard.ZstdCompressor(level=3)
    t0 = time.perf_counter()
    compressed = {n: cctx.compress(paths[n].read_bytes()) for n in names}
    zstd_ingest = time.perf_counter() - t0
    dctx = zstandard.ZstdDecompressor()
    from safetensors.numpy import load as load_bytes

    alt["zstd"] = {
        "bytes": sum(len(c) for c in compressed.values()),
        "ingest_s": zstd_ingest,
        "load_warm_s": _median(lambda: [load_bytes(dctx.decompress(compressed[n])) for n in names], repeat),
        "accuracy": accuracy_original,
    }

    # Whole-tensor exact dedup.
    distinct: set[bytes] = set()
    tensor_bytes = 0
    for t in family.values():
        for a in t.values():
            h = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            if h.digest() not in distinct:
                distinct.add(h.digest())
                tensor_bytes += a.nbytes
    alt["tensor-dedup"] = {"bytes": tensor_bytes, "accuracy": accuracy_original}

    # This store: exact, then near-duplicate dedup and repack.
    store_path = workdir / "store"
    t0 = time.perf_counter()
    with open_store(store_path, "w", page_size=page_size, block_bytes=block_bytes) as s:
        for n in names:
            s.add_model(n, family[n])
    ingest = time.perf_counter() - t0
    alt["store-exact"] = _store_figures(store_path, names, family, repeat) | {"ingest_s": ingest, "accuracy": accuracy_original}

    t0 = time.perf_counter()
    with open_store(store_path, "r+") as s:
        report = s.dedup(evaluate=evaluate, max_accuracy_drop=max_accuracy_drop, tolerance=tolerance)
        pack = s.repack()
        accuracy_after = {n: evaluate(n, s.load_model(n)) for n in names}
    near = _store_figures(store_path, names, None, repeat)
    near.update({
        "dedup_s": time.perf_counter() - t0,
        "accuracy": accuracy_after,
        "evaluations": report.evaluations,
        "bytes_saved_by_neardup": report.bytes_saved,
        "max_accuracy_drop": max_accuracy_drop,
        "tolerance": tolerance,
        "repack_status": pack.status,
    })
    alt["store-neardup"] = near
    res["cache"] = _cache_figures(store_path, names, requests, seed)
    return res


def _cold(fn: Callable[[], object], paths: list[Path], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        for p in paths:
            _drop_cache(p)
        times.append(_timed(fn))
    return statistics.median(times)


def _store_figures(path: Path, names: list[str], family: dict | None, repeat: int) -> dict:
    data = path / "data.mdb"
    with open_store(path, "r") as s:
        stats = s.stats()
        if family is not None:
            exact = all(
                all(v.tobytes() == family[n][k].tobytes() for k, v in s.load_model(n).items()) for n in names
            )
        else:
            exact = None
        warm = _median(lambda: [s.load_model(n) for n in names], repeat)
        tables = s.catalog()
        verified = s.verify().ok
    # A load reads the pages of a model's blocks and of the references of its deltas.
    distinct = {r["block_id"]: r for r in tables["distinct_blocks"].to_pylist()}
    needed: dict[str, set[int]] = {n: set() for n in names}
    for r in tables["blocks"].to_pylist():
        needed[r["model"]].add(r["block_id"])
        if r["ref_block"] is not None:
            needed[r["model"]].add(r["ref_block"])
    pages_read = {n: len({distinct[i]["page_id"] for i in needed[n]}) for n in names}
    bound = {n: -(-sum(distinct[i]["stored_bytes"] for i in needed[n]) // stats.page_size) for n in names}

    def cold_load():
        with open_store(path, "r") as s:  # a fresh handle: nothing verified, nothing mapped
            for n in names:
                s.load_model(n)

    cold_times = []
    for _ in range(repeat):
        _drop_cache(data)
        cold_times.append(_timed(cold_load))
    return {
        "bytes": stats.stored_bytes,
        "unique_bytes": stats.unique_bytes,
        "file_bytes": stats.file_bytes,
        "pages": stats.pages,
        "load_warm_s": warm,
        "load_cold_s": statistics.median(cold_times),
        "pages_read": pages_read,
        "pages_read_lower_bound": bound,
        "bit_exact": exact,
        "verify_ok": verified,
    }


def _cache_figures(path: Path, names: list[str], requests: int, seed: int) -> dict:
    """Hit ratio of a page cache under a Zipf request stream over the family's models."""
    import tensorstore_bufferpool as bufferpool

    with open_store(path, "r") as s:
        blocks = s.catalog()["blocks"].to_pylist()
        page_size = s.page_size
    model_pages: dict[str, list[int]] = {}
    for r in blocks:
        pages = model_pages.setdefault(r["model"], [])
        if r["page_id"] not in pages:
            pages.append(r["page_id"])
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(names) + 1) ** 1.0
    order = rng.permutation(len(names))
    trace = [names[order[i]] for i in rng.choice(len(names), size=requests, p=weights / weights.sum())]
    distinct_pages = len({p for ps in model_pages.values() for p in ps})
    one_model = max(len(p) for p in model_pages.values())
    capacities = sorted({max(1, one_model // 2), one_model, max(one_model, int(0.3 * distinct_pages)), max(one_model, int(0.6 * distinct_pages))})
    out = {"requests": requests, "distinct_pages": distinct_pages, "largest_model_pages": one_model, "page_size": page_size, "by_capacity": []}
    for cap in capacities:
        row = {"capacity_pages": cap}
        for policy in ("lru", "arc", "s3fifo", "queueing"):
            row[policy] = bufferpool.simulate(trace, model_pages, capacity_pages=cap, policy=policy).hit_ratio
        row["belady"] = bufferpool.belady(trace, model_pages, capacity_pages=cap).hit_ratio
        out["by_capacity"].append(row)
    return out


def table(res: dict) -> str:
    """The comparison as a Markdown table, ratios against one safetensors file per model."""
    alt = res["alternatives"]
    base = alt["safetensors"]["bytes"]
    names = res["models"]
    lines = [
        "| alternative | bytes | × safetensors | min / mean accuracy | ingest s | warm load s | cold load s | pages read / bound (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, a in alt.items():
        acc = list(a["accuracy"].values())
        pr = a.get("pages_read")
        pages = f"{statistics.mean(pr.values()):.1f} / {statistics.mean(a['pages_read_lower_bound'].values()):.1f}" if pr else "-"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {key} | {a['bytes']:,} | {a['bytes'] / base:.3f} | {min(acc):.4f} / {statistics.mean(acc):.4f} | "
            f"{fmt(a.get('ingest_s'))} | {fmt(a.get('load_warm_s'))} | {fmt(a.get('load_cold_s'))} | {pages} |"
        )
    lines += ["", f"Per-model accuracy (original → after near-dup, budget {alt['store-neardup']['max_accuracy_drop']}):", ""]
    lines += ["| model | original | after near-dup |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {alt['safetensors']['accuracy'][n]:.4f} | {alt['store-neardup']['accuracy'][n]:.4f} |")
    c = res["cache"]
    lines += ["", f"Cache hit ratio, {c['requests']} Zipf(1.0) requests, {c['distinct_pages']} distinct pages (largest model {c['largest_model_pages']} pages):", ""]
    lines += ["| capacity (pages) | LRU | ARC | S3-FIFO | queueing | Belady |", "|---|---|---|---|---|---|"]
    for r in c["by_capacity"]:
        lines.append(f"| {r['capacity_pages']} | {r['lru']:.3f} | {r['arc']:.3f} | {r['s3fifo']:.3f} | {r['queueing']:.3f} | {r['belady']:.3f} |")
    return "\n".join(lines)


def load_corpus(corpus: str):
    """``(family, evaluate, page_size, block_bytes)`` for a corpus name or a folder."""
    if corpus == "digits":
        from ..corpora import digits

        return digits.build_family(), digits.evaluate, "256KiB", "16KiB"
    if corpus == "minilm":
        from ..corpora import minilm_family

        return minilm_family.load_family(), minilm_family.evaluate, "1MiB", "64KiB"
    from ..formats import read_model_file

    folder = Path(corpus)
    family = {p.stem: read_model_file(p)[0] for p in sorted(folder.glob("*.safetensors"))}
    if not family:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    return family, (lambda n, t: 0.0), "1MiB", "64KiB"


@contextmanager
def stored_corpus(corpus: str, workdir: str | None):
    """Store a corpus's family (exact dedup) in a temporary store; yield its path and the family."""
    import tempfile

    family, _, page, block = load_corpus(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="ts-bench-", dir=workdir))
    try:
        with open_store(tmp / "store", "w", page_size=page, block_bytes=block) as s:
            for name, tensors in family.items():
                s.add_model(name, tensors)
        yield tmp / "store", family
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(corpus: str, workdir: str | None, repeat: int, max_accuracy_drop: float, tolerance: float) -> dict:
    import tempfile

    family, evaluate, page, block = load_corpus(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="ts-compare-", dir=workdir))
    try:
        return run(family, evaluate, tmp, page_size=page, block_bytes=block, repeat=repeat,
                   max_accuracy_drop=max_accuracy_drop, tolerance=tolerance)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
