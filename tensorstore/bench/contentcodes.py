"""What a lookup by content costs as the store grows (``--suite contentrefs --corpus scaling``).

For each size, a store is filled with that many stored blocks of one class (unrelated
random float32 blocks of 4 KiB, added raw in models of 1,024 blocks: codes spread evenly,
the common case; the content index files each under 7 of its pieces). Then, in that
store, measured ``repeat`` times each:

- ``lookup_us``: the content index search of one block (the 256 blocks of a renamed
  fine-tune looked up, divided by 256), and the index entries it reads;
- ``renamed_add_s``: ``add_model`` of a renamed fine-tune (256 blocks) of a base stored
  there, with content references (it is then deleted again), and its blocks stored as deltas;
- ``backfill_us_per_block``: coding every stored block again (the store made as a format-4
  library left it: no codes): the one-time cost of an older store, and what each new
  process paid per stored block of a class it looked up in before codes were kept.

``layouts`` measures the store's index layout against 4 pieces of 16 bits probed within 1
bit, on a bare LMDB of that many random codes. ``codes_cost`` adds, alternated, a model of new data (64 KiB blocks, codec ``auto``) into
an empty store: with content references and codes (the default), codes only, and with the
code log disabled (``_codes_cost``): the ingest time that keeping codes adds.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

from .. import contentcodes
from .. import open as open_store

SIZES = (1_000, 10_000, 100_000)
BLOCK = 4096
_ROWS = BLOCK // (64 * 4)  # rows of 64 float32 per block
_PER_MODEL = 1024  # blocks per filler model


def _filler(seed: int, blocks: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {"w": r.standard_normal((blocks * _ROWS, 64), dtype=np.float32)}


def _base() -> dict[str, np.ndarray]:
    r = np.random.default_rng(10**6)
    return {"embed": (r.standard_normal((256 * _ROWS, 64)) * 0.05).astype(np.float32)}


def _renamed_tune() -> dict[str, np.ndarray]:
    r = np.random.default_rng(10**6 + 1)
    base = _base()["embed"]
    return {"exported/embed": (base * (1 + 1e-3 * r.standard_normal(base.shape))).astype(np.float32)}


def _drop_codes(path: Path) -> None:
    """Make the store what a format-4 library left: no code tables, no marker."""
    env = lmdb.open(str(path), max_dbs=16, map_size=1 << 40)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.drop(env.open_db(contentcodes.CODES_DB.encode(), txn=txn), delete=True)
        txn.drop(env.open_db(contentcodes.INDEX_DB.encode(), txn=txn, dupsort=True, dupfixed=True), delete=True)
        txn.delete(contentcodes.MARKER_KEY, db=meta)
        fmt = json.loads(bytes(txn.get(b"format", db=meta)))
        txn.put(b"format", json.dumps(fmt | {"version": 4}).encode(), db=meta)
    env.close()


def _size(where: Path, n: int, repeat: int) -> dict:
    geometry = dict(page_size="1MiB", block_bytes=BLOCK)
    t0 = time.perf_counter()
    with open_store(where, "w", codec="raw", **geometry) as s:
        left, k = n - 256, 0
        while left > 0:
            s.add_model(f"filler{k}", _filler(k, min(_PER_MODEL, left)))
            left -= _PER_MODEL
            k += 1
    fill_s = time.perf_counter() - t0
    tune = _renamed_tune()
    queries = [memoryview(tune["exported/embed"]).cast("B")[i * BLOCK : (i + 1) * BLOCK] for i in range(256)]
    adds, lookups, entries = [], [], []
    with open_store(where, "a", codec="auto", **geometry) as s:
        s.add_model("base", _base())
        stored = s.stats().unique_blocks
        cls = (0, next(c for c, d in contentcodes.FLOAT_DTYPES.items() if d == np.float32), BLOCK)
        codes = contentcodes.codes_of(queries, cls[1])
        dbs = s.env.dbs
        for _ in range(repeat):
            t0 = time.perf_counter()
            s.add_model("tuned", tune)
            adds.append(time.perf_counter() - t0)
            deltas = s.stats().encodings["delta"]
            s.delete_model("tuned")
            with s.env.read() as txn:
                read: list[int] = []
                t0 = time.perf_counter()
                contentcodes.search(txn, dbs, cls, codes, 6, 3, read=read)
                lookups.append((time.perf_counter() - t0) / len(queries) * 1e6)
                entries.append(sum(read) / len(queries))
    _drop_codes(where)
    with open_store(where, "a", **geometry) as s:
        t0 = time.perf_counter()
        coded = contentcodes.backfill(s)
        backfill_s = time.perf_counter() - t0
        ok = s.verify().ok
    return {"stored_blocks": stored, "fill_s": fill_s, "lookup_us": statistics.median(lookups),
            "entries_per_lookup": statistics.median(entries), "renamed_add_s": statistics.median(adds),
            "renamed_deltas": deltas, "backfill_blocks": coded, "backfill_s": backfill_s,
            "backfill_us_per_block": backfill_s / max(coded, 1) * 1e6, "verify_ok": ok}


ARMS = ("content refs + codes", "codes only", "neither")


def _codes_cost(tmp: Path, repeat: int) -> dict:
    """A model of new data (64 KiB blocks) into an empty store, three arms alternated:
    the default (content references on: every block is looked up, in an empty index, and
    its code kept), content references off (codes still kept), and neither (the code log
    disabled: what the store cost before codes were kept)."""
    r = np.random.default_rng(7)
    model = {f"t{i}": (r.standard_normal((256, 256)) * 0.05).astype(np.float32) for i in range(64)}  # 16 MiB
    note = contentcodes.CodeLog.note
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    try:
        for i in range(repeat):
            for arm in (ARMS if i % 2 == 0 else ARMS[::-1]):
                contentcodes.CodeLog.note = note if arm != "neither" else (lambda *a, **k: None)
                where = tmp / f"c{i}{ARMS.index(arm)}"
                with open_store(where, "w", codec="auto", content_refs=arm == ARMS[0]) as s:
                    t0 = time.perf_counter()
                    s.add_model("m", model)
                    times[arm].append(time.perf_counter() - t0)
                shutil.rmtree(where)
    finally:
        contentcodes.CodeLog.note = note
    nbytes = sum(a.nbytes for a in model.values())
    log_s = _code_log_seconds(model, tmp, repeat)
    return {"model_bytes": nbytes, "blocks": nbytes // 65536,
            "code_log_s": statistics.median(log_s), "code_log_min_s": min(log_s),
            "seconds": {arm: statistics.median(t) for arm, t in times.items()},
            "min_seconds": {arm: min(t) for arm, t in times.items()},  # the least disturbed by other load
            "gbps": {arm: nbytes / statistics.median(t) / 1e9 for arm, t in times.items()}}


LAYOUTS = {"7 pieces of 9-10 bits, exact (the store's)": contentcodes.LAYOUT,
           "4 pieces of 16 bits, within 1 bit": contentcodes.Layout((16, 16, 16, 16), 1)}


def _layouts(tmp: Path, sizes: tuple[int, ...], repeat: int) -> list[dict]:
    """Both index layouts on a bare LMDB holding ``n`` random codes of one class: the µs
    and entries of a lookup (256 queries, each 3 bits from a stored code)."""
    out = []
    r = np.random.default_rng(3)
    cls = (0, 1, BLOCK)
    for n in sizes:
        codes = r.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
        queries = codes[:256] ^ np.uint64(0b1011 << 20)
        for name, layout in LAYOUTS.items():
            where = tmp / f"layout-{n}-{layout.radius}"
            env = lmdb.open(str(where), max_dbs=2, map_size=1 << 34)
            dbs = {contentcodes.CODES_DB: env.open_db(contentcodes.CODES_DB.encode()),
                   contentcodes.INDEX_DB: env.open_db(contentcodes.INDEX_DB.encode(), dupsort=True, dupfixed=True)}
            with env.begin(write=True) as txn:
                for start in range(0, n, 10_000):
                    contentcodes.put_many(txn, dbs, [(i + 1, cls, c) for i, c in
                                                     enumerate(codes[start : start + 10_000].tolist(), start)], layout)
            times, read = [], []
            with env.begin() as txn:
                for _ in range(repeat):
                    read.clear()
                    t0 = time.perf_counter()
                    found = contentcodes.search(txn, dbs, cls, queries, 6, 3, layout=layout, read=read)
                    times.append((time.perf_counter() - t0) / len(queries) * 1e6)
            env.close()
            shutil.rmtree(where)
            out.append({"codes": n, "layout": name, "lookup_us": statistics.median(times),
                        "entries_per_lookup": sum(read) / len(queries), "found": sum(bool(f) for f in found)})
    return out


def _code_log_seconds(model: dict[str, np.ndarray], tmp: Path, repeat: int) -> list[float]:
    """The code log's own work for the model's blocks, alone: sampling and projecting each
    (``note``) and writing the codes (``flush``, into a bare LMDB): what the arms' difference
    should be, without the other load's noise on the rest of the ingest."""
    code = next(c for c, d in contentcodes.FLOAT_DTYPES.items() if d == np.float32)
    blocks = [memoryview(a).cast("B")[i : i + 65536] for a in model.values() for i in range(0, a.nbytes, 65536)]
    out = []
    for i in range(repeat):
        where = tmp / f"log{i}"
        env = lmdb.open(str(where), max_dbs=3, map_size=1 << 30)
        dbs = {"meta": env.open_db(b"meta"), contentcodes.CODES_DB: env.open_db(contentcodes.CODES_DB.encode()),
               contentcodes.INDEX_DB: env.open_db(contentcodes.INDEX_DB.encode(), dupsort=True, dupfixed=True)}
        log = contentcodes.CodeLog()
        t0 = time.perf_counter()
        for block_id, data in enumerate(blocks, start=1):
            log.note(block_id, 0, code, data)
        with env.begin(write=True) as txn:
            log.flush(txn, dbs, 1, set(range(1, len(blocks) + 1)), [])
        out.append(time.perf_counter() - t0)
        env.close()
        shutil.rmtree(where)
    return out


