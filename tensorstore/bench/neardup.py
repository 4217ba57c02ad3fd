"""Near-duplicate search on real weights: LSH recall against brute force, and its speed.

For every model of a store, its private float blocks are looked up among the store's
other blocks at a tolerance, once with the FAISS LSH index (what ``dedup`` uses) and once
exhaustively. Recall is the share of blocks the exhaustive search finds a representative
for that the LSH also finds one for; speed is block bytes searched per second (index
build and exact verification included).
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import open as open_store
from ..dedup import find_matches, gather


def measure(store_path: Path, tolerance: float) -> dict:
    found_lsh = found_exact = both = 0
    query_bytes = 0
    lsh_seconds = exact_seconds = 0.0
    with open_store(store_path, "r") as s:
        for name in s.models():
            with s.env.read() as txn:
                _, _, blocks, private, vectors = gather(s, txn, name)
            queries = sorted(private)
            query_bytes += sum(blocks[i].nbytes for i in queries)
            t0 = time.perf_counter()
            lsh = find_matches(blocks, private, queries, vectors, tolerance)
            t1 = time.perf_counter()
            exact = find_matches(blocks, private, queries, vectors, tolerance, exhaustive=True)
            t2 = time.perf_counter()
            lsh_seconds += t1 - t0
            exact_seconds += t2 - t1
            found_lsh += len(lsh)
            found_exact += len(exact)
            both += len(set(lsh) & set(exact))
    return {
        "tolerance": tolerance,
        "query_bytes": query_bytes,
        "found_by_exhaustive": found_exact,
        "found_by_lsh": found_lsh,
        "recall": both / found_exact if found_exact else 1.0,
        "lsh_MBps": query_bytes / lsh_seconds / 1e6 if lsh_seconds else float("inf"),
        "exhaustive_MBps": query_bytes / exact_seconds / 1e6 if exact_seconds else float("inf"),
    }


def main(corpus: str, workdir: str | None, tolerances=(0.01, 0.05)) -> list[dict]:
    """Store the corpus's family in a temporary store and measure at each tolerance."""
    from .compare import stored_corpus

    with stored_corpus(corpus, workdir) as (path, _):
        return [measure(path, t) for t in tolerances]
