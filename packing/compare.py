"""Compare the packers on a generated instance: ``python -m tensorstore_packing.compare``.

Prints one row per algorithm (pages against the lower bound, pages read per tensor and
per model, time, solver status), or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tensorstore_packing.algorithms import ALGORITHMS, pack
from tensorstore_packing.instances import generate
from tensorstore_packing.objective import DEFAULT_READ_WEIGHT

_COLUMNS = (
    ("algorithm", "algorithm", "{}"),
    ("pages", "pages", "{}"),
    ("pages_lower_bound", "LB", "{}"),
    ("page_ratio", "pages/LB", "{:.4f}"),
    ("mean_read_ratio", "reads/LB (tensor)", "{:.4f}"),
    ("mean_pages_read_per_model", "pages/model", "{:.1f}"),
    ("mean_model_read_ratio", "reads/LB (model)", "{:.4f}"),
    ("seconds", "seconds", "{:.2f}"),
    ("status", "status", "{}"),
)


def compare(
    n_blocks: int = 100_000,
    *,
    seed: int = 0,
    changed_fraction: float = 0.0,
    read_weight: float = DEFAULT_READ_WEIGHT,
    time_limit: float = 10.0,
    algorithms: Sequence[str] = tuple(ALGORITHMS),
) -> dict[str, object]:
    """Run every algorithm on one generated instance.

    Returns
    -------
    dict
        ``{"instance": {...}, "results": [summary per algorithm]}`` (JSON-ready).
    """
    instance = generate(n_blocks, seed=seed, changed_fraction=changed_fraction)
    problem = instance.problem
    results = [
        pack(problem, name, read_weight=read_weight, time_limit=time_limit).summary()
        for name in algorithms
    ]
    return {
        "instance": {
            "blocks": problem.n_blocks,
            "tensors": problem.n_tensors,
            "models": problem.n_models,
            "references": problem.n_refs,
            "page_bytes": problem.page_bytes,
            "seed": seed,
            "changed_fraction": changed_fraction,
            "read_weight": read_weight,
        },
        "results": results,
    }


def format_table(report: dict[str, object]) -> str:
    """The comparison as an aligned text table."""
    rows = [[title for _, title, _ in _COLUMNS]]
    for result in report["results"]:  # type: ignore[union-attr]
        rows.append([fmt.format(result[key]) for key, _, fmt in _COLUMNS])
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    inst = report["instance"]
    head = (
        f"{inst['blocks']} blocks, {inst['tensors']} tensors, {inst['models']} models, "  # type: ignore[index]
        f"page {inst['page_bytes']} B, read_weight {inst['read_weight']}"  # type: ignore[index]
    )
    return "\n".join([head, *lines])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tensorstore_packing.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100_000, help="distinct blocks (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--changed-fraction", type=float, default=0.0,
                        help="sparse fine-tuning: fraction of group MLP blocks each model rewrites")
    parser.add_argument("--read-weight", type=float, default=DEFAULT_READ_WEIGHT)
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT seconds (two-stage)")
    parser.add_argument("--algorithm", action="append", choices=list(ALGORITHMS),
                        help="run only these (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.blocks <= 0:
        parser.error("--blocks must be positive")
    report = compare(
        args.blocks,
        seed=args.seed,
        changed_fraction=args.changed_fraction,
        read_weight=args.read_weight,
        time_limit=args.time_limit,
        algorithms=args.algorithm or tuple(ALGORITHMS),
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
