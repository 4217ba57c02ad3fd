"""A tiny family of related models trained in seconds on scikit-learn's digits.

A base MLP (64 -> 256 -> 256 -> 10) is trained on all ten classes; fine-tunes start from
it and train further on a shifted task (noisy or shifted images, a subset of classes)
with some layers frozen. Frozen layers stay bit-identical to the base, which is exactly
the sharing a deduplicating store should find; trained layers drift a little, which is
what near-duplicate dedup may recover within an accuracy budget.

Everything is numpy and seeded: the same seed gives the same bytes on any machine with
the same numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HIDDEN = 256
LAYERS = ("fc1", "fc2", "head")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    trainable: tuple[str, ...]  # layers the fine-tune may change
    task: str  # "base", "noisy", "shifted", "subset"
    seed: int
    epochs: int = 8


FAMILY = (
    Variant("digits-base", LAYERS, "base", 0, 30),
    Variant("digits-head-noisy", ("head",), "noisy", 1),
    Variant("digits-head-shifted", ("head",), "shifted", 2),
    Variant("digits-top-noisy", ("fc2", "head"), "noisy", 3),
    Variant("digits-top-subset", ("fc2", "head"), "subset", 4),
    Variant("digits-full-shifted", LAYERS, "shifted", 5),
)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (inputs in [0, 1], labels), read-only: parsed once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _data(task: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = _digits()
    rng = np.random.default_rng(1000 + seed)
    if task == "noisy":
        x = np.clip(x + rng.normal(0, 0.25, x.shape).astype(np.float32), 0, 1)
    elif task == "shifted":
        x = np.roll(x.reshape(-1, 8, 8), 1, axis=2).reshape(-1, 64)
    elif task == "subset":
        keep = y < 5
        x, y = x[keep], y[keep]
    order = np.random.default_rng(7).permutation(len(x))  # one split for every variant
    x, y = x[order], y[order]
    cut = int(0.75 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _init(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = {"fc1": (64, HIDDEN), "fc2": (HIDDEN, HIDDEN), "head": (HIDDEN, 10)}
    params = {}
    for layer, (n_in, n_out) in sizes.items():
        params[f"{layer}.weight"] = (rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        params[f"{layer}.bias"] = np.zeros(n_out, np.float32)
    return params


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of the MLP for inputs ``x`` of shape (n, 64)."""
    h = np.maximum(x @ params["fc1.weight"].T + params["fc1.bias"], 0)
    h = np.maximum(h @ params["fc2.weight"].T + params["fc2.bias"], 0)
    return h @ params["head.weight"].T + params["head.bias"]


def _train(params: dict[str, np.ndarray], trainable: tuple[str, ...], x, y, epochs: int, seed: int) -> dict[str, np.ndarray]:
    params = {k: v.copy() for k, v in params.items()}
    rng = np.random.default_rng(seed)
    lr, batch = 0.05, 64
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
            xb, yb = x[idx], y[idx]
            h1 = np.maximum(xb @ params["fc1.weight"].T + params["fc1.bias"], 0)
            h2 = np.maximum(h1 @ params["fc2.weight"].T + params["fc2.bias"], 0)
            logits = h2 @ params["head.weight"].T + params["head.bias"]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g3 = p / len(yb)
            grads = {"head.weight": g3.T @ h2, "head.bias": g3.sum(0)}
            g2 = (g3 @ params["head.weight"]) * (h2 > 0)
            grads.update({"fc2.weight": g2.T @ h1, "fc2.bias": g2.sum(0)})
            g1 = (g2 @ params["fc2.weight"]) * (h1 > 0)
            grads.update({"fc1.weight": g1.T @ xb, "fc1.bias": g1.sum(0)})
            for layer in trainable:  # frozen layers are never touched: they stay bit-identical
                for part in ("weight", "bias"):
                    key = f"{layer}.{part}"
                    params[key] = (params[key] - lr * grads[key]).astype(np.float32)
    return params


def build_family(variants: tuple[Variant, ...] = FAMILY) -> dict[str, dict[str, np.ndarray]]:
    """Train the family; return ``{model name: {tensor name: array}}`` (about 2 seconds)."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the matrices are small (64 rows a step), so threads only wait on one
    # another, 9x slower on a loaded 2-core machine; and one thread gives the same bits
    # whatever the thread count.
    with threadpool_limits(1, user_api="blas"):
        return _build(variants)


def _build(variants: tuple[Variant, ...]) -> dict[str, dict[str, np.ndarray]]:
    base_variant = variants[0]
    x, y, _, _ = _data(base_variant.task, base_variant.seed)
    base = _train(_init(base_variant.seed), LAYERS, x, y, base_variant.epochs, base_variant.seed)
    family = {base_variant.name: base}
    for v in variants[1:]:
        x, y, _, _ = _data(v.task, v.seed)
        family[v.name] = _train(base, v.trainable, x, y, v.epochs, v.seed)
    return family


_TASKS = {v.name: v for v in FAMILY}


def evaluate(name: str, tensors: dict[str, np.ndarray]) -> float:
    """Held-out accuracy of a family model on its own task (higher is better).

    The signature is the store's evaluator contract: ``evaluate(name, tensors) -> float``.
    """
    v = _TASKS.get(name)
    if v is None:
        raise KeyError(f"{name!r} is not a model of the digits family ({', '.join(_TASKS)})")
    _, _, x_test, y_test = _data(v.task, v.seed)
    return float((forward(tensors, x_test).argmax(axis=1) == y_test).mean())
