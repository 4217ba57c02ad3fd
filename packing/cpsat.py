"""The OR-Tools CP-SAT model for one cluster of Two-Stage leftovers.

A cluster is a few leftovers (items) and the pages they may use: pages already partly
filled by earlier clusters (their load is fixed) and pages the cluster may open. An
item may be split across pages, but blocks of one size are interchangeable, so the
model counts how many blocks of each size an item puts on each page instead of
placing blocks one by one. It minimises::

    page_cost * new pages used
      + sum_i item_cost_i   * pages item i is spread over
      + sum_j tensor_cost_j * pages tensor j reads

where ``item_cost_i`` is the read cost of the tensors that read item ``i`` and no other
item of the cluster, and ``j`` ranges over the other *readers*: tensors reading several
items and model loads. A page a reader already reads for data outside the cluster costs
it nothing more (``tensor_read_pages``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ortools.sat.python import cp_model


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """Plain data of one cluster's packing problem (all costs are integers).

    Attributes
    ----------
    capacity : int
        Page capacity in bytes.
    base_load : list of int
        Per page: bytes already there from outside the cluster.
    is_new : list of bool
        Per page: opened by this cluster (costs `page_cost` if used).
    item_classes : list of list of (int, int)
        Per item: (block slot size, number of such blocks).
    item_cost : list of int
        Per item: cost of each page the item is spread over.
    tensor_items : list of list of int
        Per reader (a tensor reading several items, or a model): its items.
    tensor_cost : list of int
        Per reader: cost of each page it reads.
    page_cost : int
        Cost of a new page.
    tensor_read_pages : list of list of int
        Per reader (may be empty: none): pages it reads anyway, for data outside the
        cluster; reading them costs it nothing more.
    max_new_pages : int or None
        At most this many new pages may be used (None: no cap).
    """

    capacity: int
    base_load: list[int]
    is_new: list[bool]
    item_classes: list[list[tuple[int, int]]]
    item_cost: list[int]
    tensor_items: list[list[int]]
    tensor_cost: list[int]
    page_cost: int
    tensor_read_pages: list[list[int]] = field(default_factory=list)
    max_new_pages: int | None = None

    def charged_pages(self, j: int) -> list[int]:
        """The pages reader `j` pays for when it reads them."""
        free = set(self.tensor_read_pages[j]) if j < len(self.tensor_read_pages) else set()
        return [k for k in range(len(self.base_load)) if k not in free]


@dataclass(frozen=True, slots=True)
class ClusterSolution:
    """CP-SAT's answer for one cluster.

    Attributes
    ----------
    counts : list or None
        ``counts[i][c][k]``: blocks of item ``i``'s size class ``c`` on page ``k``; None
        when CP-SAT found no solution in time.
    status : str
        ``"optimal"``, ``"feasible"`` or ``"unknown"`` (no solution).
    """

    counts: list[list[list[int]]] | None
    status: str


def solve_cluster(
    cluster: ClusterModel,
    hint: Sequence[Sequence[Sequence[int]]],
    *,
    time_limit: float,
    num_workers: int = 2,
    seed: int = 0,
) -> ClusterSolution:
    """Solve one cluster, starting from `hint` (a feasible ``counts``).

    Parameters
    ----------
    cluster : ClusterModel
    hint : nested sequence of int
        A feasible solution in the shape of :attr:`ClusterSolution.counts`.
    time_limit : float
        Seconds CP-SAT may search.
    num_workers : int, default 2
        CP-SAT search threads.
    seed : int, default 0
        CP-SAT random seed.

    Returns
    -------
    ClusterSolution
    """
    pages = range(len(cluster.base_load))
    model = cp_model.CpModel()
    on_page = []  # on_page[i][k]: item i has blocks on page k
    count = []  # count[i][c][k]: blocks of class c of item i on page k
    for i, classes in enumerate(cluster.item_classes):
        y = [model.new_bool_var(f"y{i}_{k}") for k in pages]
        per_class = []
        for c, (_, m) in enumerate(classes):
            n = [model.new_int_var(0, m, f"n{i}_{c}_{k}") for k in pages]
            model.add(sum(n) == m)
            for k in pages:
                model.add(n[k] <= m * y[k])
                model.add_hint(n[k], hint[i][c][k])
            per_class.append(n)
        for k in pages:
            model.add(sum(n[k] for n in per_class) >= y[k])  # y only where blocks are
            model.add_hint(y[k], any(hint[i][c][k] for c in range(len(classes))))
        on_page.append(y)
        count.append(per_class)

    used = []
    for k in pages:
        load = sum(
            size * count[i][c][k]
            for i, classes in enumerate(cluster.item_classes)
            for c, (size, _) in enumerate(classes)
        )
        if cluster.is_new[k]:
            u = model.new_bool_var(f"u{k}")
            model.add(cluster.base_load[k] + load <= cluster.capacity * u)
            model.add_hint(u, any(_hinted(h, k) for h in hint))
            used.append(u)
        else:
            model.add(cluster.base_load[k] + load <= cluster.capacity)
    for a, b in zip(used, used[1:]):
        model.add(a >= b)  # new pages are interchangeable: use them in order
    if cluster.max_new_pages is not None:
        model.add(sum(used) <= cluster.max_new_pages)

    reads = []
    for j, items in enumerate(cluster.tensor_items):
        r = []
        for k in cluster.charged_pages(j):  # elsewhere the reader reads the page anyway
            rk = model.new_bool_var(f"r{j}_{k}")
            for i in items:
                model.add_implication(on_page[i][k], rk)
            model.add_hint(rk, any(_hinted(hint[i], k) for i in items))
            r.append(rk)
        reads.append(r)

    model.minimize(
        cluster.page_cost * sum(used)
        + sum(cost * sum(y) for cost, y in zip(cluster.item_cost, on_page))
        + sum(cost * sum(r) for cost, r in zip(cluster.tensor_cost, reads))
    )
    solver, code = solve(model, time_limit=time_limit, num_workers=num_workers, seed=seed)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return ClusterSolution(None, "unknown")
    counts = [[[int(solver.value(v)) for v in n] for n in per_class] for per_class in count]
    return ClusterSolution(counts, "optimal" if code == cp_model.OPTIMAL else "feasible")


def solve(
    model: cp_model.CpModel, *, time_limit: float, num_workers: int = 2, seed: int = 0
) -> tuple[cp_model.CpSolver, int]:
    """Solve `model` under a wall-clock limit; the solver (for its values) and its status."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(float(time_limit), 0.001)
    solver.parameters.num_workers = int(num_workers)
    solver.parameters.random_seed = int(seed)
    return solver, solver.solve(model)


def cluster_cost(cluster: ClusterModel, counts: Sequence[Sequence[Sequence[int]]]) -> int:
    """The model's objective for a solution ``counts`` (to compare with a greedy one)."""
    pages = range(len(cluster.base_load))
    spread = [{k for k in pages if _hinted(item, k)} for item in counts]
    new_used = sum(1 for k in pages if cluster.is_new[k] and any(k in s for s in spread))
    total = cluster.page_cost * new_used
    total += sum(cost * len(s) for cost, s in zip(cluster.item_cost, spread))
    for j, (cost, items) in enumerate(zip(cluster.tensor_cost, cluster.tensor_items)):
        charged = set(cluster.charged_pages(j))
        total += cost * len(charged & set().union(*(spread[i] for i in items)))
    return total


def _hinted(item_hint: Sequence[Sequence[int]], k: int) -> bool:
    return any(per_page[k] for per_page in item_hint)
