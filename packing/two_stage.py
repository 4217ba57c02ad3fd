"""Two-Stage packing: full pages per sharing set, then the leftovers together.

Stage 1
    For each sharing set (blocks read by exactly the same tensors), fill whole pages
    with its blocks, largest first, while at least a page's worth remains. Such a page
    is read in full by every tensor that reads it: nothing wasted, nothing read in vain.
Stage 2
    What remains of each set (less than a page: a *leftover*) is packed together with
    the other leftovers. Leftovers read by the same models (or, without models, by the
    same tensors) are sorted next to each other and cut into small clusters, so that a
    model's leftovers share pages. Each cluster is first packed by best fit - whole
    leftovers, except that a leftover whose readers are cheap (by the objective) may
    be split to fill a gap - and then improved by CP-SAT (:mod:`packing.cpsat`) under
    the time limit. When time runs out, or there are more than ``cp_max_items``
    leftovers, the best-fit packing stands; the :class:`SolverReport` says so.
Merge
    Finally whole pages are merged by best fit where they fit together: that stores a
    page less and never makes anyone read more pages.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

import numpy as np

from packing.cpsat import ClusterModel, cluster_cost, solve_cluster
from packing.csr import gather_rows, row_of_entries, unique_pairs
from packing.errors import InvalidProblemError
from packing.fit import best_fit_decreasing
from packing.objective import cost_coefficients
from packing.problem import PackingProblem
from packing.result import SolverReport
from packing.sharing import SharingGroups, sharing_groups

#: Integer CP-SAT cost of one page stored; read costs are scaled to it.
_PAGE_COST = 10_000


@dataclass(frozen=True, slots=True)
class TwoStageOptions:
    """Tuning of Two-Stage; the defaults suit pages of about a MiB.

    Attributes
    ----------
    time_limit : float
        Total seconds CP-SAT may spend (over all clusters).
    cluster_time_limit : float
        Most seconds one cluster may take.
    num_workers : int
        CP-SAT search threads.
    seed : int
        CP-SAT random seed.
    max_cluster_items : int
        Leftovers per cluster.
    cp_max_items : int
        With more leftovers than this the instance is too big for CP-SAT: stage 2 is
        packed by best fit alone.
    """

    time_limit: float = 10.0
    cluster_time_limit: float = 0.5
    num_workers: int = 2
    seed: int = 0
    max_cluster_items: int = 16
    cp_max_items: int = 50_000

    def __post_init__(self) -> None:
        if not (self.time_limit >= 0 and self.cluster_time_limit >= 0):
            raise InvalidProblemError("time limits must be >= 0 seconds")
        if self.num_workers < 1 or self.max_cluster_items < 1 or self.cp_max_items < 0:
            raise InvalidProblemError(
                "num_workers and max_cluster_items must be >= 1, cp_max_items >= 0"
            )


@dataclass(slots=True)
class _Tally:
    """Counts of cluster outcomes, turned into a :class:`SolverReport` at the end."""

    clusters: int = 0
    optimal: int = 0
    feasible: int = 0
    proven_by_greedy: int = 0
    fallback_time: int = 0
    fallback_size: int = 0
    seconds: float = 0.0


def pack_two_stage(
    problem: PackingProblem, read_weight: float, options: TwoStageOptions
) -> tuple[np.ndarray, np.ndarray, SolverReport]:
    """Pack `problem` in two stages (see the module docstring).

    Returns
    -------
    page_of, rank : numpy.ndarray
        Page label and in-page order of each dense block.
    report : SolverReport
        How the CP-SAT stage went.
    """
    groups = sharing_groups(problem)
    page_of = np.full(problem.n_blocks, -1, dtype=np.int64)
    placed, leftovers = _stage_one(problem, groups, page_of)
    n_pages = len(placed)

    stage2 = _StageTwo(problem, groups, leftovers, read_weight, options)
    stage2.run()
    sequence = list(placed)
    for page, blocks in stage2.pieces():
        page_of[blocks] = n_pages + page
        sequence.append(blocks)
    rank = np.empty(problem.n_blocks, dtype=np.int64)
    if sequence:
        rank[np.concatenate(sequence)] = np.arange(problem.n_blocks)
    return _merge_pages(problem, page_of), rank, stage2.report()


def _stage_one(
    problem: PackingProblem, groups: SharingGroups, page_of: np.ndarray
) -> tuple[list[np.ndarray], list[tuple[int, np.ndarray]]]:
    """Fill full pages per sharing set (writing `page_of`).

    Returns the blocks of each page filled and the leftovers as (group, blocks).
    """
    capacity = problem.page_bytes
    placed: list[np.ndarray] = []
    leftovers: list[tuple[int, np.ndarray]] = []
    for g in range(groups.n_groups):
        blocks = groups.blocks_of(g)
        if groups.slot_bytes[g] >= capacity:
            sizes = problem.slot_bytes[blocks]
            if np.all(sizes[:-1] == sizes[0]):  # equal blocks and a tail: fill in order
                pages, blocks = _fill_in_order(blocks, sizes, capacity)
            else:
                pages, blocks = _fill_first_fit(blocks, sizes, capacity)
            placed += pages
        if blocks.size:
            leftovers.append((g, blocks))
    for page, blocks in enumerate(placed):
        page_of[blocks] = page
    return placed, leftovers


def _fill_in_order(
    blocks: np.ndarray, sizes: np.ndarray, capacity: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Full pages of equal-size blocks (and a smaller tail), while a page's worth remains."""
    cum = np.concatenate(([0], np.cumsum(sizes)))
    pages, i = [], 0
    while cum[-1] - cum[i] >= capacity:
        end = int(np.searchsorted(cum, cum[i] + capacity, side="right")) - 1
        pages.append(blocks[i:end])
        i = end
    return pages, blocks[i:]


