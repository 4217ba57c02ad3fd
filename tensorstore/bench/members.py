"""Per-block against per-tensor encoding, member by member.

The store encodes blocks (``block_bytes``, 64 KiB on the real corpora); the ZipLLM-style
baseline (:func:`tensorstore.bench.baselines.zipllm_style`) whole tensors, with the same
byte planes and zstd level; the store's deltas are differences, the baseline's XORs (BitX). Each member of a corpus is added to an encoded store
(``codec="auto"``, no ``base=``) in the corpus's order, and what it adds to
``encoded_bytes`` is set beside what the baseline adds for it: ``codec.encode_xor`` of every
tensor not seen before, XOR-ed with the parent's tensor of the same name and shape (the
baseline is told each parent), else packed alone.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import open as open_store
from . import baselines
from .compare import load_corpus


def main(corpus: str, workdir: str | None) -> dict:
    c = load_corpus(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="ts-members-", dir=workdir))
    rows = []
    try:
        with open_store(tmp / "store", "w", page_size=c.page_size, block_bytes=c.block_bytes, codec="auto") as s:
            before = s.stats()
            for name, tensors in c.family.items():
                s.add_model(name, tensors)
                after = s.stats()
                rows.append({
                    "model": name,
                    "parent": c.parents.get(name),
                    "logical_bytes": sum(a.nbytes for a in tensors.values()),
                    "store_bytes": after.encoded_bytes - before.encoded_bytes,
                    "store_blocks": {e: after.encodings[e] - before.encodings.get(e, 0) for e in after.encodings},
                })
                before = after
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    zipllm = baselines.zipllm_style(c.family, c.parents, repeat=1)
    for row in rows:
        added = zipllm["by_model"][row["model"]]
        row["zipllm_bytes"] = added["bytes"]
        row["zipllm_delta_tensors"] = added["delta_tensors"]
        row["zipllm_packed_tensors"] = added["packed_tensors"]
    total = {k: sum(r[k] for r in rows) for k in ("logical_bytes", "store_bytes", "zipllm_bytes")}
    return {"corpus": corpus, "block_bytes": c.block_bytes, "members": rows, "total": total,
            "zipllm_bit_exact": zipllm["bit_exact"]}


def table(res: dict) -> str:
    """Member by member, as a markdown table."""
    lines = [f"{res['corpus']}: blocks of {res['block_bytes']}, members in the corpus's order", "",
             "| member | parent | as added (MB) | store adds (MB) | blocks raw / packed / delta | ZipLLM-style adds (MB) | tensors delta / packed | store / ZipLLM-style |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["members"] + [dict(res["total"], model="**total**", parent=None)]:
        blocks = r.get("store_blocks")
        ratio = r["store_bytes"] / r["zipllm_bytes"] if r["zipllm_bytes"] else float("nan")
        lines.append(
            f"| {r['model']} | {r['parent'] or '-'} | {r['logical_bytes'] / 1e6:.2f} | {r['store_bytes'] / 1e6:.3f} | "
            + (f"{blocks.get('raw', 0)} / {blocks.get('packed', 0)} / {blocks.get('delta', 0)}" if blocks else "")
            + f" | {r['zipllm_bytes'] / 1e6:.3f} | "
            + (f"{r['zipllm_delta_tensors']} / {r['zipllm_packed_tensors']}" if "zipllm_delta_tensors" in r else "")
            + f" | {ratio:.3f} |"
        )
    return "\n".join(lines)
