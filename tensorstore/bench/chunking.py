"""Row-aligned contiguous blocks against the 2-D tiles of the VLDB paper.

For each fine-tune of a family and each float tensor, both schemes cut the fine-tune and
its base into blocks of about ``block_bytes``; a block is *exactly shared* when it equals
the base's block at the same place, and *nearly shared* at tolerance ε when its relative
L2 distance to that block is at most ε. The bytes in such blocks, summed over the family,
say how much each scheme lets exact and near-duplicate dedup find.
"""

from __future__ import annotations

import math

import numpy as np

from ..chunking import block_spans, block_step

TOLERANCES = (0.001, 0.01, 0.05)


def _row_blocks(a: np.ndarray, block_bytes: int) -> list[np.ndarray]:
    flat = a.reshape(-1)
    step = block_step(a.shape, a.itemsize, block_bytes) // a.itemsize
    return [flat[s:e] for s, e in block_spans(flat.size, step)]


def _tile_blocks(a: np.ndarray, block_bytes: int) -> list[np.ndarray]:
    if a.ndim < 2:
        return _row_blocks(a, block_bytes)
    m = a.reshape(a.shape[0], -1)
    t = max(1, math.isqrt(block_bytes // a.itemsize))
    return [m[i : i + t, j : j + t].reshape(-1) for i in range(0, m.shape[0], t) for j in range(0, m.shape[1], t)]


SCHEMES = {"rows": _row_blocks, "tiles": _tile_blocks}


def compare(base: dict[str, np.ndarray], tuned: dict[str, np.ndarray], block_bytes: int) -> dict[str, dict[str, float]]:
    """Bytes exactly / nearly shared with ``base``, per scheme, for one fine-tune."""
    out = {}
    for scheme, cut in SCHEMES.items():
        exact = 0
        near = dict.fromkeys(TOLERANCES, 0)
        total = 0
        for name, t in tuned.items():
            b = base.get(name)
            total += t.nbytes
            if b is None or b.shape != t.shape or t.dtype.kind != "f":
                continue
            for tb, bb in zip(cut(t, block_bytes), cut(b, block_bytes)):
                n = tb.nbytes
                if tb.tobytes() == bb.tobytes():
                    exact += n
                ref = float(np.linalg.norm(bb.astype(np.float64)))
                err = float(np.linalg.norm(tb.astype(np.float64) - bb)) / ref if ref else (0.0 if not tb.any() else math.inf)
                for eps in TOLERANCES:
                    if err <= eps:
                        near[eps] += n
        out[scheme] = {"total": total, "exact": exact, **{f"near@{eps}": v for eps, v in near.items()}}
    return out


def study(family: dict[str, dict[str, np.ndarray]], base_name: str, block_sizes=(4096, 16384, 65536)) -> list[dict]:
    rows = []
    for bb in block_sizes:
        sums: dict[str, dict[str, float]] = {}
        for name, tensors in family.items():
            if name == base_name:
                continue
            for scheme, figures in compare(family[base_name], tensors, bb).items():
                acc = sums.setdefault(scheme, {})
                for k, v in figures.items():
                    acc[k] = acc.get(k, 0) + v
        for scheme, acc in sums.items():
            total = acc.pop("total")
            rows.append({"block_bytes": bb, "scheme": scheme, **{k: v / total for k, v in acc.items()}})
    return rows
