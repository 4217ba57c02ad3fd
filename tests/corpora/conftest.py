"""Fixtures for the corpus tests: a tiny random BERT, so the maths is tested without weights."""

from __future__ import annotations

import numpy as np
import pytest

TINY = {"width": 64, "layers": 2, "ffn": 128, "vocab": 50, "positions": 16}  # 2 heads of 32


def make_tiny_bert(seed: int = 0) -> dict[str, np.ndarray]:
    """A random checkpoint named like all-MiniLM-L6-v2's, small enough for milliseconds."""
    rng = np.random.default_rng(seed)
    w, f = TINY["width"], TINY["ffn"]

    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": r(TINY["vocab"], w, scale=1.0),
        "embeddings.position_embeddings.weight": r(TINY["positions"], w),
        "embeddings.token_type_embeddings.weight": r(2, w),
        "embeddings.LayerNorm.weight": 1 + r(w, scale=0.1),
        "embeddings.LayerNorm.bias": r(w, scale=0.1),
        "embeddings.position_ids": np.arange(TINY["positions"], dtype=np.int64)[None],
        "pooler.dense.weight": r(w, w),
        "pooler.dense.bias": r(w),
    }
    for i in range(TINY["layers"]):
        p = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            t[f"{p}.attention.self.{name}.weight"], t[f"{p}.attention.self.{name}.bias"] = r(w, w), r(w)
        t[f"{p}.attention.output.dense.weight"], t[f"{p}.attention.output.dense.bias"] = r(w, w), r(w)
        t[f"{p}.intermediate.dense.weight"], t[f"{p}.intermediate.dense.bias"] = r(f, w), r(f)
        t[f"{p}.output.dense.weight"], t[f"{p}.output.dense.bias"] = r(w, f), r(w)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"{p}.{ln}.weight"], t[f"{p}.{ln}.bias"] = 1 + r(w, scale=0.1), r(w, scale=0.1)
    return t


def make_batch(seed: int = 0, n: int = 6, tokens: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and masks of varied lengths (at least 2 real tokens, the rest padding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, tokens + 1, n)
    lengths[0] = tokens  # one full row, so the batch is not trimmed
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int8)
    ids = rng.integers(1, TINY["vocab"], (n, tokens)).astype(np.int32) * mask
    return ids, mask


@pytest.fixture
def tiny_bert() -> dict[str, np.ndarray]:
    return make_tiny_bert()


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    return make_batch()