def run(workdir: str | None, repeat: int, sizes: tuple[int, ...] = SIZES) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ts-contentcodes-", dir=workdir))
    out: dict = {"corpus": "scaling", "block_bytes": BLOCK, "sizes": [], "load_average_1min": []}
    try:
        for n in sizes:
            out["sizes"].append(_size(tmp / f"s{n}", n, repeat))
            shutil.rmtree(tmp / f"s{n}", ignore_errors=True)
            out["load_average_1min"].append(os.getloadavg()[0])
        out["codes_cost"] = _codes_cost(tmp, repeat)
        out["load_average_1min"].append(os.getloadavg()[0])
        out["layouts"] = _layouts(tmp, sizes, repeat)
        out["load_average_1min"].append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def table(r: dict) -> str:
    lines = ["| stored blocks | lookup µs (index entries read) | renamed fine-tune add s (deltas of 256) | "
             "backfill µs a block (blocks) |", "|---|---|---|---|"]
    for x in r["sizes"]:
        lines.append(f"| {x['stored_blocks']:,} | {x['lookup_us']:.1f} ({x['entries_per_lookup']:.1f}) | "
                     f"{x['renamed_add_s']:.3f} ({x['renamed_deltas']}) | {x['backfill_us_per_block']:.0f} "
                     f"({x['backfill_blocks']:,}) |")
    c = r["codes_cost"]
    lines.append(f"\ningest of {c['model_bytes'] / 2**20:.0f} MiB of new data into an empty store, codec auto: " + ", ".join(
        f"{arm} {c['seconds'][arm]:.3f} s ({c['gbps'][arm]:.3f} GB/s; fastest run {c['min_seconds'][arm]:.3f} s)"
        for arm in ARMS) + f"; the code log's own work, alone: {c['code_log_s'] * 1e3:.1f} ms "
        f"(fastest {c['code_log_min_s'] * 1e3:.1f} ms)")
    lines += ["", "| codes in the class | index layout | lookup µs | entries read | queries with a hit (of 256) |",
              "|---|---|---|---|---|"]
    lines += [f"| {x['codes']:,} | {x['layout']} | {x['lookup_us']:.1f} | {x['entries_per_lookup']:.1f} | {x['found']} |"
              for x in r["layouts"]]
    return "\n".join(lines)
