"""How much each model shares with the others: a query over the catalog tables."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa

from .reports import _AsDict


@dataclass(frozen=True, slots=True)
class ModelSharing(_AsDict):
    """One model's bytes: as added, in distinct blocks, how many of those it shares, and
    how its private blocks are stored (their bytes in pages, per encoding)."""

    model: str
    tensors: int
    logical_bytes: int
    distinct_bytes: int  # bytes of the distinct blocks the model references
    shared_bytes: int  # of those, bytes of blocks another model references too
    private_bytes: int  # bytes only this model needs (decoded)
    raw_bytes: int = 0  # private blocks kept as they are: their bytes in pages
    packed_bytes: int = 0  # private blocks kept as compressed byte planes
    delta_bytes: int = 0  # private blocks kept as deltas of another block


def model_sharing(tables: dict[str, pa.Table]) -> list[ModelSharing]:
    """Per-model sharing figures from ``store.catalog()``."""
    blocks = tables["blocks"]
    per_model: dict[str, dict[int, int]] = defaultdict(dict)  # model -> {block id: bytes}
    stored: dict[int, tuple[str, int]] = {}  # block id -> (encoding, bytes in its page)
    columns = (blocks.column(c).to_pylist() for c in ("model", "block_id", "nbytes", "encoding", "stored_bytes"))
    for m, b, n, encoding, size in zip(*columns):
        per_model[m][b] = n
        stored[b] = (encoding, size)
    holders = Counter(b for mine in per_model.values() for b in mine)
    out = []
    for row in tables["models"].to_pylist():
        mine = per_model[row["model"]]
        distinct = sum(mine.values())
        shared = sum(n for b, n in mine.items() if holders[b] > 1)
        by_encoding = Counter()
        for b in mine:
            if holders[b] == 1:
                by_encoding[stored[b][0]] += stored[b][1]
        out.append(ModelSharing(row["model"], row["tensors"], row["logical_bytes"], distinct, shared, distinct - shared,
                                by_encoding["raw"], by_encoding["packed"], by_encoding["delta"]))
    return out
