"""Which magnitude statistic orders blocks best? A small, reproducible measurement.

Run ``python -m tensorstore_index.magnitude_study [--json]``. It trains a small numpy MLP (64 inputs,
half of them noise, 128 hidden units, 10 classes) on synthetic Gaussian-cluster data, cuts
its weight matrices into 64-element blocks as the store does (row-major), and for each
statistic of :mod:`index.magnitude` (and a random order as control) perturbs the blocks in
that order, lowest score first. A block is perturbed the way a lossy replacement would:
Gaussian noise of relative L2 size ``noise`` (``1.0`` ~ replacing it by an unrelated block
of the same norm), or set to zero (``noise = "zero"``).

The score of an ordering is the mean test accuracy over replacing 10 %, 20 %, ..., 90 % of
the blocks: higher means the ordering put the blocks that matter least first.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

from tensorstore_index.magnitude import STATISTICS, magnitude_order, magnitude_scores

BLOCK = 64
FRACTIONS = tuple(f / 10 for f in range(1, 10))


@dataclass(frozen=True, slots=True)
class OrderingScore:
    """Mean accuracy of one ordering under one perturbation, over the replaced fractions."""

    ordering: str
    perturbation: str
    mean_accuracy: float
    accuracy_by_fraction: tuple[float, ...]


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(1).standard_normal((10, 64))
    centers[:, 32:] = 0.0  # inputs 32..63 carry no signal: their weights should matter least
    labels = rng.integers(0, 10, n)
    x = centers[labels] + 1.5 * rng.standard_normal((n, 64))
    return x.astype(np.float32), labels


def train_mlp(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Train the 64-128-10 ReLU MLP; return its weights ``[W1, W2]`` and test data."""
    rng = np.random.default_rng(seed)
    x, y = _data(rng, 6000)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) / 11).astype(np.float32)
    for _ in range(60):  # mini-batch SGD with weight decay, a few seconds
        for batch in np.array_split(rng.permutation(len(x)), 30):
            h = np.maximum(x[batch] @ w1, 0)
            logits = h @ w2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(batch)), y[batch]] -= 1
            g2 = h.T @ p / len(batch)
            g1 = x[batch].T @ ((p @ w2.T) * (h > 0)) / len(batch)
            w2 -= 0.1 * (g2 + 1e-3 * w2)
            w1 -= 0.1 * (g1 + 1e-3 * w1)
    test_x, test_y = _data(np.random.default_rng(seed + 100), 4000)
    return [w1, w2], test_x, test_y


def accuracy(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of the MLP with ``weights``."""
    return float((np.argmax(np.maximum(x @ weights[0], 0) @ weights[1], 1) == y).mean())


def rescale_unit(weights: list[np.ndarray], unit: int, factor: float) -> list[np.ndarray]:
    """Scale one hidden unit's input weights by ``factor`` and its output by ``1/factor``.

    ReLU is positively homogeneous, so the network computes the same function; only the
    weights' magnitudes change. Trained transformers have such outlier units; a robust
    magnitude score should order blocks about as well after the rescale.
    """
    w1, w2 = (w.copy() for w in weights)
    w1[:, unit] *= factor
    w2[unit, :] /= factor
    return [w1, w2]


def study(
    noise: float | str = 0.5, seed: int = 0, repeats: int = 5, outlier: float = 1.0
) -> list[OrderingScore]:
    """Score every statistic and a random order under one perturbation.

    ``outlier != 1`` rescales hidden unit 0 by that factor first (see :func:`rescale_unit`).
    """
    weights, x, y = train_mlp(seed)
    if outlier != 1.0:
        weights = rescale_unit(weights, 0, outlier)
    blocks = [w.reshape(-1, BLOCK) for w in weights]
    # One global order over all blocks by per-tensor-normalised scores, as the store does.
    orderings = {
        s: magnitude_order(np.concatenate([magnitude_scores(tb, s) for tb in blocks]))
        for s in STATISTICS
    }
    rng = np.random.default_rng(seed + 1)
    n_blocks = sum(len(tb) for tb in blocks)
    label = str(noise) if outlier == 1.0 else f"{noise}, unit x{outlier:g}"
    results = []
    for name in (*STATISTICS, "random"):
        curves = []
        for repeat in range(repeats):
            order = orderings[name] if name in orderings else rng.permutation(n_blocks)
            curves.append(_accuracy_curve(weights, order, noise, repeat, x, y))
        mean_curve = np.mean(curves, axis=0)
        rounded = tuple(round(float(a), 4) for a in mean_curve)
        results.append(OrderingScore(name, label, float(mean_curve.mean()), rounded))
    return results


def _accuracy_curve(
    weights: list[np.ndarray],
    order: np.ndarray,
    noise: float | str,
    repeat: int,
    x: np.ndarray,
    y: np.ndarray,
) -> list[float]:
    """Accuracy after perturbing the first 10 %, 20 %, ... of blocks in ``order``.

    Block ``i`` always gets the same noise draw in a given repeat, whatever the ordering,
    so orderings are compared on equal terms.
    """
    where = [(t, b) for t, w in enumerate(weights) for b in range(w.size // BLOCK)]
    curve = []
    for fraction in FRACTIONS:
        changed = [w.reshape(-1, BLOCK).copy() for w in weights]
        for i in order[: int(fraction * len(where))]:
            t, b = where[i]
            changed[t][b] = _perturb(changed[t][b], noise, np.random.default_rng(repeat * 7919 + i))
        curve.append(accuracy([c.reshape(w.shape) for c, w in zip(changed, weights)], x, y))
    return curve


def _perturb(block: np.ndarray, noise: float | str, rng: np.random.Generator) -> np.ndarray:
    if noise == "zero":
        return np.zeros_like(block)
    step = rng.standard_normal(block.shape).astype(np.float32)
    return block + step * (float(noise) * np.linalg.norm(block) / np.linalg.norm(step))


def main(argv: list[str] | None = None) -> int:
    """Print each ordering's score per perturbation, averaged over seeds."""
    parser = argparse.ArgumentParser(
        prog="python -m tensorstore_index.magnitude_study", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seeds", type=int, default=3, help="models trained (default 3)")
    args = parser.parse_args(argv)
    table: dict[tuple[str, str], list[float]] = {}
    baselines = []
    for seed in range(args.seeds):
        weights, x, y = train_mlp(seed)
        baselines.append(accuracy(weights, x, y))
        for noise, outlier in ((0.5, 1.0), (1.0, 1.0), ("zero", 1.0), (0.5, 10.0), (1.0, 10.0)):
            for score in study(noise, seed, outlier=outlier):
                table.setdefault((score.perturbation, score.ordering), []).append(
                    score.mean_accuracy
                )
    rows = [
        {"perturbation": p, "ordering": o, "mean_accuracy": float(np.mean(v)), "per_seed": v}
        for (p, o), v in table.items()
    ]
    if args.json:
        json.dump({"baseline_accuracy": baselines, "results": rows}, sys.stdout, indent=2)
        print()
        return 0
    print(f"baseline accuracy per seed {[round(b, 4) for b in baselines]}")
    print("mean test accuracy over 10..90 % of blocks perturbed, lowest score first")
    for row in rows:
        per_seed = ", ".join(f"{a:.4f}" for a in row["per_seed"])
        label = f"{row['perturbation']:>15} {row['ordering']:>8}"
        print(f"{label}: {row['mean_accuracy']:.4f}  ({per_seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
