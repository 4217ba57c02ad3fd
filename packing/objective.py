"""The one objective every packer is judged by, and its single knob.

Storing fewer pages and reading fewer pages per tensor pull against each other (packing
pages full mixes data that different tensors need). Both are measured *relative to
their lower bounds* so that the knob does not depend on the size of the instance::

    cost = pages / pages_lb  +  read_weight * sum_t w_t * reads_t / sum_t w_t * reads_lb_t

``w_t`` is tensor ``t``'s request rate. With ``read_weight = 1`` (the default) one
percent more pages stored costs as much as one percent more (rate-weighted) pages read;
``read_weight = 0`` cares only for storage, a large value only for reads.
"""

from __future__ import annotations

import numpy as np

from packing.bounds import pages_lower_bound, tensor_lower_bounds
from packing.errors import InvalidProblemError, ProblemTypeError
from packing.problem import PackingProblem

#: Default weight of pages read against pages stored (see the module docstring).
DEFAULT_READ_WEIGHT = 1.0


def cost_coefficients(problem: PackingProblem, read_weight: float) -> tuple[float, np.ndarray]:
    """Cost of one page stored and of one page read by each tensor.

    Parameters
    ----------
    problem : PackingProblem
    read_weight : float
        The knob (>= 0).

    Returns
    -------
    page_cost : float
    read_cost : numpy.ndarray
        ``(n_tensors,)`` cost of one page read by each tensor.
    """
    check_read_weight(read_weight)
    pages_lb = pages_lower_bound(problem.slot_bytes, problem.page_bytes)
    page_cost = 1.0 / pages_lb if pages_lb else 0.0
    reads_lb = float(np.dot(problem.tensor_weights, tensor_lower_bounds(problem)))
    if reads_lb == 0.0:
        return page_cost, np.zeros(problem.n_tensors)
    return page_cost, read_weight * problem.tensor_weights / reads_lb


def cost(problem: PackingProblem, pages: int, tensor_reads: np.ndarray, read_weight: float) -> float:
    """The objective of a placement with `pages` pages and these reads per tensor."""
    page_cost, read_cost = cost_coefficients(problem, read_weight)
    return float(page_cost * pages + np.dot(read_cost, tensor_reads))


def check_read_weight(read_weight: float) -> None:
    """Raise ``ValueError`` unless `read_weight` is a finite number >= 0."""
    if isinstance(read_weight, bool) or not isinstance(read_weight, (int, float, np.floating)):
        raise ProblemTypeError(f"read_weight must be a number, got {read_weight!r}")
    if not np.isfinite(read_weight) or read_weight < 0:
        raise InvalidProblemError(f"read_weight must be finite and >= 0, got {read_weight}")
