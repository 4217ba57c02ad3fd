"""The near-duplicate pass across tolerances: bytes, accuracy and evaluations per level.

The corpus is stored encoded (``codec="auto"``, no ``base=``), then one accuracy-gated
pass runs at the largest tolerance asked (a dry run: the store is not changed). The pass
runs one round per level of ``index.tolerance_levels`` and a pass at a smaller tolerance
is exactly its first rounds (``tensorstore/dedup.py``), so the state after each round *is*
the outcome of a pass at that level: bytes as stored (``encoded_bytes`` less the stored
bytes of every replacement accepted up to it), each model's accuracy and the evaluations
spent. ``separate`` also runs an applied pass per level on copies of the store and checks
that it ends with exactly those bytes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import tensorstore_index as index

from .. import open as open_store
from .compare import load_corpus


def main(corpus: str, workdir: str | None, max_accuracy_drop: float, tolerance: float, separate: bool = False) -> dict:
    c = load_corpus(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="ts-tolerance-", dir=workdir))
    try:
        path = tmp / "store"
        with open_store(path, "w", page_size=c.page_size, block_bytes=c.block_bytes, codec="auto") as s:
            for name, tensors in c.family.items():
                s.add_model(name, tensors)
            logical = sum(a.nbytes for t in c.family.values() for a in t.values())
            encoded = s.stats().encoded_bytes
            t0 = time.perf_counter()
            report = s.dedup(evaluate=c.evaluate, max_accuracy_drop=max_accuracy_drop, tolerance=tolerance, dry_run=True)
            seconds = time.perf_counter() - t0
        levels = []
        for level in index.tolerance_levels(tolerance):
            saved = sum(r.stored for m in report.models for r in m.replaced if r.level <= level)
            models = {}
            for m in report.models:
                done = [r for r in m.rounds if r["level"] <= level]
                models[m.model] = {
                    "accuracy_before": m.accuracy_before,
                    "accuracy_after": done[-1]["accuracy"] if done else m.accuracy_before,
                    "replaced": sum(1 for r in m.replaced if r.level <= level),
                    "evaluations": done[-1]["evaluations"] if done else m.evaluations,
                }
            drops = [v["accuracy_before"] - v["accuracy_after"] for v in models.values() if v["accuracy_before"] is not None]
            levels.append({
                "tolerance": level,
                "encoded_bytes": encoded - saved,
                "of_logical": (encoded - saved) / logical,
                "replaced": sum(v["replaced"] for v in models.values()),
                "evaluations": sum(v["evaluations"] for v in models.values()),
                "max_drop": max(drops, default=0.0),
                "models": models,
            })
        if separate:
            for row in levels:
                copy = tmp / f"t{row['tolerance']}"
                shutil.copytree(path, copy)
                with open_store(copy, "r+") as s:
                    s.dedup(evaluate=c.evaluate, max_accuracy_drop=max_accuracy_drop, tolerance=row["tolerance"])
                    row["separate_pass_encoded_bytes"] = s.stats().encoded_bytes
                shutil.rmtree(copy, ignore_errors=True)
        return {"corpus": corpus, "logical_bytes": logical, "encoded_bytes_lossless": encoded,
                "max_accuracy_drop": max_accuracy_drop, "pass_seconds": seconds, "levels": levels}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(res: dict) -> str:
    """The sweep as a markdown table."""
    lines = [f"{res['corpus']}: lossless encoded {res['encoded_bytes_lossless']:,} B "
             f"({res['encoded_bytes_lossless'] / res['logical_bytes']:.4f} of {res['logical_bytes']:,} B as added), "
             f"budget {res['max_accuracy_drop']} per model, one pass of {res['pass_seconds']:.0f} s", "",
             "| tolerance | bytes as stored | × as added | replaced blocks | evaluations | largest drop | separate pass |",
             "|---|---|---|---|---|---|---|"]
    for r in res["levels"]:
        sep = r.get("separate_pass_encoded_bytes")
        lines.append(f"| {r['tolerance']} | {r['encoded_bytes']:,} | {r['of_logical']:.4f} | {r['replaced']} | "
                     f"{r['evaluations']} | {r['max_drop']:.4f} | {'-' if sep is None else f'{sep:,}'} |")
    return "\n".join(lines)
