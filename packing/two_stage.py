"""Two-Stage packing: full pages per sharing set, then the leftovers together.

Stage 1
    For each sharing set (blocks read by exactly the same tensors), fill whole pages
    with its blocks, largest first, while at least a page's worth remains. Such a page
    is read in full by every tensor that reads it: nothing wasted, nothing read in vain.
Stage 2
    What remains of each set (less than a page: a *leftover*) is packed together with
    the other leftovers. A page is read by every model that needs any of its blocks, so
    leftovers are visited depth first over their model sets (a set, then the sets it
    contains) and each goes, by best fit, to a page its models read anyway. Failing
    that it may be split to fill such a page (when the page and model reads saved
    outweigh the tensor reads added), open a page of its own when its set has a page's
    worth still to come, or else go where it adds the cheapest model reads. Pages of one
    model set are then compacted where splitting pays. Last, CP-SAT
    (:mod:`packing.cpsat`) improves the leftovers cluster by cluster, the rest of the
    layout fixed, under the time limit and never using more pages. When time runs out,
    or there are more than ``cp_max_items`` leftovers, the best-fit packing stands; the
    :class:`SolverReport` says so.
Merge
    Whole pages are merged by best fit where they fit together: that stores a page
    less and never makes anyone read more pages.
Family layout (``family_time_limit`` > 0, the default)
    When the blocks fall into few model sets, :func:`packing.set_plan.plan_family`
    lays the whole family out set by set (greedy starts, whole sharing groups, a
    descent on the objective) within the page target; its best layout replaces the one
    above only when its objective is lower and its loads read no more pages per model.
    On the 16-model layered family of encoded blocks this is what brings pages read per
    model within 1.1 x the bound (docs/packing.md).
Model-set plan (``plan_time_limit`` > 0)
    Last, when the blocks fall into few *model sets* (the models that read a block) --
    a family of fine-tunes stored as deltas of one root has a set for the data all
    models read, one per group and one per model -- the layout is planned for the
    whole family at once: :func:`packing.read_bound.model_reads_bound` places each
    set's bytes on pages within the page target (``1.02 x the pages bound + 1``),
    starting from the layout above, and :func:`packing.read_bound.realize` puts whole
    blocks there at the least cost. The plan replaces the layout only when its
    objective is lower and its loads read no more pages per model. Clusters of
    leftovers cannot see this: on the layered family they fill the fewest pages and
    leave each model's own data straddling pages that other models read.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from tensorstore_packing.cpsat import ClusterModel, cluster_cost, solve_cluster
from tensorstore_packing.csr import gather_rows, row_of_entries, unique_pairs
from tensorstore_packing.errors import InvalidProblemError
from tensorstore_packing.fit import best_fit_decreasing
from tensorstore_packing.objective import cost_coefficients, model_cost_coefficients
from tensorstore_packing.problem import PackingProblem
from tensorstore_packing.read_bound import model_reads_bound, model_set_count, page_budget, realize
from tensorstore_packing.result import SolverReport, score
from tensorstore_packing.set_plan import plan_family
from tensorstore_packing.sharing import SharingGroups, sharing_groups

#: The family layout's search goes on only when its deterministic starts come within
#: this factor of stage 2's objective. On the 16-model layered family they were at most
#: 1.6 % above it (seeds 0-11) and the search then beat stage 2 on every seed; on MiniLM
#: they were 3.8 % above and 3 s of search still 2.6 % (docs/packing.md).
_FAMILY_MARGIN = 1.025

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
    family_time_limit : float
        Seconds for the family layout (:mod:`packing.set_plan`); 0: none. It runs
        only when ``time_limit`` > 0 too, so ``time_limit=0`` stays deterministic.
    family_max_cells : int
        The family layout runs only when model sets x pages of the budget is at most
        this.
    model_read_target : float
        Among the family layouts, those whose mean over the models of pages read /
        bound is at most this (the issue's target, 1.1) rank first; 0: the objective
        alone ranks them. Either way a family layout replaces Two-Stage's only when
        its objective is lower.
    plan_time_limit : float
        Seconds for the model-set plan (two thirds placing the sets' bytes, one third
        whole blocks); 0 (the default): no plan.
    plan_max_cells : int
        The plan runs only when model sets x pages of the budget is at most this.
    """

    time_limit: float = 10.0
    cluster_time_limit: float = 0.5
    num_workers: int = 2
    seed: int = 0
    max_cluster_items: int = 16
    cp_max_items: int = 50_000
    family_time_limit: float = 3.0
    family_max_cells: int = 20_000
    model_read_target: float = 1.1
    plan_time_limit: float = 0.0
    plan_max_cells: int = 2_000

    def __post_init__(self) -> None:
        if not self.plan_time_limit >= 0:
            raise InvalidProblemError("plan_time_limit must be >= 0 seconds")
        if not (self.family_time_limit >= 0 and self.model_read_target >= 0):
            raise InvalidProblemError("family_time_limit and model_read_target must be >= 0")
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
    page_of = _merge_pages(problem, page_of)
    report = stage2.report()
    family = _family_layout(problem, page_of, read_weight, options)
    if family is not None:
        page_of, note = family
        report = dataclasses.replace(report, reason=f"{report.reason}; {note}")
    planned = _model_set_plan(problem, page_of, read_weight, options)
    if planned is not None:
        page_of, note = planned
        report = dataclasses.replace(report, reason=f"{report.reason}; {note}")
    return page_of, rank, report


