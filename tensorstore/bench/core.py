"""Store-core figures: ingest and load speed against LMDB and safetensors, sizes, scaling.

Every ratio compares two things measured in the same run on the same bytes, each the
median of ``repeat`` runs, so that a busy machine moves both sides alike.
"""

from __future__ import annotations

import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

from .. import open as open_store
from ..formats import write_safetensors

PAGE, BLOCK = "1MiB", "64KiB"


def _median_time(fn, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        state = setup() if setup else None
        t0 = time.perf_counter()
        fn(state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def variant(base: dict[str, np.ndarray], seed: int, tensors: list[str] | None = None, scale: float = 1e-3) -> dict:
    """``base`` with the named tensors (default: all float tensors) perturbed: new bytes."""
    rng = np.random.default_rng(seed)
    out = dict(base)
    for k in tensors or [k for k, v in base.items() if v.dtype.kind == "f"]:
        v = base[k]
        out[k] = (v + scale * rng.standard_normal(v.shape).astype(v.dtype)).astype(v.dtype)
    return out


def head_only(base: dict[str, np.ndarray], seed: int = 0, classes: int = 2) -> dict:
    """The base with a new classifier head: what a head-only fine-tune stores."""
    rng = np.random.default_rng(seed)
    width = base["embeddings.LayerNorm.weight"].shape[0] if "embeddings.LayerNorm.weight" in base else 384
    return dict(base, **{
        "classifier.weight": (rng.standard_normal((classes, width)) * 0.02).astype(np.float32),
        "classifier.bias": np.zeros(classes, np.float32),
    })


def run(model: dict[str, np.ndarray], workdir: Path, *, repeat: int = 5, models_in_big_store: int = 50,
        codec: str = "raw") -> dict:
    """Measure the store-core figures on ``model`` with stores of ``codec``; return them."""
    nbytes = sum(v.nbytes for v in model.values())
    res: dict = {"model_bytes": nbytes, "tensors": len(model), "repeat": repeat, "page_size": PAGE, "block_bytes": BLOCK,
                 "codec": codec}
    counter = iter(range(10**9))

    stores = []

    def fresh_store():
        stores.append(open_store(workdir / f"s{next(counter)}", "w", page_size=PAGE, block_bytes=BLOCK, codec=codec))
        return stores[-1]

    # Ingest of new data, and the same bytes written raw into LMDB as the store's pages,
    # alternated run by run so that drift in the disk's speed hits both alike.
    probe = fresh_store()
    probe.add_model("m", model)
    pages, page_bytes = probe.stats().pages, probe.page_size
    res["encoded_bytes"] = probe.stats().encoded_bytes
    payload = [np.random.default_rng(i).bytes(page_bytes) for i in range(pages)]

    def raw_write(env):
        db = env.open_db(b"pages")
        with env.begin(write=True) as txn:
            for i, p in enumerate(payload):
                txn.put(i.to_bytes(8, "big"), p, db=db)
        env.close()

    def add_new(s):
        s.add_model("m", model)

    ingest, raw = [], []
    for _ in range(repeat):
        ingest.append(_median_time(add_new, 1, fresh_store))
        raw.append(_median_time(raw_write, 1, lambda: lmdb.open(
            str(workdir / f"raw{next(counter)}"), map_size=4 * pages * page_bytes + (64 << 20), max_dbs=8)))
    res["ingest_new_s"] = statistics.median(ingest)
    res["lmdb_raw_s"] = statistics.median(raw)
    # Each pair ran back to back: the median of their ratios cancels drift best.
    res["paired_ratio"] = statistics.median((pages * page_bytes / r) / (nbytes / i) for i, r in zip(ingest, raw))
    res["lmdb_raw_bytes"] = pages * page_bytes

    # Ingest of data already present, warm load against safetensors.
    with fresh_store() as s:
        s.add_model("m", model)
        names = iter(range(10**9))
        res["ingest_present_s"] = _median_time(lambda _: s.add_model(f"copy{next(names)}", model), repeat)
        for i in range(10 - 1 - repeat):
            s.add_model(f"extra{i}", model)
        st = s.stats()
        res["ten_copies_stored_bytes"] = st.stored_bytes
        res["padding_overhead"] = (pages * page_bytes - res["encoded_bytes"]) / res["encoded_bytes"]
        loads, files = _paired_loads(s, "m", model, workdir / "model.safetensors", repeat)
        res["load_warm_s"] = statistics.median(loads)
        res["safetensors_load_warm_s"] = statistics.median(files)
        res["load_paired_ratio"] = statistics.median(f / m for f, m in zip(files, loads))
        res["load_warm_unverified_s"] = _median_time(lambda _: s.load_model("m", verify=False), repeat)
        res["one_copy_stored_bytes"] = pages * page_bytes
        before = st.unique_bytes
        s.add_model("head-only", head_only(model))
        res["head_only_added_bytes"] = s.stats().unique_bytes - before

    # A full fine-tune (every float weight moved a little): stored mostly as deltas of the
    # base under codec="auto"; its warm load decodes them, against safetensors' load of it.
    tuned = variant(model, seed=7)
    with fresh_store() as s:
        s.add_model("base", model)
        before = s.stats()
        s.add_model("tuned", tuned)
        after = s.stats()
        res["tuned_added_encoded_bytes"] = after.encoded_bytes - before.encoded_bytes
        res["tuned_delta_blocks"] = after.encodings["delta"] - before.encodings["delta"]
        res["tuned_new_blocks"] = after.unique_blocks - before.unique_blocks
        loads, files = _paired_loads(s, "tuned", tuned, workdir / "tuned.safetensors", repeat)
        res["tuned_load_warm_s"] = statistics.median(loads)
        res["tuned_safetensors_load_warm_s"] = statistics.median(files)
        res["tuned_load_paired_ratio"] = statistics.median(m / f for f, m in zip(files, loads))

    # Scaling: the same new model into an empty store and into one holding many models.
    newcomer = variant(model, seed=10**6)
    with fresh_store() as big:
        big.add_model("base", model)
        for i in range(models_in_big_store - 1):
            big.add_model(f"ft{i}", variant(model, seed=i, tensors=_top_layers(model)))
        res["big_store_models"] = len(big)
        res["big_store_unique_bytes"] = big.stats().unique_bytes
        added = iter(range(10**9))

        def into_big(_):  # add and delete, so every round adds the same new bytes
            name = f"new{next(added)}"
            big.add_model(name, newcomer)
            big.delete_model(name)

        res["ingest_into_big_s"] = _median_time(into_big, repeat)

    # The same add-and-delete cycle into a store that holds nothing else.
    with fresh_store() as empty:

        def into_empty(_):
            empty.add_model("new", newcomer)
            empty.delete_model("new")

        res["ingest_into_empty_s"] = _median_time(into_empty, repeat)
    for s in stores:
        s.close()
    return res


def _paired_loads(store, name: str, model: dict, st_file: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Warm ``load_model(name)`` and safetensors' ``load_file`` of the same tensors, timed
    alternately run by run so that both see the same machine (ratios: median of the pairs)."""
    from safetensors.numpy import load_file

    write_safetensors(st_file, model)
    store.load_model(name)  # warm the page cache and the map
    load_file(str(st_file))
    loads, files = [], []
    for _ in range(repeat):
        loads.append(_median_time(lambda _: store.load_model(name), 1))
        files.append(_median_time(lambda _: load_file(str(st_file)), 1))
    return loads, files


def _top_layers(model: dict) -> list[str]:
    """Tensor names of the top two encoder layers (what a top-layer fine-tune changes)."""
    layers = sorted({int(k.split(".")[2]) for k in model if k.startswith("encoder.layer.")})
    top = {str(i) for i in layers[-2:]}
    picked = [k for k in model if k.startswith("encoder.layer.") and k.split(".")[2] in top]
    return picked or [k for k in model if model[k].dtype.kind == "f"][-4:]


def summarize(r: dict) -> dict:
    """The ratios the store-core issue asks for."""
    gb = 1e9
    return {
        "ingest_new_GBps": r["model_bytes"] / r["ingest_new_s"] / gb,
        "lmdb_raw_GBps": r["lmdb_raw_bytes"] / r["lmdb_raw_s"] / gb,
        "ingest_new_vs_lmdb_raw": 1 / r["paired_ratio"],
        "ingest_present_GBps": r["model_bytes"] / r["ingest_present_s"] / gb,
        "load_warm_ms": r["load_warm_s"] * 1e3,
        "load_warm_unverified_ms": r["load_warm_unverified_s"] * 1e3,
        "safetensors_load_warm_ms": r["safetensors_load_warm_s"] * 1e3,
        "load_speed_vs_safetensors": r["load_paired_ratio"],
        "ten_copies_vs_one": r["ten_copies_stored_bytes"] / r["one_copy_stored_bytes"],
        "head_only_adds_fraction": r["head_only_added_bytes"] / r["model_bytes"],
        "padding_overhead": r["padding_overhead"],
        "ingest_big_vs_empty": r["ingest_into_big_s"] / r["ingest_into_empty_s"],
        "encoded_vs_model_bytes": r["encoded_bytes"] / r["model_bytes"],
        "full_fine_tune_adds_fraction": r["tuned_added_encoded_bytes"] / r["model_bytes"],
        "full_fine_tune_delta_blocks_fraction": r["tuned_delta_blocks"] / max(1, r["tuned_new_blocks"]),
        "full_fine_tune_load_time_vs_safetensors": r["tuned_load_paired_ratio"],
    }


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(corpus: str = "minilm", repeat: int = 5, workdir: str | None = None, codec: str = "raw") -> dict:
    if corpus == "minilm":
        from ..corpora import minilm

        model = minilm.load_base()
    elif corpus == "digits":
        from ..corpora import digits

        model = digits.build_family(digits.FAMILY[:1])["digits-base"]
    else:  # another named corpus: its root model
        from ..corpora import registry

        c = registry.load(corpus)
        model = c.family[c.root or next(iter(c.family))]
    tmp = Path(tempfile.mkdtemp(prefix="ts-bench-", dir=workdir))
    try:
        raw = run(model, tmp, repeat=repeat, models_in_big_store=50 if corpus in ("minilm", "embedding") else 10, codec=codec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"corpus": corpus, "codec": codec, "machine": machine(), "raw": raw, "summary": summarize(raw)}
