"""A quick layout of a whole family by model set: greedy constructions, best kept.

A model's load reads a page when the page holds any block of the model, so the
per-model reads of a layout depend only on where each *model set* (the models reading a
block) has bytes. A family of fine-tunes stored as deltas of one root has few model sets
(the root's data, which every model reads; one per group; one per model). Two-Stage's
stage 2 packs leftovers of sharing sets in clusters of 16 and never uses more pages than
best fit, so on such a family it leaves each model's own data straddling pages other
models read; CP-SAT over sets x pages (:func:`packing.read_bound.model_reads_bound`)
proves good bounds but finds good layouts slowly (in 3 s, 1.09-1.12 x the per-model
bound on the 16-model layered family, against a proven 1.02-1.04).

This module builds such layouts directly:

* *Greedy over sets* (:class:`_Greedy`, bytes of a set cut anywhere at the alignment):
  sets in an order where a set comes before the sets it contains, each put whole on a
  page its models read anyway if one has room (the root's last page, for a group's or a
  model's data), else on pages of its own while the page count allows, else spread over
  the pages where it adds the cheapest model reads, largest room first.
* *Whole blocks* (:func:`_realize`): each set's sharing groups (blocks read by the same
  tensors) go whole, largest first, to the page whose share of that set they fill most
  tightly; only groups that fit no share whole are cut.
* *Many starts*: page counts from the pages bound to the target's budget (at most 4
  above the bound), siblings ordered by the models' rates and by size, then random
  orders (and a random chance of spreading a set rather than giving it a page) for a
  quarter of the time; the plans that look best by pages and model reads are made of
  whole blocks and scored exactly by :func:`packing.score` (the objective of
  :mod:`packing.objective`).
* *Descent* (:func:`_descend`): pieces (one sharing group's blocks on one page) move
  to the page where the objective falls most, best layouts first, until time is up.

Layouts whose mean over the models of pages read / bound is within `read_target` (the
issue's 1.1) rank first, then by objective: on that family the least objective found
sometimes stores a page fewer and misses the target.

Dropped after measuring (``docs/packing.md``): a local search over the cut layout
(moves, evacuations and swaps of a set's pieces), whose layouts scored worse once made of
whole blocks than the greedy's; CP-SAT on the cut layout from the greedy's, better on
some seeds and worse on others.
"""

from __future__ import annotations

import random
import time

import numpy as np

from tensorstore_packing.bounds import model_lower_bounds, pages_lower_bound
from tensorstore_packing.errors import InvalidProblemError
from tensorstore_packing.objective import cost_coefficients, model_cost_coefficients
from tensorstore_packing.problem import PackingProblem
from tensorstore_packing.read_bound import _aggregate, _set_of_blocks, page_budget
from tensorstore_packing.result import PackResult, score
from tensorstore_packing.sharing import sharing_groups

_MIN_TRIES = 3  # plans of the deterministic starts made of whole blocks, however short the time
_BIG = 1 << 40  # above any share or room in alignment units

#: Page counts tried above the pages bound (within the budget): a page more costs
#: 1/bound in the objective, so a few are all that can pay.
_EXTRA_PAGES = 4

#: Chances, one drawn per random start, that a set is spread rather than given a page.
_SPREAD = (0.0, 0.1, 0.2, 0.35)


