"""Compare every policy with Belady's optimum on the generated workloads, and check the targets.

Run ``python -m tensorstore_bufferpool.compare`` for a table, ``--json`` for machine-readable output.
Capacities run from half of one model's size up to 60% of the family's distinct pages.

Targets (issue 5), checked per workload at capacities of at least one model's size:

* ``not_worse``: the queueing policy's miss ratio is <= the best of LRU, LFU, ARC, S3-FIFO
  at every capacity;
* ``shift_gain``: where popularity shifts, its mean miss ratio over those capacities is
  <= 0.9 x the mean of the per-capacity best baseline's (``known_shifts``: the same ratio
  for the queueing policy told when popularity shifts, see :class:`KnownShifts`);
* ``near_belady``: its hit ratio is within 3 points of Belady's at every capacity;

and below one model's size: ``small_cache``: its hit ratio is >= 50% of Belady's.

Next to Belady (the offline optimum) each row reports ``bound``: an upper bound on the
*expected* hit ratio of any online policy, even one told the true request probabilities
(:func:`online_bound`). ``near_belady`` reports ``bound_gap``, the largest
``belady - bound`` over the capacities: when it exceeds 0.03, no online policy meets the
target in expectation on that trace.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .queueing import QueueingReplacer
from .simulate import belady, simulate
from .workload import Workload, generate

#: Workload name -> arguments of :func:`bufferpool.workload.generate` (besides the seed).
WORKLOADS: dict[str, dict[str, Any]] = {
    "zipf": {"popularity": "zipf"},
    "pareto": {"popularity": "pareto"},
    "zipf-shift": {"popularity": "zipf", "shift_every": 300},
    "pareto-shift": {"popularity": "pareto", "shift_every": 300},
}
BASELINES = ("lru", "lfu", "arc", "s3fifo")
POLICIES_SHOWN = ("queueing", *BASELINES, "mru")
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


@dataclass(frozen=True, slots=True)
class Row:
    """Hit ratios of every policy, of the rate oracle and of Belady at one capacity."""

    capacity_pages: int
    fraction: float  # of the distinct pages
    hit_ratio: dict[str, float]
    oracle: float
    belady: float
    bound: float = math.nan  # online_bound: no online policy's expected hit ratio is higher
    known_shifts: float = math.nan  # the queueing policy with KnownShifts (shifting workloads)


class TrueRates:
    """The workload's true request probabilities, as a rate estimator (not an online one).

    Run inside the queueing policy it shows what the policy would reach if its rate
    estimates were exact: the part of the gap to Belady that estimation could still close.
    """

    def __init__(self, workload: Workload) -> None:
        self._phases = workload.popularity
        self._phase_length = workload.phase_length

    def observe(self, model: Any, now: float) -> None:
        """Nothing to learn."""

    def rate(self, model: Any, now: float) -> float:
        """The probability of ``model`` in the phase of request number ``now``."""
        phase = min(max(int(now) - 1, 0) // self._phase_length, len(self._phases) - 1)
        return self._phases[phase].get(model, 0.0)


class KnownShifts:
    """Told *when* popularity changes (the phase starts), not the new probabilities.

    The rate of a model is the Dirichlet posterior mean (``prior`` per model, over the
    models seen so far plus one) of the requests counted since the last change: what an
    online estimator could reach with instant, exact change detection. Run inside the
    queueing policy on a shifting workload, it separates the cost of detecting a shift
    from the cost of learning the new popularity, which every online policy pays.
    """

    def __init__(self, workload: Workload, prior: float = 0.5) -> None:
        self._phase_length = workload.phase_length
        self._prior = prior
        self._seen: set[Any] = set()
        self._counts: dict[Any, int] = {}
        self._n = 0
        self._phase = 0

    def observe(self, model: Any, now: float) -> None:
        """Count a request, forgetting the counts at the first request of a phase."""
        phase = max(int(now) - 1, 0) // self._phase_length
        if phase != self._phase:
            self._phase, self._counts, self._n = phase, {}, 0
        self._seen.add(model)
        self._counts[model] = self._counts.get(model, 0) + 1
        self._n += 1

    def rate(self, model: Any, now: float) -> float:
        """Posterior mean share of ``model`` in the current phase."""
        a = self._prior
        return (self._counts.get(model, 0) + a) / (self._n + a * (len(self._seen) + 1))


def online_bound(workload: Workload, capacity_pages: int) -> float:
    r"""Upper bound on the expected hit ratio of any online policy on ``workload``'s trace.

    Requests are drawn independently from the phase's probabilities ``p_m``, so the model
    of request ``t`` is independent of the cache contents ``C_t`` when it arrives (they
    depend on earlier requests only). A request for ``m`` hits at most the pages of ``m``
    already in ``C_t`` (plus repeats within the request), so, with
    ``λ_p = Σ_{m needs p} p_m``:

    .. code-block:: text

        E[hits of request t | the past]  <=  Σ_{p in C_t} λ_p  <=  max over |C| <= F of Σ_{p in C} λ_p

    where ``C`` ranges over pages already read before ``t`` (a page cannot be cached
    before its first read). Summed over the trace and divided by the accesses, this bounds
    the expected hit ratio of every policy that does not see the future — including the
    queueing policy given the true rates. Belady's hit ratio above it is the part of the
    gap to Belady that no online policy can close in expectation (a policy's hit ratio on
    one trace differs from its expectation by chance: by 0.2-0.5 point, one standard
    deviation, for the true-rate queueing policy on these workloads).
    """
    pages = sorted(workload.sharing)
    index = {page: i for i, page in enumerate(pages)}
    members = {model: [index[p] for p in dict.fromkeys(ps)] for model, ps in workload.model_pages.items()}
    repeats = {model: len(ps) - len(members[model]) for model, ps in workload.model_pages.items()}
    seen = np.zeros(len(pages), dtype=bool)
    n_seen, phase_of, cached, total, accesses = 0, -1, 0.0, 0.0, 0
    lam = np.zeros(len(pages))
    for t, model in enumerate(workload.trace):
        phase = min(t // workload.phase_length, len(workload.popularity) - 1)
        if phase != phase_of:
            popularity = workload.popularity[phase]
            lam = np.array([sum(popularity.get(m, 0.0) for m in workload.sharing[p]) for p in pages])
            phase_of, n_seen = phase, -1
        if n_seen != int(seen.sum()):
            n_seen = int(seen.sum())
            values = lam[seen]
            k = min(capacity_pages, len(values))
            cached = float(np.sort(values)[len(values) - k :].sum()) if k else 0.0
        total += cached + repeats[model]
        accesses += len(workload.model_pages[model])
        seen[members[model]] = True
    return min(total / accesses, 1.0) if accesses else 0.0


def capacities(workload: Workload) -> list[int]:
    """Half a model, one model, then 10%..60% of the distinct pages (sorted, unique)."""
    size, distinct = workload.model_size, workload.distinct_pages
    points = {max(1, size // 2), size, *(max(1, round(f * distinct)) for f in FRACTIONS)}
    return sorted(points)


def run(workload: Workload, policies: Sequence[str] = POLICIES_SHOWN) -> list[Row]:
    """Simulate every policy and Belady at every capacity of :func:`capacities`."""
    rows = []
    for capacity in capacities(workload):
        ratios = {
            policy: simulate(workload.trace, workload.model_pages, capacity, policy).hit_ratio
            for policy in policies
        }
        oracle = QueueingReplacer(capacity, rates=TrueRates(workload))
        known = simulate(workload.trace, workload.model_pages, capacity, oracle).hit_ratio
        optimum = belady(workload.trace, workload.model_pages, capacity).hit_ratio
        bound = online_bound(workload, capacity)
        shifts = math.nan
        if workload.phase_length < len(workload.trace):
            told = QueueingReplacer(capacity, rates=KnownShifts(workload))
            shifts = simulate(workload.trace, workload.model_pages, capacity, told).hit_ratio
        rows.append(Row(capacity, capacity / workload.distinct_pages, ratios, known, optimum, bound, shifts))
    return rows


def check(rows: Sequence[Row], model_size: int, shifting: bool) -> dict[str, dict[str, Any]]:
    """Evaluate the targets on one workload's rows (see the module docstring)."""
    big = [r for r in rows if r.capacity_pages >= model_size]
    small = [r for r in rows if r.capacity_pages < model_size]
    best_miss = [1.0 - max(r.hit_ratio[p] for p in BASELINES) for r in big]
    q_miss = [1.0 - r.hit_ratio["queueing"] for r in big]
    margins = [b - q for q, b in zip(q_miss, best_miss)]  # >= 0: not worse
    gaps = [r.belady - r.hit_ratio["queueing"] for r in big]
    results: dict[str, dict[str, Any]] = {
        "not_worse": {"ok": min(margins) >= 0.0, "worst_margin": min(margins)},
        "near_belady": {"ok": max(gaps) <= 0.03, "worst_gap": max(gaps)},
    }
    bound_gaps = [r.belady - r.bound for r in big if not math.isnan(r.bound)]
    if bound_gaps:  # the least worst gap any online policy can expect on this trace
        results["near_belady"]["bound_gap"] = max(bound_gaps)
    if shifting:
        ratio = (sum(q_miss) / len(q_miss)) / (sum(best_miss) / len(best_miss))
        results["shift_gain"] = {"ok": ratio <= 0.9, "miss_ratio_vs_best": ratio}
        if not any(math.isnan(r.known_shifts) for r in big):  # the same, told when shifts happen
            told = sum(1.0 - r.known_shifts for r in big) / len(big)
            results["shift_gain"]["known_shifts"] = told / (sum(best_miss) / len(best_miss))
    if small:
        share = min(r.hit_ratio["queueing"] / r.belady for r in small if r.belady > 0)
        results["small_cache"] = {"ok": share >= 0.5, "share_of_belady": share}
    return results


