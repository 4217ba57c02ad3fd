"""How much each model shares with the others: a query over the catalog tables."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa

from .reports import _AsDict


@dataclass(frozen=True, slots=True)
class ModelSharing(_AsDict):
    """One model's bytes: as added, in distinct blocks, and how many of those it shares."""

    model: str
    tensors: int
    logical_bytes: int
    distinct_bytes: int  # bytes of the distinct blocks the model references
    shared_bytes: int  # of those, bytes of blocks another model references too
    private_bytes: int  # bytes only this model needs: what deleting it would free


def model_sharing(tables: dict[str, pa.Table]) -> list[ModelSharing]:
    """Per-model sharing figures from ``store.catalog()``."""
    blocks = tables["blocks"]
    per_model: dict[str, dict[int, int]] = defaultdict(dict)  # model -> {block id: bytes}
    for m, b, n in zip(blocks.column("model").to_pylist(), blocks.column("block_id").to_pylist(), blocks.column("nbytes").to_pylist()):
        per_model[m][b] = n
    holders = Counter(b for mine in per_model.values() for b in mine)
    out = []
    for row in tables["models"].to_pylist():
        mine = per_model[row["model"]]
        distinct = sum(mine.values())
        shared = sum(n for b, n in mine.items() if holders[b] > 1)
        out.append(ModelSharing(row["model"], row["tensors"], row["logical_bytes"], distinct, shared, distinct - shared))
    return out