def plan_family(
    problem: PackingProblem,
    *,
    read_weight: float = 1.0,
    time_limit: float = 1.0,
    seed: int = 0,
    max_pages: int | None = None,
    read_target: float = 1.1,
    give_up_above: float | None = None,
    greedy_share: float = 0.25,
) -> PackResult | None:
    """The best layout the greedy starts and the descent find within the page budget:
    the least objective among those whose mean over the models of pages read / bound
    is at most `read_target`, or among all when none is.

    Parameters
    ----------
    problem : PackingProblem
        Without models there is nothing to plan (returns None).
    read_weight : float, default 1.0
        The objective's knob.
    time_limit : float, default 1.0
        Seconds in all: a quarter for random starts, then whole blocks for the best
        plans, then the descent. The deterministic starts (two orders per page count)
        and whole blocks for the best three of them always run.
    seed : int, default 0
        Seed of the random orders.
    max_pages : int, optional
        Page budget; default :func:`packing.read_bound.page_budget` (the target's).
    read_target : float, default 1.1
        The issue's per-model target (0: the objective alone ranks the layouts).
    give_up_above : float, optional
        Stop after the deterministic starts, returning None, when none of them has an
        objective at most this (a layout to beat, with a margin).
    greedy_share : float, default 0.25
        Share of `time_limit` for the random starts.

    Returns
    -------
    PackResult or None
        The best layout scored by :func:`packing.score`; None when the problem has no
        models or no blocks, no plan fitted in whole blocks, or it gave up.
    """
    if not problem.n_models or not problem.n_blocks:
        return None
    deadline = time.perf_counter() + time_limit
    family = _Family(problem, read_weight)
    lowest = pages_lower_bound(problem.slot_bytes, problem.page_bytes)
    budget = page_budget(problem) if max_pages is None else max_pages
    plans: dict[bytes, tuple[tuple[bool, float], np.ndarray]] = {}

    def attempt(n_pages: int, order: list[int], spread: float = 0.0, rng: random.Random | None = None) -> None:
        amounts = _Greedy(family, n_pages).run(order, spread, rng)
        plans.setdefault(amounts.tobytes(), (family.relaxed_rank(amounts, read_target), amounts))

    found: list[PackResult] = []
    realized: set[bytes] = set()

    def make(key: bytes, amounts: np.ndarray) -> None:
        realized.add(key)
        try:
            page_of = _realize(family, amounts, budget)
        except InvalidProblemError:  # whole blocks did not fit the cut layout
            return
        found.append(score(problem, page_of, read_weight=read_weight))

    def by_rank() -> list[tuple[bytes, np.ndarray]]:
        items = sorted(plans.items(), key=lambda item: item[1][0])
        return [(key, amounts) for key, (_, amounts) in items if key not in realized]

    counts = range(lowest, max(min(budget, lowest + _EXTRA_PAGES), lowest) + 1)
    for n_pages in counts:
        for key in ("rate", "size"):
            attempt(n_pages, family.order(key))
    for key, amounts in by_rank()[:_MIN_TRIES]:
        make(key, amounts)
    if give_up_above is not None and min((r.cost for r in found), default=np.inf) > give_up_above:
        return None  # the family's shape is not one these layouts suit
    rng = random.Random(seed)
    phase = time.perf_counter() + time_limit * greedy_share
    while time.perf_counter() < phase:
        attempt(rng.choice(counts), family.order("random", rng), rng.choice(_SPREAD), rng)
    # whole blocks for the plans that look best by pages and model reads
    phase = time.perf_counter() + (deadline - time.perf_counter()) / 2
    for key, amounts in by_rank():
        if time.perf_counter() >= phase:
            break
        make(key, amounts)
    if not found:
        return None

    def rank(result: PackResult) -> tuple[bool, float]:
        return (read_target > 0 and result.model_reads().mean_ratio > read_target, result.cost)

    found.sort(key=rank)
    best = found[0]
    for start in found:  # best first, while time remains
        if time.perf_counter() >= deadline:
            break
        page_of = _descend(family, start.block_page, budget, deadline, read_target)
        result = score(problem, page_of, read_weight=read_weight)
        if rank(result) < rank(best):
            best = result
    return best


