"""Bytes a remote moves: push a family, push one more fine-tune, pull one fine-tune.

    python -m tensorstore.bench.remote_bench [--family DIR] [--url URL]

Uses the cached MiniLM family (``tensorstore.corpora.minilm_family``), or any family
directory of its layout (``--family ~/.cache/tensorstore/embedding-family``); the remote is a
fresh local directory unless ``--url`` names another (it must be empty). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import tensorstore as ts
from tensorstore import remote


def needed_bytes(store, name: str) -> int:
    """Bytes (as stored) of a model's distinct blocks and the references their deltas need."""
    with store.env.read() as txn:
        from tensorstore.readpath import ReadPath

        reader = ReadPath(store, txn, verify=False)
        todo = {int(i) for t in store.record(txn, name).tensors for i in t.block_ids}
        seen, total = set(), 0
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            b = reader.block(i)
            total += b.stored
            if b.ref:
                todo.add(b.ref)
        return total


def run(family: dict, url: str | None, work: Path) -> dict:
    names = list(family)
    last = next(n for n in reversed(names) if "full" in n) if any("full" in n for n in names) else names[-1]
    first = [n for n in names if n != last]
    url = url or (work / "remote").as_uri()
    out: dict = {"models": len(names), "added_later": last}
    with ts.open(work / "src", "w") as s:
        for n in first:
            s.add_model(n, family[n])
        t = time.perf_counter()
        r1 = s.push(url)
        out["first_push"] = {"models": len(first), "seconds": round(time.perf_counter() - t, 2), **r1.transfer,
                             "stored_bytes_sent": r1.stored_bytes_sent, "snapshot_bytes": r1.snapshot_bytes,
                             "packs": r1.packs_sent, "encoded_bytes_in_store": s.stats().encoded_bytes}
        before = s.stats().encoded_bytes
        s.add_model(last, family[last])
        new = s.stats().encoded_bytes - before
        t = time.perf_counter()
        r2 = s.push(url)
        out["second_push"] = {"seconds": round(time.perf_counter() - t, 2), **r2.transfer, "new_stored_bytes": new,
                              "snapshot_bytes": r2.snapshot_bytes, "ratio": round(r2.transfer["bytes_out"] / new, 4)}
        need = needed_bytes(s, last)
    t = time.perf_counter()
    r3 = ts.pull(url, work / "dst", [last])
    got = r3.transfer["bytes_in"]
    out["pull_one"] = {"model": last, "seconds": round(time.perf_counter() - t, 2), **r3.transfer, "needed_bytes": need,
                       "snapshot_bytes": r3.snapshot_bytes, "ratio_without_snapshot": round((got - r3.snapshot_bytes) / need, 4)}
    t = time.perf_counter()
    r4 = ts.pull(url, work / "all")
    out["pull_all"] = {"seconds": round(time.perf_counter() - t, 2), **r4.transfer,
                       "logical_bytes": sum(a.nbytes for m in family.values() for a in m.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tensorstore.bench.remote_bench")
    p.add_argument("--family", type=Path, default=None, help="the MiniLM family's directory (default: the cache)")
    p.add_argument("--url", default=None, help="an empty remote (default: a new local directory)")
    args = p.parse_args(argv)
    from tensorstore.corpora.minilm_family import load_family

    # Any family directory of that layout (family.json + one safetensors file per model).
    family = load_family(args.family)
    with tempfile.TemporaryDirectory() as work:
        print(json.dumps(run(family, args.url, Path(work)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
