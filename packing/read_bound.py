"""The fewest pages per model load any layout within a page budget can read (CP-SAT).

The per-model bound of :mod:`packing.bounds` looks at one model alone: its bytes in as
few pages as they fill. Models share pages, and a page is read in full by every model
that needs any byte of it, so on a family of fine-tunes most layouts cannot give every
model its bound at once. This module answers the question exactly: given a page budget,
what is the least mean (or worst) ratio of pages read to that bound over the models?

A model's reads depend on a block only through its *model set* (the models that read
it), so blocks are aggregated by model set:

``exact=True``
    Blocks of one model set and one slot size are interchangeable, so the model counts
    how many of each such class go to each page. Its optimum is the true optimum over
    every layout of whole blocks within the budget.
``exact=False`` (the relaxation)
    Each model set is a quantity of bytes that may be cut anywhere at the alignment.
    Every layout of whole blocks is also a layout of the relaxation with the same reads,
    so its optimum (and CP-SAT's proven bound on it) is a valid *lower* bound on the
    reads of any real layout; it is small (one variable per model set and page) and is
    what to use on a family.

Either way the model minimises ``sum_m reads_m / bound_m`` (``objective="mean"``) or
``max_m reads_m / bound_m`` (``"worst"``) over the models with data, subject to every
page's capacity and at most ``max_pages`` pages. ``reads_m`` counts every page holding
any block of model ``m``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from tensorstore_packing.bounds import model_block_pairs, model_lower_bounds, pages_lower_bound
from tensorstore_packing.cpsat import solve
from tensorstore_packing.errors import InvalidProblemError
from tensorstore_packing.problem import PackingProblem

#: The issue's page target: at most ``1.02 * lower bound + 1`` pages.
PAGE_SLACK = 1.02

_OBJECTIVES = ("mean", "worst")


@dataclass(frozen=True, slots=True, eq=False)
class ReadsBound:
    """What the solver found and proved.

    Attributes
    ----------
    max_pages : int
        The page budget.
    objective : str
        ``"mean"`` or ``"worst"`` ratio of pages read to each model's bound.
    exact : bool
        True: whole blocks (an exact optimum); False: bytes divisible (a relaxation,
        whose value is a lower bound for whole blocks).
    status : str
        ``"OPTIMAL"`` (`best` is the optimum) or ``"FEASIBLE"`` (time ran out:
        the optimum lies in ``[lower_bound, best]``).
    best : float
        Ratio of the best layout found.
    lower_bound : float
        Ratio no layout of the model can beat (proven by CP-SAT); equals `best` when
        optimal.
    pages_read : numpy.ndarray
        ``(n_models,)`` pages each model reads in the best layout found.
    model_bound : numpy.ndarray
        ``(n_models,)`` the per-model bound of :func:`packing.bounds.model_lower_bounds`.
    model_sets : tuple of tuple of int
        The distinct model sets the blocks were aggregated into.
    items : tuple of (int, int, int)
        What was placed: (model set, size in alignment units, count).
    page_items : numpy.ndarray
        ``(max_pages, len(items))`` how many of each item the best layout put on each
        page (see :func:`realize` for whole blocks from a relaxed layout).
    seconds : float
        Wall time of the solve.
    """

    max_pages: int
    objective: str
    exact: bool
    status: str
    best: float
    lower_bound: float
    pages_read: np.ndarray
    model_bound: np.ndarray
    model_sets: tuple[tuple[int, ...], ...]
    items: tuple[tuple[int, int, int], ...]
    page_items: np.ndarray
    seconds: float

    def summary(self) -> dict[str, object]:
        """JSON-ready figures."""
        return {
            "max_pages": self.max_pages,
            "objective": self.objective,
            "exact": self.exact,
            "status": self.status,
            "best": round(self.best, 4),
            "lower_bound": round(self.lower_bound, 4),
            "pages_read": self.pages_read.tolist(),
            "model_bound": self.model_bound.tolist(),
            "model_sets": len(self.model_sets),
            "seconds": round(self.seconds, 2),
        }


def page_budget(problem: PackingProblem, slack: float = PAGE_SLACK) -> int:
    """Most pages the target allows: ``floor(slack * pages lower bound + 1)``."""
    return math.floor(slack * pages_lower_bound(problem.slot_bytes, problem.page_bytes) + 1)


def model_reads_bound(
    problem: PackingProblem,
    max_pages: int | None = None,
    *,
    objective: str = "mean",
    exact: bool = False,
    time_limit: float = 60.0,
    num_workers: int = 2,
    seed: int = 0,
    hint: np.ndarray | None = None,
) -> ReadsBound:
    """Least pages read per model load (over its bound) within a page budget.

    Parameters
    ----------
    problem : PackingProblem
        Must have models.
    max_pages : int, optional
        Page budget; default :func:`page_budget` (the target's).
    objective : {"mean", "worst"}, default "mean"
        Minimise the mean, or the largest, ratio of pages read to a model's bound.
    exact : bool, default False
        Whole blocks (exact, larger model) or bytes divisible (a lower bound).
    time_limit : float, default 60.0
        CP-SAT seconds; when they run out the result is ``FEASIBLE`` with a proven
        lower bound.
    num_workers : int, default 2
        CP-SAT search threads.
    seed : int, default 0
        CP-SAT random seed.
    hint : numpy.ndarray, optional
        ``(n_blocks,)`` page labels of a layout within the budget (e.g. a packer's
        ``block_page``) for CP-SAT to start from.

    Returns
    -------
    ReadsBound

    Raises
    ------
    InvalidProblemError
        No models, an unknown objective, or a budget below the pages the blocks need.
    """
    if not problem.n_models:
        raise InvalidProblemError("the problem has no models: there are no model loads to bound")
    if objective not in _OBJECTIVES:
        raise InvalidProblemError(f"objective must be one of {', '.join(_OBJECTIVES)}, got {objective!r}")
    needed = pages_lower_bound(problem.slot_bytes, problem.page_bytes)
    if max_pages is None:
        max_pages = page_budget(problem)
    if isinstance(max_pages, bool) or not isinstance(max_pages, (int, np.integer)) or max_pages < needed:
        raise InvalidProblemError(f"max_pages must be an int >= {needed} (the pages the blocks need), got {max_pages!r}")
    max_pages = int(max_pages)

    bound = model_lower_bounds(problem, problem.model_ptr, problem.model_tensors)
    sets, items = _aggregate(problem, exact)
    counted = np.flatnonzero(bound > 0)
    scale = math.lcm(*bound[counted].tolist()) if counted.size else 1
    weight = np.zeros(problem.n_models, dtype=np.int64)
    weight[counted] = scale // bound[counted]

    started = time.perf_counter()
    model = cp_model.CpModel()
    pages = range(max_pages)
    capacity = problem.page_bytes // problem.alignment  # slot sizes are whole units: exact
    placed = []  # per item, its count on each page
    on = [[model.new_bool_var(f"y{s}_{p}") for p in pages] for s in range(len(sets))]
    amounts: list[list[list]] = [[[] for _ in pages] for _ in sets]  # (set, page) -> variables
    load: list[list] = [[] for _ in pages]
    for k, (s, unit, count) in enumerate(items):
        n = [model.new_int_var(0, min(count, capacity // unit), f"n{k}_{p}") for p in pages]
        model.add(sum(n) == count)
        placed.append(n)
        for p in pages:
            model.add(n[p] <= count * on[s][p])
            amounts[s][p].append(n[p])
            load[p].append(unit * n[p])
    for s in range(len(sets)):
        for p in pages:
            model.add(sum(amounts[s][p]) >= on[s][p])  # a set is only where its bytes are
    for p in pages:
        model.add(sum(load[p]) <= capacity)

    reads = [[model.new_bool_var(f"r{m}_{p}") for p in pages] for m in range(problem.n_models)]
    holding: list[list[int]] = [[] for _ in range(problem.n_models)]
    for s, members in enumerate(sets):
        for m in members:
            holding[m].append(s)
    for m in range(problem.n_models):
        for p in pages:
            for s in holding[m]:
                model.add_implication(on[s][p], reads[m][p])
            # a model reads a page only if it holds some of its data
            model.add_bool_or([on[s][p] for s in holding[m]]).only_enforce_if(reads[m][p])
        if bound[m] > 0:
            model.add(sum(reads[m]) >= int(bound[m]))  # valid for any layout
    _break_symmetry(model, reads, pages)
    if hint is not None:
        _add_hint(problem, model, np.asarray(hint), exact, sets, items, placed, on, reads, max_pages)

    total = [sum(reads[m]) for m in range(problem.n_models)]
    if objective == "mean":
        model.minimize(sum(int(weight[m]) * total[m] for m in counted.tolist()))
        to_ratio = 1.0 / (scale * max(counted.size, 1))
    else:
        worst = model.new_int_var(0, scale * max_pages, "worst")
        for m in counted.tolist():
            model.add(worst >= int(weight[m]) * total[m])
        model.minimize(worst)
        to_ratio = 1.0 / scale

    solver, code = solve(model, time_limit=time_limit, num_workers=num_workers, seed=seed)
    seconds = time.perf_counter() - started
    if code == cp_model.INFEASIBLE:
        raise InvalidProblemError(f"the blocks do not fit in {max_pages} pages: allow more pages")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise InvalidProblemError(
            f"CP-SAT found no layout within {time_limit:g} s ({solver.status_name(code)}); allow more time"
        )
    pages_read = np.array([sum(solver.value(v) for v in reads[m]) for m in range(problem.n_models)], dtype=np.int64)
    best = solver.objective_value * to_ratio
    proven = best if code == cp_model.OPTIMAL else solver.best_objective_bound * to_ratio
    return ReadsBound(
        max_pages=max_pages,
        objective=objective,
        exact=exact,
        status="OPTIMAL" if code == cp_model.OPTIMAL else "FEASIBLE",
        best=best,
        lower_bound=proven,
        pages_read=pages_read,
        model_bound=bound,
        model_sets=tuple(sets),
        items=tuple(items),
        page_items=np.array([[solver.value(n[p]) for n in placed] for p in pages], dtype=np.int64).reshape(max_pages, len(items)),
        seconds=seconds,
    )


def realize(
    problem: PackingProblem,
    found: ReadsBound,
    *,
    read_weight: float = 1.0,
    time_limit: float = 10.0,
    num_workers: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Whole blocks on the pages of a layout found by :func:`model_reads_bound`, at the
    least cost by the packers' objective (:mod:`packing.objective`) that CP-SAT finds.

    Each block may go to the pages where the layout put its model set (and where
    :func:`deal_out` puts it, which is the starting point); CP-SAT then moves blocks
    among those pages, whole, to cut the pages read per tensor and per model. Score
    the result with :func:`packing.score`.

    Parameters
    ----------
    problem : PackingProblem
    found : ReadsBound
    read_weight : float, default 1.0
        The objective's knob.
    time_limit : float, default 10.0
        CP-SAT seconds (0: :func:`deal_out` alone).
    num_workers, seed : int
        CP-SAT threads and random seed.

    Returns
    -------
    numpy.ndarray
        ``(n_blocks,)`` page of each dense block.
    """
    start = deal_out(problem, found)
    if found.exact or time_limit <= 0 or not problem.n_blocks:
        return start
    return _improve_whole(problem, found, start, read_weight, time_limit, num_workers, seed)


def deal_out(problem: PackingProblem, found: ReadsBound) -> np.ndarray:
    """Whole blocks on the pages of a layout found by :func:`model_reads_bound`, quickly.

    An exact layout is dealt out as it is. A relaxed one gives each page a quota of
    each model set's bytes; each set's blocks, a tensor's blocks next to each other
    (grouped by the tensors that read them), fill the set's pages one after another,
    largest quota first, a block going to the first page with quota and room left for
    it; the blocks left over go to the set's page with most quota (then room) left, or
    else to the roomiest page. So a tensor is split
    only where its set's quota ends, and the result may read a little more than the
    relaxation, never with more pages. Score it with :func:`packing.score`.

    Returns
    -------
    numpy.ndarray
        ``(n_blocks,)`` page of each dense block.

    Raises
    ------
    InvalidProblemError
        When a block fits on no page of the budget.
    """
    from tensorstore_packing.sharing import sharing_groups

    sets, _ = _aggregate(problem, exact=False)
    set_of = _set_of_blocks(problem, sets)
    units = problem.slot_bytes // problem.alignment
    capacity = problem.page_bytes // problem.alignment
    page_of = np.full(problem.n_blocks, -1, dtype=np.int64)
    room = np.full(found.max_pages, capacity, dtype=np.int64)
    group = sharing_groups(problem).block_group
    for s in range(len(sets)):
        quota = np.zeros(found.max_pages, dtype=np.int64)
        for k, (item_set, unit, _) in enumerate(found.items):
            if item_set != s:
                continue
            if found.exact:  # deal out the counts of each size as they are
                same = np.flatnonzero((set_of == s) & (units == unit))
                pages = np.repeat(np.arange(found.max_pages), found.page_items[:, k])
                page_of[same] = pages
                np.subtract.at(room, pages, unit)
            quota += unit * found.page_items[:, k]
        if found.exact:
            continue
        blocks = np.flatnonzero(set_of == s)
        blocks = blocks[np.lexsort((-units[blocks], group[blocks]))]
        order = [int(p) for p in np.argsort(-quota, kind="stable") if quota[p] > 0]
        later = []
        for b in blocks.tolist():  # within quota, in order
            size = int(units[b])
            p = next((p for p in order if quota[p] >= size and room[p] >= size), None)
            if p is None:
                later.append(b)
                continue
            page_of[b] = p
            room[p] -= size
            quota[p] -= size
        for b in later:  # the rest: where the set is, else where there is room
            size = int(units[b])
            fits = [p for p in order if room[p] >= size]
            if fits:
                p = max(fits, key=lambda p: (quota[p], room[p]))
            elif room.max() >= size:
                p = int(np.argmax(room))
                order.append(p)
            else:
                raise InvalidProblemError(f"block {int(problem.block_ids[b])} fits on no page of the budget")
            page_of[b] = p
            room[p] -= size
            quota[p] -= size
    return page_of


def _improve_whole(
    problem: PackingProblem,
    found: ReadsBound,
    start: np.ndarray,
    read_weight: float,
    time_limit: float,
    num_workers: int,
    seed: int,
) -> np.ndarray:
    from tensorstore_packing.objective import cost_coefficients, model_cost_coefficients

    sets, _ = _aggregate(problem, exact=False)
    set_of = _set_of_blocks(problem, sets)
    allowed_by_set = [set(np.flatnonzero(found.page_items[:, k]).tolist()) for k, (s, _, _) in enumerate(found.items)]
    units = problem.slot_bytes // problem.alignment
    capacity = problem.page_bytes // problem.alignment
    model = cp_model.CpModel()
    on: list[dict[int, object]] = []
    load: list[list] = [[] for _ in range(found.max_pages)]
    for b in range(problem.n_blocks):
        pages = sorted(allowed_by_set[int(set_of[b])] | {int(start[b])})
        z = {p: model.new_bool_var(f"z{b}_{p}") for p in pages}
        model.add_exactly_one(z.values())
        for p, v in z.items():
            model.add_hint(v, p == start[b])
            load[p].append(int(units[b]) * v)
        on.append(z)
    for p in range(found.max_pages):
        if load[p]:
            model.add(sum(load[p]) <= capacity)
    _, read_cost = cost_coefficients(problem, read_weight)
    model_cost = model_cost_coefficients(problem, read_weight)
    scale = 1e6 / max(float(read_cost.max(initial=0)), float(model_cost.max(initial=0)), 1e-12)
    terms = []

    def reader(blocks: np.ndarray, weight: float, name: str) -> None:
        pages: dict[int, list] = {}
        for b in blocks.tolist():
            for p, v in on[b].items():
                pages.setdefault(p, []).append(v)
        for p, vs in pages.items():
            r = model.new_bool_var(f"{name}_{p}")
            for v in vs:
                model.add_implication(v, r)
            model.add_hint(r, any(start[b] == p for b in blocks.tolist()))
            terms.append(int(round(weight * scale)) * r)

    for t in range(problem.n_tensors):
        if read_cost[t] > 0:
            reader(problem.tensor_blocks_of(t), float(read_cost[t]), f"t{t}")
    models, blocks = model_block_pairs(problem, problem.model_ptr, problem.model_tensors)
    for m in range(problem.n_models):
        if model_cost[m] > 0:
            reader(blocks[models == m], float(model_cost[m]), f"m{m}")
    model.minimize(sum(terms))
    solver, code = solve(model, time_limit=time_limit, num_workers=num_workers, seed=seed)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return start
    return np.array([next(p for p, v in z.items() if solver.value(v)) for z in on], dtype=np.int64)


def model_set_count(problem: PackingProblem) -> int:
    """Distinct model sets (the models reading a block) among the blocks."""
    if problem.n_models > 63:
        return len(_aggregate(problem, exact=False)[0])
    # each block's set as a bit mask: exact, and fast where blocks are millions
    models, blocks = model_block_pairs(problem, problem.model_ptr, problem.model_tensors)
    masks = np.zeros(problem.n_blocks, dtype=np.uint64)
    np.bitwise_or.at(masks, blocks, np.left_shift(np.uint64(1), models.astype(np.uint64)))
    return int(np.unique(masks).size)


def _set_of_blocks(problem: PackingProblem, sets: list[tuple[int, ...]]) -> np.ndarray:
    index = {s: k for k, s in enumerate(sets)}
    return np.array([index[tuple(ms)] for ms in _members(problem)], dtype=np.int64)


def _members(problem: PackingProblem) -> list[list[int]]:
    """The models reading each dense block (sorted)."""
    models, blocks = model_block_pairs(problem, problem.model_ptr, problem.model_tensors)
    members: list[list[int]] = [[] for _ in range(problem.n_blocks)]
    for m, b in zip(models.tolist(), blocks.tolist()):
        members[b].append(m)  # pairs come sorted by model, so each list is sorted
    return members


def _aggregate(problem: PackingProblem, exact: bool) -> tuple[list[tuple[int, ...]], list[tuple[int, int, int]]]:
    """Model sets, and the items placed: (set, unit size in alignment units, count).

    Exact: one item per (set, slot size), `count` blocks of that size. Relaxed: one item
    per set, its slot bytes as a count of one-unit pieces.
    """
    members = _members(problem)
    index: dict[tuple[int, ...], int] = {}
    set_of = np.array([index.setdefault(tuple(ms), len(index)) for ms in members], dtype=np.int64)
    units = problem.slot_bytes // problem.alignment
    if exact:
        keys, counts = np.unique(np.stack([set_of, units], axis=1), axis=0, return_counts=True)
        items = [(int(s), int(u), int(c)) for (s, u), c in zip(keys.tolist(), counts.tolist())]
    else:
        volume = np.bincount(set_of, weights=units, minlength=len(index)).astype(np.int64)
        items = [(s, 1, int(v)) for s, v in enumerate(volume.tolist())]
    return list(index), items


def _add_hint(
    problem: PackingProblem,
    model: cp_model.CpModel,
    hint: np.ndarray,
    exact: bool,
    sets: list[tuple[int, ...]],
    items: list[tuple[int, int, int]],
    placed: list[list],
    on: list[list],
    reads: list[list],
    max_pages: int,
) -> None:
    """Hint the layout `hint` (page labels per block), its pages in the order the
    symmetry breaking wants."""
    labels, page = np.unique(hint, return_inverse=True)
    if hint.shape != (problem.n_blocks,) or labels.size > max_pages:
        raise InvalidProblemError(f"hint must give one page label per block, on at most {max_pages} pages")
    set_of = _set_of_blocks(problem, sets)
    units = problem.slot_bytes // problem.alignment
    readers = [set() for _ in range(labels.size)]
    for b in range(problem.n_blocks):
        readers[page[b]].update(sets[set_of[b]])
    key = [sum(1 << m for m in r) for r in readers]
    rank = np.empty(labels.size, dtype=np.int64)
    rank[np.argsort(-np.array(key, dtype=np.float64), kind="stable")] = np.arange(labels.size)
    page = rank[page]
    for k, (s, unit, _) in enumerate(items):
        if exact:  # blocks of this size
            counts = np.bincount(page[(set_of == s) & (units == unit)], minlength=max_pages)
        else:  # units of the set
            counts = np.bincount(page[set_of == s], weights=units[set_of == s], minlength=max_pages).astype(np.int64)
        for p in range(max_pages):
            model.add_hint(placed[k][p], int(counts[p]))
    for s in range(len(sets)):
        there = np.bincount(page[set_of == s], minlength=max_pages)
        for p in range(max_pages):
            model.add_hint(on[s][p], bool(there[p]))
    readers_at = [set() for _ in range(max_pages)]
    for old, new in enumerate(rank.tolist()):
        readers_at[new] = readers[old]
    for m in range(len(reads)):
        for p in range(max_pages):
            model.add_hint(reads[m][p], m in readers_at[p])


def _break_symmetry(model: cp_model.CpModel, reads: list[list], pages: range) -> None:
    """Pages are interchangeable: order them by their reader sets read as binary numbers
    (any layout can be permuted so), which removes most of the equivalent layouts."""
    if len(reads) > 62 or len(pages) < 2:  # the key would not fit in 64 bits
        return
    keys = [sum((1 << m) * reads[m][p] for m in range(len(reads))) for p in pages]
    for a, b in zip(keys, keys[1:]):
        model.add(a >= b)