class _Family:
    """The problem aggregated by model set, with what the greedy and realization need."""

    def __init__(self, problem: PackingProblem, read_weight: float) -> None:
        self.problem = problem
        self.sets, items = _aggregate(problem, exact=False)
        self.volume = [v for _, _, v in items]
        self.capacity = problem.page_bytes // problem.alignment
        self.model_cost = model_cost_coefficients(problem, read_weight).tolist()
        self.set_cost = [sum(self.model_cost[m] for m in s) for s in self.sets]
        set_of = _set_of_blocks(problem, self.sets)
        self.groups = sharing_groups(problem)
        self.units = problem.slot_bytes // problem.alignment
        self.group_units = np.bincount(
            self.groups.block_group, weights=self.units, minlength=self.groups.n_groups
        ).astype(np.int64)
        group_set = np.full(self.groups.n_groups, -1, dtype=np.int64)
        group_set[self.groups.block_group] = set_of
        self.group_set = group_set
        self.model_bound = model_lower_bounds(problem, problem.model_ptr, problem.model_tensors)
        self.membership = np.zeros((problem.n_models, len(self.sets)), dtype=np.int64)
        for s, members in enumerate(self.sets):
            self.membership[list(members), s] = 1
        self.model_cost_array = np.asarray(self.model_cost)
        page_cost, read_cost = cost_coefficients(problem, read_weight)
        self.page_cost, self.read_cost = page_cost, read_cost
        self.set_groups = []
        for s in range(len(self.sets)):
            members = np.flatnonzero(group_set == s)
            self.set_groups.append(members[np.argsort(-self.group_units[members], kind="stable")].tolist())
        # parent of a set: its smallest strict superset (a set comes before its subsets)
        self.children: dict[int, list[int]] = {}
        as_sets = [frozenset(s) for s in self.sets]
        for s, members in enumerate(as_sets):
            parents = [t for t, other in enumerate(as_sets) if len(other) > len(members) and members < other]
            parent = min(parents, key=lambda t: (len(as_sets[t]), t), default=-1)
            self.children.setdefault(parent, []).append(s)

    def relaxed_rank(self, amounts: np.ndarray, read_target: float) -> tuple[bool, float]:
        """How a cut layout looks before it is made of whole blocks: whether its mean
        model read ratio misses `read_target`, then its page and model-read cost."""
        reads = (self.membership @ (amounts > 0)).astype(bool).sum(axis=1)
        used = int(np.count_nonzero(amounts.sum(axis=0)))
        has = self.model_bound > 0
        ratio = float((reads[has] / self.model_bound[has]).mean()) if has.any() else 1.0
        return (read_target > 0 and ratio > read_target, used * self.page_cost + float(self.model_cost_array @ reads))

    def order(self, key: str, rng: random.Random | None = None) -> list[int]:
        """Sets depth first (a set before the sets it contains); siblings by the models'
        rates (``"rate"``), by size (``"size"``) or at random (``"random"``), larger
        reader sets first."""
        def sort_key(s: int) -> tuple:
            if key == "rate":
                tie: float = -self.set_cost[s]
            elif key == "size":
                tie = -self.volume[s]
            else:
                tie = rng.random() if rng is not None else 0.0
            return (-len(self.sets[s]), tie, s)

        out: list[int] = []
        stack = sorted(self.children.get(-1, []), key=sort_key, reverse=True)
        while stack:
            s = stack.pop()
            out.append(s)
            stack += sorted(self.children.get(s, []), key=sort_key, reverse=True)
        return out


