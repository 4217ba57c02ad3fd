"""One entry point, :func:`pack`, for every packing algorithm."""

from __future__ import annotations

import time

from tensorstore_packing.errors import ProblemTypeError, UnknownAlgorithmError
from tensorstore_packing.greedy import pack_baseline, pack_greedy1, pack_greedy2
from tensorstore_packing.objective import DEFAULT_READ_WEIGHT, check_read_weight
from tensorstore_packing.problem import PackingProblem
from tensorstore_packing.result import PackResult, build_result
from tensorstore_packing.two_stage import TwoStageOptions, pack_two_stage

#: Algorithm names accepted by :func:`pack`, with a one-line description.
ALGORITHMS: dict[str, str] = {
    "baseline": "per tensor, in order; each tensor starts a new page",
    "greedy-1": "grouped by sharing set; each group starts a new page",
    "greedy-2": "tensors largest first, widely shared blocks first, pages filled continuously",
    "two-stage": "full pages per sharing set, then the leftovers packed by CP-SAT",
}

_GREEDY = {"baseline": pack_baseline, "greedy-1": pack_greedy1, "greedy-2": pack_greedy2}


def pack(
    problem: PackingProblem,
    algorithm: str = "two-stage",
    *,
    read_weight: float = DEFAULT_READ_WEIGHT,
    time_limit: float = 10.0,
    num_workers: int = 2,
    seed: int = 0,
    options: TwoStageOptions | None = None,
) -> PackResult:
    """Place every block of `problem` in a page.

    Parameters
    ----------
    problem : PackingProblem
    algorithm : str, default "two-stage"
        One of :data:`ALGORITHMS`.
    read_weight : float, default 1.0
        Weight of pages read against pages stored in the objective
        (:mod:`packing.objective`). Two-Stage optimises it; the others only report it.
    time_limit : float, default 10.0
        Seconds the CP-SAT stage of Two-Stage may spend in total.
    num_workers : int, default 2
        CP-SAT search threads.
    seed : int, default 0
        CP-SAT random seed.
    options : TwoStageOptions, optional
        Full Two-Stage tuning; overrides `time_limit`, `num_workers` and `seed`.

    Returns
    -------
    PackResult
        Block -> (page, offset) and the metrics.

    Raises
    ------
    UnknownAlgorithmError
        For an algorithm name not in :data:`ALGORITHMS`.
    """
    if not isinstance(problem, PackingProblem):
        raise ProblemTypeError(f"problem must be a PackingProblem, got {type(problem).__name__}")
    if algorithm not in ALGORITHMS:
        raise UnknownAlgorithmError(
            f"unknown packing algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
        )
    check_read_weight(read_weight)
    started = time.perf_counter()
    if algorithm == "two-stage":
        if options is None:
            options = TwoStageOptions(time_limit=time_limit, num_workers=num_workers, seed=seed)
        page_of, rank, report = pack_two_stage(problem, read_weight, options)
        return build_result(
            problem,
            algorithm,
            page_of,
            rank,
            seconds=time.perf_counter() - started,
            read_weight=read_weight,
            status=report.status,
            solver=report,
        )
    page_of, rank = _GREEDY[algorithm](problem)
    return build_result(
        problem, algorithm, page_of, rank, seconds=time.perf_counter() - started, read_weight=read_weight
    )
