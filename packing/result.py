"""What a packer returns: where every block lives, and how good that is.

Packers only decide *which page* each block goes to and in what order; this module
turns that into byte offsets and computes every metric from the placement itself, so
all packers are measured the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tensorstore_packing.bounds import model_block_pairs, model_lower_bounds, pages_lower_bound, tensor_lower_bounds
from tensorstore_packing.csr import unique_pairs
from tensorstore_packing.objective import cost
from tensorstore_packing.problem import PackingProblem, models_csr


@dataclass(frozen=True, slots=True)
class SolverReport:
    """How the CP-SAT part of Two-Stage went.

    The leftovers of stage 1 are cut into small clusters; each is solved by CP-SAT or,
    when that is not possible, by the greedy packer.

    Attributes
    ----------
    status : str
        ``"OPTIMAL"`` every cluster solved optimally (by CP-SAT, or greedy met the
        bound); ``"FEASIBLE"`` some CP-SAT solution not proven optimal;
        ``"FALLBACK"`` some clusters were packed greedily (see `reason`).
    reason : str
        One line a person can read: why the status is what it is.
    clusters, optimal, feasible, proven_by_greedy, fallback_time, fallback_size : int
        Cluster counts by outcome. ``fallback_time``: the time limit ran out before or
        during the cluster's solve; ``fallback_size``: the instance had too many
        leftovers for CP-SAT (``cp_max_items``).
    seconds : float
        Wall time spent in CP-SAT.
    """

    status: str
    reason: str
    clusters: int = 0
    optimal: int = 0
    feasible: int = 0
    proven_by_greedy: int = 0
    fallback_time: int = 0
    fallback_size: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class ModelReads:
    """Pages read to load each model (a set of tensors), and the lower bound."""

    names: tuple[str, ...]
    pages_read: np.ndarray
    lower_bound: np.ndarray

    @property
    def mean_pages_read(self) -> float:
        """Average pages read per model load."""
        return float(self.pages_read.mean()) if self.pages_read.size else 0.0

    @property
    def mean_ratio(self) -> float:
        """Average of pages read / lower bound over models with data."""
        has = self.lower_bound > 0
        return float((self.pages_read[has] / self.lower_bound[has]).mean()) if has.any() else 1.0


@dataclass(frozen=True, slots=True, eq=False)
class PackResult:
    """A placement of every block at one (page, byte offset), with its metrics.

    Arrays are indexed by *dense* block index (the position of the block's id in
    ``problem.block_ids``); use :meth:`page_of`, :meth:`offset_of` or
    :meth:`placement` to look blocks up by external id.

    Attributes
    ----------
    algorithm : str
        Name the packer was asked for.
    problem : PackingProblem
    block_page : numpy.ndarray
        ``(n_blocks,)`` page of each block; pages are ``0 .. pages-1``.
    block_offset : numpy.ndarray
        ``(n_blocks,)`` byte offset of each block in its page (a multiple of
        ``problem.alignment``).
    page_used_bytes : numpy.ndarray
        ``(pages,)`` slot bytes used in each page (<= ``problem.page_bytes``).
    lower_bound_pages : int
        No placement can use fewer pages.
    tensor_pages_read : numpy.ndarray
        ``(n_tensors,)`` distinct pages each tensor is read from.
    tensor_lower_bound : numpy.ndarray
        ``(n_tensors,)`` fewest pages each tensor could be read from.
    tensor_excess_bytes : numpy.ndarray
        ``(n_tensors,)`` bytes of *other* blocks in the pages a tensor reads: data read
        that the tensor does not need (slot bytes; empty page space not counted).
    solve_seconds : float
        Wall time of the packer.
    status : str
        ``"heuristic"`` for the greedy packers; Two-Stage gives its solver status.
    solver : SolverReport or None
        Details of the CP-SAT stage (Two-Stage only).
    read_weight : float
        The objective's knob the result was computed (and scored) with.
    """

    algorithm: str
    problem: PackingProblem
    block_page: np.ndarray
    block_offset: np.ndarray
    page_used_bytes: np.ndarray
    lower_bound_pages: int
    tensor_pages_read: np.ndarray
    tensor_lower_bound: np.ndarray
    tensor_excess_bytes: np.ndarray
    solve_seconds: float
    status: str
    solver: SolverReport | None
    read_weight: float

    # ------------------------------------------------------------------ look-ups
    @property
    def pages(self) -> int:
        """Pages stored."""
        return int(self.page_used_bytes.size)

    def page_of(self, block_id: int) -> int:
        """Page of the block with external id `block_id`."""
        return int(self.block_page[self.problem.block_index(block_id)[0]])

    def offset_of(self, block_id: int) -> int:
        """Byte offset within its page of the block with external id `block_id`."""
        return int(self.block_offset[self.problem.block_index(block_id)[0]])

    def placement(self) -> dict[int, tuple[int, int]]:
        """External block id -> (page, offset) for every block."""
        return dict(
            zip(
                self.problem.block_ids.tolist(),
                zip(self.block_page.tolist(), self.block_offset.tolist()),
            )
        )

    def page_contents(self, page: int) -> np.ndarray:
        """External ids of the blocks in `page`, by offset."""
        members = np.flatnonzero(self.block_page == page)
        return self.problem.block_ids[members[np.argsort(self.block_offset[members])]]

    # ------------------------------------------------------------------ metrics
    @property
    def page_ratio(self) -> float:
        """Pages stored / lower bound (1.0 is optimal)."""
        return self.pages / self.lower_bound_pages if self.lower_bound_pages else 1.0

    @property
    def mean_read_ratio(self) -> float:
        """Average over tensors (with data) of pages read / lower bound."""
        has = self.tensor_lower_bound > 0
        if not has.any():
            return 1.0
        return float((self.tensor_pages_read[has] / self.tensor_lower_bound[has]).mean())

    @property
    def weighted_read_ratio(self) -> float:
        """Rate-weighted pages read / rate-weighted lower bound."""
        w = self.problem.tensor_weights
        bound = float(np.dot(w, self.tensor_lower_bound))
        return float(np.dot(w, self.tensor_pages_read)) / bound if bound else 1.0

    @property
    def cost(self) -> float:
        """The objective (see :mod:`packing.objective`); lower is better."""
        model_reads = self.model_reads().pages_read if self.problem.n_models else None
        return cost(self.problem, self.pages, self.tensor_pages_read, self.read_weight, model_reads)

    def model_reads(self, models: Mapping[str, Sequence[str]] | None = None) -> ModelReads:
        """Pages read to load each model.

        Parameters
        ----------
        models : Mapping[str, Sequence[str]], optional
            Model name -> its tensor names; default the problem's own models.

        Returns
        -------
        ModelReads
        """
        problem = self.problem
        if models is None:
            names, ptr, tensors = problem.model_names, problem.model_ptr, problem.model_tensors
        else:
            lookup = {name: i for i, name in enumerate(problem.tensor_names)}
            names, ptr, tensors = models_csr(models, problem.tensor_names, lookup)
        model, block = model_block_pairs(problem, ptr, tensors)
        m_pages, _ = unique_pairs(model, self.block_page[block], max(self.pages, 1))
        return ModelReads(
            names=names,
            pages_read=np.bincount(m_pages, minlength=len(names)).astype(np.int64),
            lower_bound=model_lower_bounds(problem, ptr, tensors),
        )

    def summary(self, models: Mapping[str, Sequence[str]] | None = None) -> dict[str, object]:
        """The headline figures as plain Python values (JSON-ready)."""
        out: dict[str, object] = {
            "algorithm": self.algorithm,
            "pages": self.pages,
            "pages_lower_bound": self.lower_bound_pages,
            "page_ratio": round(self.page_ratio, 4),
            "mean_read_ratio": round(self.mean_read_ratio, 4),
            "weighted_read_ratio": round(self.weighted_read_ratio, 4),
            "mean_pages_read_per_tensor": round(float(self.tensor_pages_read.mean()), 3)
            if self.problem.n_tensors
            else 0.0,
            "excess_bytes_read": int(self.tensor_excess_bytes.sum()),
            "cost": round(self.cost, 4),
            "seconds": round(self.solve_seconds, 3),
            "status": self.status,
        }
        if models is not None or self.problem.n_models:
            reads = self.model_reads(models)
            out["mean_pages_read_per_model"] = round(reads.mean_pages_read, 2)
            out["mean_model_read_ratio"] = round(reads.mean_ratio, 4)
            has = reads.lower_bound > 0
            out["max_model_read_ratio"] = (
                round(float((reads.pages_read[has] / reads.lower_bound[has]).max()), 4) if has.any() else 1.0
            )
        if self.solver is not None:
            out["solver"] = self.solver.reason
        return out


def build_result(
    problem: PackingProblem,
    algorithm: str,
    page_of: np.ndarray,
    rank: np.ndarray,
    *,
    seconds: float,
    read_weight: float,
    status: str = "heuristic",
    solver: SolverReport | None = None,
) -> PackResult:
    """Turn a page choice per block into offsets and metrics.

    Parameters
    ----------
    problem : PackingProblem
    algorithm : str
    page_of : numpy.ndarray
        ``(n_blocks,)`` any integer page label per block; labels are renumbered
        ``0 .. pages-1`` in increasing order.
    rank : numpy.ndarray
        ``(n_blocks,)`` blocks of a page are laid out by increasing rank.
    seconds, read_weight, status, solver
        Copied into the result.

    Returns
    -------
    PackResult

    Raises
    ------
    RuntimeError
        If the placement overfills a page (a packer bug, never bad input).
    """
    labels, page = np.unique(np.asarray(page_of, dtype=np.int64), return_inverse=True)
    page = page.reshape(-1).astype(np.int64)
    slots = problem.slot_bytes
    order = np.lexsort((rank, page))
    end = np.cumsum(slots[order])
    page_sorted = page[order]
    first_in_page = np.ones(order.size, dtype=bool)
    first_in_page[1:] = page_sorted[1:] != page_sorted[:-1]
    page_start = np.maximum.accumulate(np.where(first_in_page, end - slots[order], 0))
    offset = np.empty_like(page)
    offset[order] = end - slots[order] - page_start

    used = np.bincount(page, weights=slots, minlength=labels.size).astype(np.int64)
    if np.any(used > problem.page_bytes):
        raise RuntimeError(f"{algorithm} overfilled a page; this is a bug in the packer")

    ref_tensor = problem.tensor_of_ref()
    t_of_pair, p_of_pair = unique_pairs(ref_tensor, page[problem.tensor_blocks], labels.size)
    reads = np.bincount(t_of_pair, minlength=problem.n_tensors).astype(np.int64)
    read_bytes = np.bincount(t_of_pair, weights=used[p_of_pair], minlength=problem.n_tensors)
    own_bytes = np.bincount(ref_tensor, weights=slots[problem.tensor_blocks], minlength=problem.n_tensors)
    return PackResult(
        algorithm=algorithm,
        problem=problem,
        block_page=_frozen(page),
        block_offset=_frozen(offset),
        page_used_bytes=_frozen(used),
        lower_bound_pages=pages_lower_bound(slots, problem.page_bytes),
        tensor_pages_read=_frozen(reads),
        tensor_lower_bound=_frozen(tensor_lower_bounds(problem)),
        tensor_excess_bytes=_frozen((read_bytes - own_bytes).astype(np.int64)),
        solve_seconds=float(seconds),
        status=status,
        solver=solver,
        read_weight=float(read_weight),
    )


def score(
    problem: PackingProblem,
    block_page: np.ndarray,
    rank: np.ndarray | None = None,
    *,
    read_weight: float = 1.0,
) -> PackResult:
    """Measure a placement made elsewhere (e.g. the layout a store has now) the way
    every packer is measured, so that it can be compared with a new one.

    Parameters
    ----------
    problem : PackingProblem
    block_page : numpy.ndarray
        ``(n_blocks,)`` any integer page label per dense block.
    rank : numpy.ndarray, optional
        In-page order (e.g. the current offsets); default the block order.
    read_weight : float, default 1.0
        The objective's knob.

    Returns
    -------
    PackResult
        With ``algorithm="given"`` and ``status="given"``; offsets are recomputed
        (blocks of a page laid end to end by `rank`).

    Raises
    ------
    InvalidProblemError
        Not one label per block, or a page holding more than ``page_bytes``.
    """
    from tensorstore_packing.errors import InvalidProblemError
    from tensorstore_packing.objective import check_read_weight

    check_read_weight(read_weight)
    page = np.asarray(block_page)
    if page.shape != (problem.n_blocks,) or (page.size and page.dtype.kind not in "iu"):
        raise InvalidProblemError(f"block_page must hold one integer page label per block ({problem.n_blocks})")
    order = np.arange(problem.n_blocks) if rank is None else np.asarray(rank)
    if order.shape != page.shape:
        raise InvalidProblemError("rank must have one entry per block")
    _, dense = np.unique(page, return_inverse=True)
    if np.any(np.bincount(dense.reshape(-1), weights=problem.slot_bytes) > problem.page_bytes):
        raise InvalidProblemError(f"a page of the given placement holds more than {problem.page_bytes} bytes")
    return build_result(problem, "given", page, order, seconds=0.0, read_weight=read_weight, status="given")


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