class _Greedy:
    """Bytes of each set on each of `n_pages` pages, placed set by set."""

    def __init__(self, family: _Family, n_pages: int) -> None:
        self.family = family
        self.n_pages = n_pages
        self.amount = np.zeros((len(family.sets), n_pages), dtype=np.int64)
        self.free = [family.capacity] * n_pages
        self.readers: list[set[int]] = [set() for _ in range(n_pages)]

    def _add(self, s: int, page: int, units: int) -> None:
        self.amount[s, page] += units
        self.free[page] -= units
        self.readers[page].update(self.family.sets[s])

    def run(self, order: list[int], spread: float = 0.0, rng: random.Random | None = None) -> np.ndarray:
        """Place the sets in `order` (see the module docstring); returns the amounts.
        With probability `spread` a set that could have a page of its own is spread
        over the pages already open instead."""
        family, cap = self.family, self.family.capacity
        left = sum(family.volume)  # bytes not placed yet
        opened = 0
        for s in order:
            rest = family.volume[s]
            members = family.sets[s]
            while rest >= cap and opened < self.n_pages:  # whole pages of its own
                self._add(s, opened, cap)
                opened += 1
                rest -= cap
                left -= cap
            if rest == 0:
                continue
            free_for = [p for p in range(opened) if self.free[p] >= rest and self.readers[p] >= set(members)]
            # a page of its own wastes what it leaves free: keep room for the rest
            room_after = (self.n_pages - opened - 1) * cap + sum(self.free[:opened]) + (cap - rest)
            if free_for:
                self._add(s, min(free_for, key=lambda p: (self.free[p], p)), rest)
            elif (
                opened < self.n_pages
                and room_after >= left - rest
                and not (opened and spread and rng is not None and rng.random() < spread)
            ):
                self._add(s, opened, rest)
                opened += 1
            else:
                self._spread(s, rest)
                opened = max(opened, int(np.flatnonzero(self.amount[s]).max()) + 1)
            left -= rest
        return self.amount

    def _spread(self, s: int, rest: int) -> None:
        """`rest` bytes of `s` on the pages adding the cheapest reads, roomiest first."""
        cost = self.family.model_cost
        members = self.family.sets[s]
        while rest > 0:
            page = min(
                (p for p in range(self.n_pages) if self.free[p] > 0),
                key=lambda p: (sum(cost[m] for m in members if m not in self.readers[p]), -self.free[p], p),
            )
            units = min(rest, self.free[page])
            self._add(s, page, units)
            rest -= units


def _realize(family: _Family, amounts: np.ndarray, max_pages: int) -> np.ndarray:
    """Whole blocks on the pages of a cut layout, keeping tensors whole.

    Each page has a share of each set's bytes (`amounts`, sets x pages). A set's
    sharing groups go whole, largest first, to the page whose share they fill most
    tightly; the groups that fit no share whole are dealt out block by block: to a page
    already holding part of the group, then the set's page with most share left, then
    the set's roomiest page, then the roomiest page of all (pages up to `max_pages`).

    Raises
    ------
    InvalidProblemError
        When a block fits on no page.
    """
    problem, units = family.problem, family.units
    n_pages = max(amounts.shape[1], max_pages)  # blocks the cut layout has no room for may open pages up to the budget
    page_of = np.full(problem.n_blocks, -1, dtype=np.int64)
    room = np.full(n_pages, family.capacity, dtype=np.int64)
    for s in family.order("size"):
        quota = np.zeros(n_pages, dtype=np.int64)
        quota[: amounts.shape[1]] = amounts[s]
        mine = np.flatnonzero(quota > 0).tolist()
        split = []
        for g in family.set_groups[s]:
            size = int(family.group_units[g])
            fits = [p for p in mine if quota[p] >= size and room[p] >= size]
            if not fits:
                split.append(g)
                continue
            p = min(fits, key=lambda p: (quota[p], p))
            page_of[family.groups.blocks_of(g)] = p
            quota[p] -= size
            room[p] -= size
        pages = np.asarray(mine, dtype=np.int64)
        for g in split:
            used = np.zeros(pages.size, dtype=bool)
            for b in family.groups.blocks_of(g).tolist():  # largest first
                size = int(units[b])
                fits = room[pages] >= size
                in_share = fits & (quota[pages] >= size)
                # pages holding part of the group first, then most share (room) left
                if in_share.any():
                    k = int(np.argmax(np.where(in_share, used * _BIG + quota[pages], -_BIG)))
                elif fits.any():
                    k = int(np.argmax(np.where(fits, used * _BIG + room[pages], -_BIG)))
                elif room.max() >= size:
                    pages = np.append(pages, int(np.argmax(room)))
                    used = np.append(used, False)
                    k = pages.size - 1
                else:
                    raise InvalidProblemError(f"block {int(problem.block_ids[b])} fits on no page")
                p = int(pages[k])
                page_of[b] = p
                quota[p] -= size
                room[p] -= size
                used[k] = True
    return page_of