def _fill_first_fit(
    blocks: np.ndarray, sizes: np.ndarray, capacity: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Pages filled by first fit (largest first) from blocks of mixed sizes, while a
    page's worth remains; each page then has no room for any remaining block."""
    remaining = list(range(blocks.size))
    pages = []
    while sum(int(sizes[j]) for j in remaining) >= capacity:
        room, page, rest = capacity, [], []
        for j in remaining:
            if sizes[j] <= room:
                page.append(j)
                room -= int(sizes[j])
            else:
                rest.append(j)
        pages.append(blocks[page])
        remaining = rest
    return pages, blocks[remaining]


class _FreeSpace:
    """Free bytes of the stage-2 pages, with a best-fit index over the open ones."""

    def __init__(self, capacity: int, smallest: int) -> None:
        self.capacity = capacity
        self.smallest = smallest  # a page with less free space than this is closed
        self.free: list[int] = []
        self._index: list[tuple[int, int]] = []  # (free, page), ascending

    def new_page(self) -> int:
        self.free.append(self.capacity)
        self._index_add(len(self.free) - 1)
        return len(self.free) - 1

    def best_fit(self, size: int) -> int | None:
        """The open page with the least free space that still fits `size`."""
        k = bisect.bisect_left(self._index, (size, -1))
        return self._index[k][1] if k < len(self._index) else None

    def roomiest(self) -> int | None:
        """The open page with the most free space."""
        return self._index[-1][1] if self._index else None

    def change(self, page: int, delta: int) -> None:
        """Add `delta` (may be negative) bytes of free space to `page`."""
        k = bisect.bisect_left(self._index, (self.free[page], page))
        if k < len(self._index) and self._index[k] == (self.free[page], page):
            self._index.pop(k)
        self.free[page] += delta
        self._index_add(page)

    def _index_add(self, page: int) -> None:
        if self.free[page] >= self.smallest:
            bisect.insort(self._index, (self.free[page], page))


class _StageTwo:
    """Packs the leftovers of stage 1 (see the module docstring)."""

    def __init__(
        self,
        problem: PackingProblem,
        groups: SharingGroups,
        leftovers: list[tuple[int, np.ndarray]],
        read_weight: float,
        options: TwoStageOptions,
    ) -> None:
        self.problem = problem
        self.options = options
        self.blocks = [b for _, b in leftovers]
        self.tensors = [groups.tensors_of(g) for g, _ in leftovers]
        self.sizes = [int(problem.slot_bytes[b].sum()) for b in self.blocks]
        self.order, self.keys = _affinity_order(problem, [g for g, _ in leftovers], groups, self.sizes)
        page_cost, read_cost = cost_coefficients(problem, read_weight)
        # integer costs, one page stored = _PAGE_COST; a page read by tensor t = read_cost[t]
        self.read_cost = np.rint(read_cost * (_PAGE_COST / page_cost if page_cost else 0.0))
        self.split_cost = [float(self.read_cost[t].sum()) for t in self.tensors]
        smallest = int(problem.slot_bytes[np.concatenate(self.blocks)].min()) if self.blocks else 1
        self.space = _FreeSpace(problem.page_bytes, smallest)
        self.placed: list[list[tuple[int, np.ndarray]]] = [[] for _ in self.blocks]
        self.tally = _Tally()

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        use_cp = len(self.blocks) <= self.options.cp_max_items
        deadline = time.perf_counter() + self.options.time_limit
        for cluster in _clusters(self.order, self.keys, self.options.max_cluster_items):
            self.tally.clusters += 1
            free_before = list(self.space.free)
            self._greedy(cluster)
            model, hint, pages = self._model(cluster, free_before)
            if not use_cp:
                self.tally.fallback_size += 1
            elif _greedy_is_optimal(model, hint):
                self.tally.proven_by_greedy += 1
            elif time.perf_counter() >= deadline:
                self.tally.fallback_time += 1
            else:
                self._improve(cluster, model, hint, pages, deadline)

    def pieces(self) -> list[tuple[int, np.ndarray]]:
        """(stage-2 page, blocks) of every piece, in placement order."""
        return [piece for i in self.order.tolist() for piece in self.placed[i]]

    def report(self) -> SolverReport:
        return _report(self.tally, self.options, len(self.blocks))

    # ------------------------------------------------------------------ greedy
    def _greedy(self, cluster: list[int]) -> None:
        """Best fit, largest first; a cheap leftover that fits nowhere may be split to
        fill the roomiest page when the bytes saved outweigh the reads added."""
        space, slots = self.space, self.problem.slot_bytes
        for i in sorted(cluster, key=lambda i: -self.sizes[i]):
            blocks, size = self.blocks[i], self.sizes[i]
            page = space.best_fit(size)
            if page is None:
                roomy = space.roomiest()
                if roomy is not None and self._worth_splitting(i, space.free[roomy]):
                    head = _first_fit(blocks, slots, space.free[roomy])
                    self._put(i, blocks[head], roomy)
                    blocks = blocks[~head]
                    size = int(slots[blocks].sum())
                    page = space.best_fit(size)
                if page is None:
                    page = space.new_page()
            self._put(i, blocks, page)

    def _worth_splitting(self, item: int, gap: int) -> bool:
        # filling `gap` bytes saves gap/capacity of a page; splitting costs one more
        # page read by each reader of the item
        return self.split_cost[item] < _PAGE_COST * gap / self.problem.page_bytes

    def _put(self, item: int, blocks: np.ndarray, page: int) -> None:
        if blocks.size:
            self.placed[item].append((page, blocks))
            self.space.change(page, -int(self.problem.slot_bytes[blocks].sum()))

    # ------------------------------------------------------------------ CP-SAT
    def _model(
        self, cluster: list[int], free_before: list[int]
    ) -> tuple[ClusterModel, list, list[int]]:
        """The cluster as a CP-SAT model over the pages its greedy packing touched, that
        packing as a hint, and the stage-2 page of each model page."""
        pages = sorted({page for i in cluster for page, _ in self.placed[i]})
        local = {page: k for k, page in enumerate(pages)}
        capacity = self.problem.page_bytes
        slots = self.problem.slot_bytes
        classes, hint = [], []
        for i in cluster:
            sizes, counts = np.unique(slots[self.blocks[i]], return_counts=True)
            classes.append(list(zip(sizes.tolist(), counts.tolist())))
            per_class = [[0] * len(pages) for _ in sizes]
            for page, blocks in self.placed[i]:
                for c, n in zip(*np.unique(slots[blocks], return_counts=True)):
                    per_class[int(np.searchsorted(sizes, c))][local[page]] += int(n)
            hint.append(per_class)
        readers: dict[int, list[int]] = {}
        for pos, i in enumerate(cluster):
            for t in self.tensors[i].tolist():
                readers.setdefault(t, []).append(pos)
        shared = {t: items for t, items in readers.items() if len(items) > 1}
        item_cost = [
            int(sum(self.read_cost[t] for t in self.tensors[i].tolist() if t not in shared))
            for i in cluster
        ]
        model = ClusterModel(
            capacity=capacity,
            base_load=[
                capacity - free_before[p] if p < len(free_before) else 0 for p in pages
            ],
            is_new=[p >= len(free_before) for p in pages],
            item_classes=classes,
            item_cost=item_cost,
            tensor_items=list(shared.values()),
            tensor_cost=[int(self.read_cost[t]) for t in shared],
            page_cost=_PAGE_COST,
        )
        return model, hint, pages

    def _improve(
        self, cluster: list[int], model: ClusterModel, hint: list, pages: list[int], deadline: float
    ) -> None:
        limit = min(self.options.cluster_time_limit, deadline - time.perf_counter())
        started = time.perf_counter()
        solution = solve_cluster(
            model, hint, time_limit=limit, num_workers=self.options.num_workers, seed=self.options.seed
        )
        self.tally.seconds += time.perf_counter() - started
        if solution.counts is None:
            self.tally.fallback_time += 1
            return
        if solution.status == "optimal":
            self.tally.optimal += 1
        else:
            self.tally.feasible += 1
        if cluster_cost(model, solution.counts) >= cluster_cost(model, hint):
            return
        slots = self.problem.slot_bytes
        for pos, i in enumerate(cluster):
            for page, blocks in self.placed[i]:
                self.space.change(page, int(slots[blocks].sum()))
            self.placed[i] = []
            # blocks of one size are interchangeable: deal them out by the counts
            blocks = self.blocks[i]
            by_size = {s: list(blocks[slots[blocks] == s]) for s, _ in model.item_classes[pos]}
            for k, page in enumerate(pages):
                taken = [
                    by_size[s].pop() for c, (s, _) in enumerate(model.item_classes[pos])
                    for _ in range(solution.counts[pos][c][k])
                ]
                self._put(i, np.asarray(taken, dtype=np.int64), page)


def _first_fit(blocks: np.ndarray, slots: np.ndarray, room: int) -> np.ndarray:
    """Mask of the blocks (largest first) that first fit puts in `room` bytes."""
    take = np.zeros(blocks.size, dtype=bool)
    for j, size in enumerate(slots[blocks].tolist()):
        if size <= room:
            take[j] = True
            room -= size
    return take


def _greedy_is_optimal(model: ClusterModel, hint: list) -> bool:
    """True when nothing is left to improve: no leftover split, no more new pages than
    the cluster's volume needs, and every tensor reading several leftovers reads as
    few pages as their volume allows."""
    capacity = model.capacity
    spread = [{k for per_class in item for k, n in enumerate(per_class) if n} for item in hint]
    if any(len(s) > 1 for s in spread):
        return False
    volume = sum(size * n for classes in model.item_classes for size, n in classes)
    room = sum(capacity - load for load, new in zip(model.base_load, model.is_new) if not new)
    used_new = sum(1 for k, new in enumerate(model.is_new) if new and any(k in s for s in spread))
    if used_new > max(0, -(-(volume - room) // capacity)):
        return False
    for items in model.tensor_items:
        needed = sum(size * n for i in items for size, n in model.item_classes[i])
        if len(set().union(*(spread[i] for i in items))) > -(-needed // capacity):
            return False
    return True


def _affinity_order(
    problem: PackingProblem, item_groups: list[int], groups: SharingGroups, sizes: list[int]
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Order leftovers so that those needed by the same readers are neighbours.

    The key of a leftover is the sorted tuple of the models that read it (or, without
    models, of the tensors that do); ties go largest first. Returns the order and the
    key of each leftover.
    """
    n_items = len(item_groups)
    if n_items == 0:
        return np.zeros(0, dtype=np.int64), []
    item_of_pair, tensors = gather_rows(groups.tensor_ptr, groups.tensors, np.asarray(item_groups))
    if problem.n_models:
        # transpose model -> tensors into tensor -> models, then map each reader
        model_of_entry = row_of_entries(problem.model_ptr)
        by_tensor = np.argsort(problem.model_tensors, kind="stable")
        t_ptr = np.concatenate(
            ([0], np.cumsum(np.bincount(problem.model_tensors, minlength=problem.n_tensors)))
        )
        pos, readers = gather_rows(t_ptr, model_of_entry[by_tensor], tensors)
        item_of_pair = item_of_pair[pos]
        n_readers = problem.n_models
    else:
        readers, n_readers = tensors, problem.n_tensors
    item_of_pair, readers = unique_pairs(item_of_pair, readers, n_readers)
    splits = np.searchsorted(item_of_pair, np.arange(1, n_items))
    keys = [tuple(r.tolist()) for r in np.split(readers, splits)]
    order = sorted(range(n_items), key=lambda i: (keys[i], -sizes[i], i))
    return np.array(order, dtype=np.int64), keys


def _clusters(order: np.ndarray, keys: list, max_items: int) -> list[list[int]]:
    """Cut the affinity order into clusters of at most `max_items` leftovers,
    preferring cuts where the readers change."""
    clusters: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        reader_change = bool(current) and keys[i] != keys[current[-1]]
        if len(current) >= max_items or (reader_change and len(current) >= max_items // 2):
            clusters.append(current)
            current = []
        current.append(i)
    if current:
        clusters.append(current)
    return clusters


def _merge_pages(problem: PackingProblem, page_of: np.ndarray) -> np.ndarray:
    """Merge whole pages by best fit where they fit together (never adds a read)."""
    if page_of.size == 0:
        return page_of
    labels, page = np.unique(page_of, return_inverse=True)
    page = page.reshape(-1)
    used = np.bincount(page, weights=problem.slot_bytes, minlength=labels.size)
    return best_fit_decreasing(used.astype(np.int64), problem.page_bytes)[page]


def _report(tally: _Tally, options: TwoStageOptions, n_items: int) -> SolverReport:
    counts = (
        f"{tally.clusters} clusters of leftovers: {tally.proven_by_greedy} proven optimal by "
        f"best fit, {tally.optimal} optimal and {tally.feasible} feasible by CP-SAT"
    )
    if tally.fallback_size:
        status = "FALLBACK"
        reason = (
            f"too big for CP-SAT: {n_items} leftovers > cp_max_items={options.cp_max_items}; "
            "stage 2 packed by best fit"
        )
    elif tally.fallback_time:
        status = "FALLBACK"
        reason = (
            f"{counts}; {tally.fallback_time} kept their best-fit packing because the time "
            f"limit ({options.time_limit:g} s) ran out"
        )
    else:
        status = "FEASIBLE" if tally.feasible else "OPTIMAL"
        reason = counts if tally.clusters else "no leftovers: stage 1 placed every block"
    return SolverReport(
        status=status,
        reason=reason,
        clusters=tally.clusters,
        optimal=tally.optimal,
        feasible=tally.feasible,
        proven_by_greedy=tally.proven_by_greedy,
        fallback_time=tally.fallback_time,
        fallback_size=tally.fallback_size,
        seconds=tally.seconds,
    )
