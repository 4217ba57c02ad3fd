"""Helpers shared by the store's tests (importable: tests/ is on pytest's path)."""

import numpy as np

import tensorstore as ts


def random_model(seed: int = 0, scale: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((200 * scale, 64)).astype(np.float32),
        "layer.0.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(64).astype(np.float32),
        "norm.weight": np.ones(64, np.float16),
        "steps": np.array(1234, np.int64),
    }


def snapshot(store: ts.Store) -> tuple:
    """Everything observable about a store: used to show a failed call changed nothing."""
    tables = store.catalog()
    return (
        store.stats().to_dict() | {"file_bytes": None},
        {name: t.to_pylist() for name, t in tables.items() if name != "models"},
        tables["models"].drop(["created"]).to_pylist(),
        {m: {k: v.tobytes() for k, v in store.load_model(m).items()} for m in store},
    )