def _descend(
    family: _Family, page_of: np.ndarray, max_pages: int, deadline: float, read_target: float = 0.0
) -> np.ndarray:
    """Move pieces (the blocks of one sharing group on one page) whole to the page
    where the objective falls most, until no move lowers it or time is up. With a
    `read_target` that the layout meets, no move takes the mean over the models of
    pages read / bound above it.

    The objective is :mod:`packing.objective`'s: a tensor or a model pays for every
    page holding any of its blocks, so the counts of each tensor's and each model's
    blocks per page give a move's change exactly.
    """
    problem, groups = family.problem, family.groups
    labels, dense = np.unique(page_of, return_inverse=True)
    page_of = dense.reshape(-1).astype(np.int64)
    n_pages = max(max_pages, labels.size)
    ref_tensor = problem.tensor_of_ref()
    tensor_count = np.zeros((problem.n_tensors, n_pages), dtype=np.int64)
    np.add.at(tensor_count, (ref_tensor, page_of[problem.tensor_blocks]), 1)
    model_count = np.zeros((problem.n_models, n_pages), dtype=np.int64)
    set_models = [np.asarray(s, dtype=np.int64) for s in family.sets]
    block_set = family.group_set[groups.block_group]
    for s, models in enumerate(set_models):
        per_page = np.bincount(page_of[block_set == s], minlength=n_pages)
        model_count[models] += per_page
    room = family.capacity - np.bincount(page_of, weights=family.units, minlength=n_pages).astype(np.int64)
    read_cost, model_cost, page_cost = family.read_cost, np.asarray(family.model_cost), family.page_cost
    bound = family.model_bound
    inverse = np.divide(1.0, bound, out=np.zeros(bound.size), where=bound > 0)
    counted = max(int(np.count_nonzero(bound > 0)), 1)
    ratio_sum = float(inverse @ np.count_nonzero(model_count, axis=1))
    slack = read_target * counted - ratio_sum if read_target > 0 else np.inf
    if slack < 0:
        slack = np.inf  # the target is missed already: the objective alone decides
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for g in range(groups.n_groups):
            blocks = groups.blocks_of(g)
            tensors = groups.tensors_of(g)
            models = set_models[family.group_set[g]]
            for p in np.unique(page_of[blocks]).tolist():
                piece = blocks[page_of[blocks] == p]
                k, size = piece.size, int(family.units[piece].sum())
                gain = float(read_cost[tensors] @ (tensor_count[tensors, p] == k)) + float(
                    model_cost[models] @ (model_count[models, p] == k)
                ) + (page_cost if room[p] + size == family.capacity else 0.0)
                added = (
                    read_cost[tensors] @ (tensor_count[tensors] == 0)
                    + model_cost[models] @ (model_count[models] == 0)
                    + page_cost * (room == family.capacity)
                )
                added[room < size] = np.inf
                added[p] = np.inf
                if slack < np.inf:
                    ratio_change = inverse[models] @ (model_count[models] == 0) - float(
                        inverse[models] @ (model_count[models, p] == k)
                    )
                    added[ratio_change > slack + 1e-12] = np.inf
                if int(np.count_nonzero(room < family.capacity)) >= max_pages:
                    added[room == family.capacity] = np.inf  # no page beyond the budget
                q = int(np.argmin(added))
                if added[q] - gain >= -1e-12:
                    continue
                if slack < np.inf:
                    slack -= float(inverse[models] @ (model_count[models, q] == 0)) - float(
                        inverse[models] @ (model_count[models, p] == k)
                    )
                page_of[piece] = q
                tensor_count[tensors, p] -= k
                tensor_count[tensors, q] += k
                model_count[models, p] -= k
                model_count[models, q] += k
                room[p] += size
                room[q] -= size
                improved = True
                if time.perf_counter() >= deadline:
                    return page_of
    return page_of
