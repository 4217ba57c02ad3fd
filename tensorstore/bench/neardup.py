"""Near-duplicate search on real weights: LSH recall against brute force, and its speed.

For every model of a store, its private float blocks are looked up among the store's
other blocks at a tolerance, once with the FAISS LSH index and once exhaustively, the way
a ``dedup`` pass does it: one :class:`~tensorstore.dedup.BlockSearch` for the pass, synced to
each model's snapshot. Recall is the share of blocks the exhaustive search finds a
representative for that the LSH also finds one for; speed is query block bytes per second.

The LSH time counts everything the pass spends on search: reading every block from the
store (pages verified), hashing and norming it (once per pass), and per model the sync,
the Hamming search and the exact verification (the vectors it checks are read again from
the snapshot's pages: the index keeps none). The brute-force time counts its per-model
searches, reading every compared block from the same snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import open as open_store
from ..dedup import BlockSearch, private_blocks


def measure(store_path: Path, tolerance: float) -> dict:
    """Recall and speed of the LSH search against brute force at one tolerance.

    Parameters
    ----------
    store_path : Path
        A store holding a family of models (not modified).
    tolerance : float
        Relative L2 tolerance of a replacement.

    Returns
    -------
    dict
        ``query_bytes``, matches found each way, ``recall``, ``lsh_MBps`` and
        ``exhaustive_MBps``, and the LSH's ``index_build_s`` (first sync) and ``lsh_s``.
    """
    from ..readpath import ReadPath

    found_lsh = found_exact = both = 0
    query_bytes = 0
    lsh_seconds = exact_seconds = build_seconds = 0.0
    search = BlockSearch()
    with open_store(store_path, "r") as s:
        for name in s.models():
            # The search reads vectors from the snapshot's pages: keep it open meanwhile.
            with s.env.read() as txn:
                record = s.record(txn, name)
                t0 = time.perf_counter()
                blocks = search.sync(s, txn, ReadPath(s, txn, verify=True))
                t1 = time.perf_counter()
                build_seconds = build_seconds or t1 - t0
                private = private_blocks(record, blocks)
                queries = sorted(private)
                query_bytes += sum(blocks[i].nbytes for i in queries)
                t2 = time.perf_counter()
                lsh = search.find(blocks, private, queries, tolerance)
                t3 = time.perf_counter()
                exact = search.find(blocks, private, queries, tolerance, exhaustive=True)
                t4 = time.perf_counter()
                search.release()
            lsh_seconds += (t1 - t0) + (t3 - t2)
            exact_seconds += t4 - t3
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
        "index_build_s": build_seconds,
        "lsh_s": lsh_seconds,
    }


def main(corpus: str, workdir: str | None, tolerances=(0.01, 0.05)) -> list[dict]:
    """Store the corpus's family in a temporary store and measure at each tolerance."""
    from .compare import stored_corpus

    with stored_corpus(corpus, workdir) as (path, _):
        return [measure(path, t) for t in tolerances]
