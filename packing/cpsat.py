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
item of the cluster, and ``j`` ranges over tensors reading several items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
        Per tensor reading several items: those items.
    tensor_cost : list of int
        Per such tensor: cost of each page it reads.
    page_cost : int
        Cost of a new page.
    """

    capacity: int
    base_load: list[int]
    is_new: list[bool]
    item_classes: list[list[tuple[int, int]]]
    item_cost: list[int]
    tensor_items: list[list[int]]
    tensor_cost: list[int]
    page_cost: int


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

    reads = []
    for j, items in enumerate(cluster.tensor_items):
        r = [model.new_bool_var(f"r{j}_{k}") for k in pages]
        for i in items:
            for k in pages:
                model.add_implication(on_page[i][k], r[k])
        for k in pages:
            model.add_hint(r[k], any(_hinted(hint[i], k) for i in items))
        reads.append(r)

    model.minimize(
        cluster.page_cost * sum(used)
        + sum(cost * sum(y) for cost, y in zip(cluster.item_cost, on_page))
        + sum(cost * sum(r) for cost, r in zip(cluster.tensor_cost, reads))
    )
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(float(time_limit), 0.001)
    solver.parameters.num_workers = int(num_workers)
    solver.parameters.random_seed = int(seed)
    code = solver.solve(model)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return ClusterSolution(None, "unknown")
    counts = [[[int(solver.value(v)) for v in n] for n in per_class] for per_class in count]
    return ClusterSolution(counts, "optimal" if code == cp_model.OPTIMAL else "feasible")


def cluster_cost(cluster: ClusterModel, counts: Sequence[Sequence[Sequence[int]]]) -> int:
    """The model's objective for a solution ``counts`` (to compare with a greedy one)."""
    pages = range(len(cluster.base_load))
    spread = [{k for k in pages if _hinted(item, k)} for item in counts]
    new_used = sum(1 for k in pages if cluster.is_new[k] and any(k in s for s in spread))
    total = cluster.page_cost * new_used
    total += sum(cost * len(s) for cost, s in zip(cluster.item_cost, spread))
    for cost, items in zip(cluster.tensor_cost, cluster.tensor_items):
        total += cost * len(set().union(*(spread[i] for i in items)))
    return total


def _hinted(item_hint: Sequence[Sequence[int]], k: int) -> bool:
    return any(per_page[k] for per_page in item_hint)
