"""Packers on a real store's layout question: pages and pages read against their bounds.

The family is stored as ``add_model`` writes it (encoded blocks, the default codec: a
delta's reference is read with it, and both count), and every packer is run on the
store's catalog without writing anything: pages against the lower bound, pages read per
tensor and per model against theirs, and solve time. The first row scores the layout
ingest wrote (``packing.score``), which ``store.repack()`` keeps unless a packer's is better.
"""

from __future__ import annotations

import statistics

import tensorstore_packing as packing

from .. import open as open_store
from ..repack import _column, catalog_problem, packing_problem


def main(corpus: str, workdir: str | None, time_limit: float = 10.0) -> list[dict]:
    from .compare import stored_corpus

    with stored_corpus(corpus, workdir) as (path, _), open_store(path, "r") as s, s.env.read() as txn:
        models, tensors, blocks = catalog_problem(s, txn)
        problem = packing_problem(s, models, tensors, blocks)
    ingest = packing.score(problem, _column(problem, blocks, "page_id"), _column(problem, blocks, "offset"))
    rows = []
    for algorithm in ("as ingested", *packing.ALGORITHMS):
        r = ingest if algorithm == "as ingested" else packing.pack(problem, algorithm, time_limit=time_limit)
        reads = r.model_reads(models)
        rows.append({
            "algorithm": algorithm,
            "blocks": len(blocks),
            "tensors": len(tensors),
            "pages": r.pages,
            "lower_bound_pages": r.lower_bound_pages,
            "pages_over_bound": r.pages / r.lower_bound_pages,
            "tensor_reads_over_bound": r.mean_read_ratio,
            "model_pages_read_mean": float(reads.mean_pages_read),
            "model_pages_read_bound_mean": float(statistics.mean(reads.lower_bound.tolist())),
            "model_reads_over_bound_mean": reads.mean_ratio,
            "model_reads_over_bound_max": float((reads.pages_read / reads.lower_bound.clip(1)).max()),
            "cost": r.cost,
            "solve_seconds": r.solve_seconds,
            "status": r.status,
        })
    return rows