def _family_layout(
    problem: PackingProblem, page_of: np.ndarray, read_weight: float, options: TwoStageOptions
) -> tuple[np.ndarray, str] | None:
    """The family layout of :func:`packing.set_plan.plan_family` and a note for the
    report, when its objective is lower and its loads read no more pages per model."""
    seconds = options.family_time_limit
    if seconds <= 0 or options.time_limit <= 0 or not problem.n_models or not problem.n_blocks:
        return None
    budget = page_budget(problem)
    if budget > options.family_max_cells or model_set_count(problem) * budget > options.family_max_cells:
        return None
    current = score(problem, page_of, read_weight=read_weight)
    found = plan_family(
        problem, read_weight=read_weight, time_limit=seconds, seed=options.seed,
        read_target=options.model_read_target, give_up_above=current.cost * _FAMILY_MARGIN,
    )
    if found is None:
        return None
    if found.cost >= current.cost or found.model_reads().mean_pages_read > current.model_reads().mean_pages_read:
        return None
    note = f"family layout: {found.pages} pages, objective {found.cost:.4f} (stage 2's {current.cost:.4f})"
    return found.block_page, note


def _model_set_plan(
    problem: PackingProblem, page_of: np.ndarray, read_weight: float, options: TwoStageOptions
) -> tuple[np.ndarray, str] | None:
    """The model-set plan's layout and a note for the report, when it is better."""
    seconds = options.plan_time_limit
    if seconds <= 0 or not problem.n_models or not problem.n_blocks:
        return None
    budget = page_budget(problem)
    if model_set_count(problem) * budget > options.plan_max_cells:
        return None
    current = score(problem, page_of, read_weight=read_weight)
    found = model_reads_bound(
        problem, budget, time_limit=seconds * 2 / 3, num_workers=options.num_workers, seed=options.seed,
        hint=page_of if current.pages <= budget else None,
    )
    planned = realize(
        problem, found, read_weight=read_weight, time_limit=seconds / 3,
        num_workers=options.num_workers, seed=options.seed,
    )
    candidate = score(problem, planned, read_weight=read_weight)
    if candidate.cost >= current.cost or candidate.model_reads().mean_pages_read > current.model_reads().mean_pages_read:
        return None
    note = (
        f"model-set plan: {candidate.pages} pages, objective {candidate.cost:.4f} "
        f"(clusters' {current.cost:.4f})"
    )
    return planned, note


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
    """Free bytes and readers of the stage-2 pages, with a best-fit index per reader set.

    A page's *readers* are the models (without models: the tensors) that read it. A
    leftover adds no model read to a page whose readers include all of its own, so
    pages are indexed by reader set to find those first.
    """

    def __init__(self, capacity: int, smallest: int) -> None:
        self.capacity = capacity
        self.smallest = smallest  # a page with less free space than this is closed
        self.free: list[int] = []
        self.readers: list[frozenset[int]] = []
        self._index: dict[frozenset[int], list[tuple[int, int]]] = {}  # (free, page), ascending
        self._keys: list[frozenset[int]] = []  # the index's reader sets, in order of arrival
        self._supersets: dict[frozenset[int], tuple[int, list[frozenset[int]]]] = {}

    def new_page(self, readers: frozenset[int] = frozenset()) -> int:
        self.free.append(self.capacity)
        self.readers.append(readers)
        self._index_add(len(self.free) - 1)
        return len(self.free) - 1

    def best_fit(self, size: int, key: frozenset[int]) -> int | None:
        """The page read by all of `key` with the least free space that still fits `size`."""
        best = None
        for readers in self._superset_keys(key):
            entries = self._index[readers]
            k = bisect.bisect_left(entries, (size, -1))
            if k < len(entries) and (best is None or entries[k] < best):
                best = entries[k]
        return None if best is None else best[1]

    def roomiest(self, key: frozenset[int]) -> int | None:
        """The page read by all of `key` with the most free space."""
        best = None
        for readers in self._superset_keys(key):
            entries = self._index[readers]
            if entries and (best is None or entries[-1] > best):
                best = entries[-1]
        return None if best is None else best[1]

    def cheapest_fit(self, size: int, key: frozenset[int], cost: np.ndarray) -> tuple[int | None, float]:
        """The page fitting `size` that adds the cheapest new readers (``cost`` per reader),
        tightest on ties; and that cost."""
        best, best_cost = None, 0.0
        for readers, entries in self._index.items():
            k = bisect.bisect_left(entries, (size, -1))
            if k == len(entries):
                continue
            added = float(sum(cost[r] for r in key - readers))
            if best is None or (added, entries[k]) < (best_cost, best):
                best, best_cost = entries[k], added
        return (None, 0.0) if best is None else (best[1], best_cost)

    def change(self, page: int, delta: int, readers: frozenset[int] | None = None) -> None:
        """Add `delta` (may be negative) bytes of free space to `page`; set its readers."""
        entries = self._index.get(self.readers[page])
        if entries is not None:
            k = bisect.bisect_left(entries, (self.free[page], page))
            if k < len(entries) and entries[k] == (self.free[page], page):
                entries.pop(k)
        self.free[page] += delta
        if readers is not None:
            self.readers[page] = readers
        self._index_add(page)

    def _index_add(self, page: int) -> None:
        if self.free[page] >= self.smallest:
            readers = self.readers[page]
            if readers not in self._index:
                self._index[readers] = []
                self._keys.append(readers)
            bisect.insort(self._index[readers], (self.free[page], page))

    def _superset_keys(self, key: frozenset[int]) -> list[frozenset[int]]:
        # cached per key, extended as new reader sets appear
        seen, found = self._supersets.get(key, (0, []))
        if seen < len(self._keys):
            found = found + [r for r in self._keys[seen:] if key <= r]
            self._supersets[key] = (len(self._keys), found)
        return found


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
        self.order, keys = _affinity_order(problem, [g for g, _ in leftovers], groups, self.sizes)
        self.keys = keys
        # readers of a leftover for the page index: its models. Without models every
        # page is as good as any other for reads, so best fit is global.
        self.has_models = problem.n_models > 0
        self.readers = [frozenset(k) if self.has_models else frozenset() for k in keys]
        page_cost, read_cost = cost_coefficients(problem, read_weight)
        # integer costs, one page stored = _PAGE_COST; a page read by tensor t = read_cost[t]
        scale = _PAGE_COST / page_cost if page_cost else 0.0
        self.read_cost = np.rint(read_cost * scale)
        # cost of a page read by each model
        self.reader_cost = np.rint(model_cost_coefficients(problem, read_weight) * scale)
        self.split_cost = [float(self.read_cost[t].sum()) for t in self.tensors]
        self.key_cost = [float(sum(self.reader_cost[r] for r in k)) for k in self.readers]
        smallest = int(problem.slot_bytes[np.concatenate(self.blocks)].min()) if self.blocks else 1
        self.space = _FreeSpace(problem.page_bytes, smallest)
        self.placed: list[list[tuple[int, np.ndarray]]] = [[] for _ in self.blocks]
        self.pending: dict[frozenset[int], int] = {}  # bytes of each key not yet placed
        for key, size in zip(self.readers, self.sizes):
            self.pending[key] = self.pending.get(key, 0) + size
        self.on_page: list[set[int]] = []  # leftovers with blocks on each stage-2 page
        self.tally = _Tally()

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        """Best fit for every cluster, then CP-SAT improves one cluster at a time with
        the rest of the layout fixed, never using more pages than it found."""
        use_cp = len(self.blocks) <= self.options.cp_max_items
        clusters = _clusters(self.order, self.keys, self.options.max_cluster_items)
        for cluster in clusters:
            self._greedy(cluster)
        self._compact()
        deadline = time.perf_counter() + self.options.time_limit
        for cluster in clusters:
            self.tally.clusters += 1
            model, hint, pages = self._model(cluster)
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
        """Best fit, in the affinity order, among the pages that the leftover's readers
        read anyway (it adds no read there). Failing that, a cheap leftover may be split
        to fill the roomiest such page when the bytes saved outweigh the reads added.
        Else it opens a new page if its readers have enough leftovers still to come to
        fill it, or goes where it adds the cheapest readers."""
        space, slots = self.space, self.problem.slot_bytes
        for i in cluster:
            blocks, size, key = self.blocks[i], self.sizes[i], self.readers[i]
            self.pending[key] -= size
            page = space.best_fit(size, key)
            if page is None:
                mix, mix_cost = space.cheapest_fit(size, key, self.reader_cost)
                roomy = space.roomiest(key)
                if (
                    roomy is not None
                    and self._worth_splitting(i, space.free[roomy])
                    and (mix is None or self.split_cost[i] <= mix_cost)
                ):
                    head = _first_fit(blocks, slots, space.free[roomy])
                    self._put(i, blocks[head], roomy)
                    blocks = blocks[~head]
                    size = int(slots[blocks].sum())
                    page = space.best_fit(size, key)
                    if page is None:
                        mix, _ = space.cheapest_fit(size, key, self.reader_cost)
                # a page of its own that its readers' later leftovers will fill adds no
                # reads in the end; a foreign page adds reads for good
                if page is None and (mix is None or size + self.pending[key] >= space.capacity):
                    page = space.new_page()
                    self.on_page.append(set())
                page = mix if page is None else page
            self._put(i, blocks, page)

    def _worth_splitting(self, item: int, gap: int) -> bool:
        # filling `gap` bytes saves gap/capacity of a page of this data, stored and
        # read by each of its models; splitting costs one more page read by each
        # tensor reading the item
        page = _PAGE_COST + self.key_cost[item]
        return self.split_cost[item] < page * gap / self.problem.page_bytes

    def _put(self, item: int, blocks: np.ndarray, page: int) -> None:
        if blocks.size:
            space = self.space
            self.placed[item].append((page, blocks))
            self.on_page[page].add(item)
            space.change(page, -int(self.problem.slot_bytes[blocks].sum()), space.readers[page] | self.readers[item])

    def _take_out(self, items: list[int]) -> None:
        """Remove every piece of `items` from its page."""
        slots, space = self.problem.slot_bytes, self.space
        pages = set()
        for i in items:
            for page, blocks in self.placed[i]:
                self.on_page[page].discard(i)
                space.change(page, int(slots[blocks].sum()))
                pages.add(page)
            self.placed[i] = []
        for page in pages:
            space.change(page, 0, frozenset().union(*(self.readers[i] for i in self.on_page[page])))

    # ------------------------------------------------------------------ compaction
    def _compact(self) -> None:
        """Repack the pages of each reader set into fewer pages, splitting leftovers
        where needed, when the pages and reads saved outweigh the reads added. Never
        adds a page."""
        space = self.space
        by_readers: dict[frozenset[int], list[int]] = {}
        for page, readers in enumerate(space.readers):
            if self.on_page[page]:
                by_readers.setdefault(readers, []).append(page)
        for pages in by_readers.values():
            used = sum(space.capacity - space.free[p] for p in pages)
            if len(pages) > -(-used // space.capacity):
                self._compact_pages(pages)

    def _compact_pages(self, pages: list[int]) -> None:
        space, slots = self.space, self.problem.slot_bytes
        page_set = set(pages)
        items = sorted(set().union(*(self.on_page[p] for p in pages)))
        inside = {i: [b for page, b in self.placed[i] if page in page_set] for i in items}
        if any(len(v) < len(self.placed[i]) for i, v in inside.items()):
            return  # a leftover also lies elsewhere: leave it
        content = {i: np.concatenate(inside[i]) for i in items}
        cost = {r: float(self.reader_cost[r]) for p in pages for r in space.readers[p]}
        reads_before = sum(cost[r] for p in pages for r in space.readers[p])
        used = sum(space.capacity - space.free[p] for p in pages)
        best, best_gain = None, 0.0
        for n in range(-(-used // space.capacity), len(pages)):
            layout = _split_fit(content, n, space.capacity, slots)
            if layout is None:
                continue
            gain = (len(pages) - n) * _PAGE_COST + reads_before
            for on in _bin_items(layout, n):
                gain -= sum(cost[r] for r in frozenset().union(*(self.readers[i] for i in on)))
            gain -= sum(self.split_cost[i] * (len(layout[i]) - len(inside[i])) for i in items)
            if gain > best_gain:
                best, best_gain = layout, gain
        if best is not None:
            self._take_out(items)
            for i in items:
                for k, blocks in best[i]:
                    self._put(i, blocks, pages[k])

    # ------------------------------------------------------------------ CP-SAT
    def _model(self, cluster: list[int]) -> tuple[ClusterModel, list, list[int]]:
        """The cluster as a CP-SAT model over the pages it lies on (the rest of the
        layout fixed), its current packing as a hint, and the stage-2 page of each
        model page. Pages holding nothing else may be emptied; no page may be added."""
        capacity = self.problem.page_bytes
        slots = self.problem.slot_bytes
        pages = sorted({page for i in cluster for page, _ in self.placed[i]})
        local = {page: k for k, page in enumerate(pages)}
        members = set(cluster)
        outside = [self.on_page[p] - members for p in pages]  # other leftovers on each page
        load = [
            sum(int(slots[b].sum()) for i in out for q, b in self.placed[i] if q == p)
            for p, out in zip(pages, outside)
        ]
        readers_outside = [frozenset().union(*(self.readers[i] for i in out)) for out in outside]
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
        reader_items = list(shared.values())
        reader_cost = [int(self.read_cost[t]) for t in shared]
        read_pages: list[list[int]] = [[] for _ in shared]
        if self.has_models:
            # every model of the cluster: a page it reads for other data costs it nothing
            by_model: dict[int, list[int]] = {}
            for pos, i in enumerate(cluster):
                for m in self.keys[i]:
                    by_model.setdefault(m, []).append(pos)
            for m, items in by_model.items():
                reader_items.append(items)
                reader_cost.append(int(self.reader_cost[m]))
                read_pages.append([k for k, r in enumerate(readers_outside) if m in r])
        model = ClusterModel(
            capacity=capacity,
            base_load=load,
            is_new=[not out for out in outside],
            item_classes=classes,
            item_cost=item_cost,
            tensor_items=reader_items,
            tensor_cost=reader_cost,
            page_cost=_PAGE_COST,
            tensor_read_pages=read_pages,
            # fewer reads, but never more pages than best fit: the page target holds
            max_new_pages=sum(1 for out in outside if not out),
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
        self._take_out(cluster)
        for pos, i in enumerate(cluster):
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


def _split_fit(
    content: dict[int, np.ndarray], n_pages: int, capacity: int, slots: np.ndarray
) -> dict[int, list[tuple[int, np.ndarray]]] | None:
    """Put each item's blocks in `n_pages` pages: whole items by best fit, largest
    first; the items that fit nowhere whole are split over the roomiest pages. Returns
    each item's (page, blocks) pieces, or None when they do not fit."""
    free = [capacity] * n_pages
    layout: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in content}
    sizes = {i: int(slots[b].sum()) for i, b in content.items()}
    rest = []
    for i in sorted(content, key=lambda i: (-sizes[i], i)):
        fits = [k for k in range(n_pages) if free[k] >= sizes[i]]
        if fits:
            k = min(fits, key=lambda k: (free[k], k))
            layout[i].append((k, content[i]))
            free[k] -= sizes[i]
        else:
            rest.append(i)
    for i in rest:
        blocks = content[i]
        while blocks.size:
            k = max(range(n_pages), key=lambda k: (free[k], -k)) if n_pages else -1
            take = _first_fit(blocks, slots, free[k]) if k >= 0 else np.zeros(blocks.size, dtype=bool)
            if not take.any():
                return None
            layout[i].append((k, blocks[take]))
            free[k] -= int(slots[blocks[take]].sum())
            blocks = blocks[~take]
    return layout


def _bin_items(layout: dict[int, list[tuple[int, np.ndarray]]], n_pages: int) -> list[set[int]]:
    """The items on each page of a :func:`_split_fit` layout."""
    out: list[set[int]] = [set() for _ in range(n_pages)]
    for i, pieces in layout.items():
        for k, _ in pieces:
            out[k].add(i)
    return out


def _greedy_is_optimal(model: ClusterModel, hint: list) -> bool:
    """True when nothing is left to improve: no leftover split, no more new pages than
    the cluster's volume needs, and every reader of several leftovers (or any model)
    reads as few pages as their volume allows."""
    capacity = model.capacity
    spread = [{k for per_class in item for k, n in enumerate(per_class) if n} for item in hint]
    if any(len(s) > 1 for s in spread):
        return False
    volume = sum(size * n for classes in model.item_classes for size, n in classes)
    room = sum(capacity - load for load, new in zip(model.base_load, model.is_new) if not new)
    used_new = sum(1 for k, new in enumerate(model.is_new) if new and any(k in s for s in spread))
    if used_new > max(0, -(-(volume - room) // capacity)):
        return False
    for j, items in enumerate(model.tensor_items):
        used = set().union(*(spread[i] for i in items))
        charged = used & set(model.charged_pages(j))
        if len(charged) < len(used):  # reads some pages for free: only all-free is surely best
            if charged:
                return False
            continue
        needed = sum(size * n for i in items for size, n in model.item_classes[i])
        if len(used) > -(-needed // capacity):
            return False
    return True


def _affinity_order(
    problem: PackingProblem, item_groups: list[int], groups: SharingGroups, sizes: list[int]
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Order leftovers so that those needed by the same readers are neighbours.

    The key of a leftover is the sorted tuple of the models that read it (or, without
    models, of the tensors that do). Keys are visited depth first, each reader set right
    before the sets it contains (see :func:`_key_tree_order`): data whose readers are a
    subset of a page's fills that page without adding a read, so a set's leftovers are
    packed first and its subsets then fill its pages' gaps, before unrelated leftovers
    can. Within a key, leftovers follow a best-fit-decreasing packing of the key alone,
    page by page, so a cluster holds leftovers that complement each other. Returns the
    order and the key of each leftover.
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
    key_rank = _key_tree_order(sorted(set(keys)))
    by_key: dict[tuple[int, ...], list[int]] = {}
    for i in range(n_items):
        by_key.setdefault(keys[i], []).append(i)
    order: list[int] = []
    for key in sorted(by_key, key=key_rank.__getitem__):
        items = by_key[key]
        bins = best_fit_decreasing(np.array([sizes[i] for i in items], dtype=np.int64), problem.page_bytes)
        order += [items[j] for j in sorted(range(len(items)), key=lambda j: (bins[j], -sizes[items[j]], j))]
    return np.array(order, dtype=np.int64), keys


def _key_tree_order(keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], int]:
    """Depth-first rank of each reader set in the tree where a set's parent is its
    smallest strict superset (first in sorted order on ties); roots and siblings go
    largest first."""
    containing: dict[int, list[int]] = {}  # reader -> keys holding it
    for k, key in enumerate(keys):
        for r in key:
            containing.setdefault(r, []).append(k)
    children: dict[int, list[int]] = {}
    for k, key in enumerate(keys):
        members = set(key)
        # a strict superset holds the key's first reader; the empty key is under everything
        candidates = containing.get(key[0], []) if key else range(len(keys))
        parent = min(
            (c for c in candidates if len(keys[c]) > len(key) and members.issubset(keys[c])),
            key=lambda c: (len(keys[c]), c),
            default=-1,
        )
        children.setdefault(parent, []).append(k)
    rank: dict[tuple[int, ...], int] = {}
    stack = sorted(children.get(-1, []), key=lambda c: (len(keys[c]), -c))  # pop(): largest first
    while stack:
        k = stack.pop()
        rank[keys[k]] = len(rank)
        stack += sorted(children.get(k, []), key=lambda c: (len(keys[c]), -c))
    return rank


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