def compare(seed: int = 0, n_requests: int = 3000, n_models: int = 30) -> dict[str, Any]:
    """Run every workload; return rows and target checks as plain data."""
    report: dict[str, Any] = {"seed": seed, "n_requests": n_requests, "n_models": n_models, "workloads": {}}
    for name, params in WORKLOADS.items():
        workload = generate(n_models, n_requests=n_requests, seed=seed, **params)
        rows = run(workload)
        report["workloads"][name] = {
            "distinct_pages": workload.distinct_pages,
            "model_size": workload.model_size,
            "rows": [asdict(r) for r in rows],
            "targets": check(rows, workload.model_size, "shift_every" in params),
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text tables of hit ratios.

    ``*`` marks the best online policy; ``shifts`` is the queueing policy told when
    popularity shifts (shifting workloads only), ``oracle`` the queueing policy given the
    true rates, ``bound`` the most any online policy can expect (:func:`online_bound`),
    ``belady`` the offline optimum.
    """
    lines = []
    for name, result in report["workloads"].items():
        lines.append(
            f"\n## {name}: {report['n_models']} models, {result['distinct_pages']} distinct pages, "
            f"{result['model_size']} pages per model, {report['n_requests']} requests, seed {report['seed']}"
        )
        shifting = not any(math.isnan(r.get("known_shifts", math.nan)) for r in result["rows"])
        references = (["shifts"] if shifting else []) + ["oracle", "bound", "belady"]
        keys = {"shifts": "known_shifts"}
        lines.append(
            f"{'pages':>6} {'of distinct':>11} " + " ".join(f"{p:>9}" for p in [*POLICIES_SHOWN, *references])
        )
        for row in result["rows"]:
            best = max(row["hit_ratio"].values())
            cells = " ".join(
                f"{row['hit_ratio'][p]:>8.3f}{'*' if row['hit_ratio'][p] == best else ' '}"
                for p in POLICIES_SHOWN
            )
            extra = " ".join(f"{row.get(keys.get(k, k), math.nan):>9.3f}" for k in references)
            lines.append(f"{row['capacity_pages']:>6} {row['fraction']:>11.0%} {cells} {extra}")
        for target, outcome in result["targets"].items():
            figures = ", ".join(f"{k}={v:.4f}" for k, v in outcome.items() if k != "ok")
            lines.append(f"  {target:<12} {'PASS' if outcome['ok'] else 'FAIL'}  {figures}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tensorstore_bufferpool.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="workload seed(s) (default 0)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per trace (default 3000)")
    parser.add_argument("--models", type=int, default=30, help="models in the family (default 30)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.models < 6:
        parser.error("--requests must be >= 1 and --models >= 6")
    started = time.perf_counter()
    reports = [compare(seed, args.requests, args.models) for seed in args.seed]
    if args.json:
        json.dump(reports if len(reports) > 1 else reports[0], sys.stdout, indent=1)
        print()
    else:
        for report in reports:
            print(format_report(report))
        print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
