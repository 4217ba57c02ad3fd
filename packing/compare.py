"""Compare the packers on a generated instance: ``python -m tensorstore_packing.compare``.

Prints one row per algorithm (pages against the lower bound, pages read per tensor and
per model, time, solver status), or JSON with ``--json``. ``--reads-bound SECONDS`` adds
the least mean pages read per model over its bound that any layout within the page target
can reach (a proven lower bound, :mod:`packing.read_bound`), and a row for the whole-block
layout built from the solver's best (``reads-bound``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tensorstore_packing.algorithms import ALGORITHMS, pack
from tensorstore_packing.instances import EncodedSizes, generate
from tensorstore_packing.objective import DEFAULT_READ_WEIGHT
from tensorstore_packing.read_bound import model_reads_bound, page_budget, realize
from tensorstore_packing.result import score
from tensorstore_packing.two_stage import TwoStageOptions

_COLUMNS = (
    ("algorithm", "algorithm", "{}"),
    ("pages", "pages", "{}"),
    ("pages_lower_bound", "LB", "{}"),
    ("page_ratio", "pages/LB", "{:.4f}"),
    ("mean_read_ratio", "reads/LB (tensor)", "{:.4f}"),
    ("mean_pages_read_per_model", "pages/model", "{:.1f}"),
    ("mean_model_read_ratio", "reads/LB (model)", "{:.4f}"),
    ("max_model_read_ratio", "worst model", "{:.4f}"),
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
    n_models: int = 12,
    n_groups: int = 3,
    block_bytes: int = 64 * 1024,
    page_bytes: int = 1 << 20,
    encoded: bool = False,
    reads_bound: float | None = None,
    plan_time_limit: float = 0.0,
    family_time_limit: float = TwoStageOptions().family_time_limit,
) -> dict[str, object]:
    """Run every algorithm on one generated instance (``encoded``: blocks of
    :meth:`EncodedSizes.typical` sizes, each delta read with its reference);
    ``reads_bound``: also bound the per-model reads within the page target, with CP-SAT
    for that many seconds (the relaxation: a lower bound); ``plan_time_limit``: seconds
    of Two-Stage's model-set plan, ``family_time_limit`` of its family layout
    (:class:`TwoStageOptions`).

    Returns
    -------
    dict
        ``{"instance": {...}, "results": [summary per algorithm]}`` (JSON-ready).
    """
    instance = generate(
        n_blocks, seed=seed, changed_fraction=changed_fraction, n_models=n_models, n_groups=n_groups,
        block_bytes=block_bytes, page_bytes=page_bytes, encoded=EncodedSizes.typical() if encoded else None,
    )
    problem = instance.problem
    options = TwoStageOptions(
        time_limit=time_limit, plan_time_limit=plan_time_limit, family_time_limit=family_time_limit
    )
    packed = [pack(problem, name, read_weight=read_weight, options=options) for name in algorithms]
    results = [r.summary() for r in packed]
    bound = None
    if reads_bound is not None and problem.n_models:
        budget = page_budget(problem)
        # start from the packers' layout that fits the budget and reads least per model
        fitting = [r for r in packed if r.pages <= budget]
        start = min(fitting, key=lambda r: r.model_reads().mean_ratio).block_page if fitting else None
        found = model_reads_bound(problem, budget, time_limit=reads_bound, hint=start)
        bound = {k: v for k, v in found.summary().items() if k not in ("pages_read", "model_bound")}
        row = score(problem, realize(problem, found), read_weight=read_weight).summary()
        results.append({**row, "algorithm": "reads-bound", "seconds": round(found.seconds, 3), "status": found.status})
    return {
        "instance": {
            "blocks": problem.n_blocks,
            "tensors": problem.n_tensors,
            "models": problem.n_models,
            "references": problem.n_refs,
            "page_bytes": problem.page_bytes,
            "seed": seed,
            "changed_fraction": changed_fraction,
            "encoded": encoded,
            "model_bound_mean": float(pack(problem, "baseline").model_reads().lower_bound.mean())
            if problem.n_models else 0.0,
            "read_weight": read_weight,
            "reads_bound": bound,
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
        + (f", encoded, model bound {inst['model_bound_mean']:.2f} pages" if inst.get("encoded") else "")  # type: ignore[union-attr]
    )
    bound = inst.get("reads_bound")  # type: ignore[union-attr]
    if bound:
        head += (
            f"\nreads bound within {bound['max_pages']} pages: pages read per model / bound, mean >= "
            f"{bound['lower_bound']:.4f} ({bound['status']}, best layout found {bound['best']:.4f} before "
            "whole blocks: row reads-bound)"
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
    parser.add_argument("--models", type=int, default=12, help="models in the family (default 12)")
    parser.add_argument("--groups", type=int, default=3, help="groups sharing middle layers (default 3)")
    parser.add_argument("--block-kib", type=int, default=64, help="block size in KiB (default 64)")
    parser.add_argument("--page-kib", type=int, default=1024, help="page size in KiB (default 1024)")
    parser.add_argument("--encoded", action="store_true",
                        help="encoded blocks: sizes drawn from the codec's measured output, deltas read with their references")
    parser.add_argument("--reads-bound", type=float, metavar="SECONDS",
                        help="also bound the pages read per model within the page target (CP-SAT seconds)")
    parser.add_argument("--family-time", type=float, default=TwoStageOptions().family_time_limit, metavar="SECONDS",
                        help="two-stage: seconds for the family layout (default %(default)s; 0: none)")
    parser.add_argument("--plan-time", type=float, default=0.0, metavar="SECONDS",
                        help="two-stage: seconds for the model-set plan (default 0: none)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.blocks <= 0:
        parser.error("--blocks must be positive")
    if args.reads_bound is not None and not args.reads_bound > 0:
        parser.error("--reads-bound must be a positive number of seconds")
    if not args.plan_time >= 0:
        parser.error("--plan-time must be >= 0 seconds")
    if not args.family_time >= 0:
        parser.error("--family-time must be >= 0 seconds")
    report = compare(
        args.blocks,
        seed=args.seed,
        changed_fraction=args.changed_fraction,
        read_weight=args.read_weight,
        time_limit=args.time_limit,
        algorithms=args.algorithm or tuple(ALGORITHMS),
        n_models=args.models,
        n_groups=args.groups,
        block_bytes=args.block_kib * 1024,
        page_bytes=args.page_kib * 1024,
        encoded=args.encoded,
        reads_bound=args.reads_bound,
        plan_time_limit=args.plan_time,
        family_time_limit=args.family_time,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
