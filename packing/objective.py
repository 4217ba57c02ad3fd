"""The one objective every packer is judged by, and its single knob.

Storing fewer pages and reading fewer pages per tensor pull against each other (packing
pages full mixes data that different tensors need). Both are measured *relative to
their lower bounds* so that the knob does not depend on the size of the instance::

    cost = pages / pages_lb
         + read_weight * sum_t w_t * reads_t / sum_t w_t * reads_lb_t
         + read_weight * sum_m r_m * reads_m / sum_m r_m * reads_lb_m     (with models)

``w_t`` is tensor ``t``'s request rate; ``reads_m`` the distinct pages a load of model
``m`` reads and ``r_m`` its rate (the mean rate of its tensors). A tensor request and a
model load are both reads a user waits for, so each is measured against its own bound
and both count. With ``read_weight = 1`` (the default) one percent more pages stored
costs as much as one percent more (rate-weighted) pages read per tensor, or per model
load; ``read_weight = 0`` cares only for storage, a large value only for reads.
Without models the model term is absent.
"""

from __future__ import annotations

import numpy as np

from tensorstore_packing.bounds import model_lower_bounds, pages_lower_bound, tensor_lower_bounds
from tensorstore_packing.errors import InvalidProblemError, ProblemTypeError
from tensorstore_packing.problem import PackingProblem

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


def model_cost_coefficients(problem: PackingProblem, read_weight: float) -> np.ndarray:
    """Cost of one page read by each model's load (all zero without models).

    Parameters
    ----------
    problem : PackingProblem
    read_weight : float
        The knob (>= 0).

    Returns
    -------
    numpy.ndarray
        ``(n_models,)`` cost of one page read by each model.
    """
    check_read_weight(read_weight)
    if not problem.n_models:
        return np.zeros(0)
    rates = model_rates(problem)
    reads_lb = float(np.dot(rates, model_lower_bounds(problem, problem.model_ptr, problem.model_tensors)))
    if reads_lb == 0.0:
        return np.zeros(problem.n_models)
    return read_weight * rates / reads_lb


def model_rates(problem: PackingProblem) -> np.ndarray:
    """Request rate of each model: the mean rate of its tensors (0 for an empty model)."""
    counts = np.diff(problem.model_ptr)
    owner = np.repeat(np.arange(problem.n_models), counts)
    total = np.bincount(owner, weights=problem.tensor_weights[problem.model_tensors], minlength=problem.n_models)
    return np.divide(total, counts, out=np.zeros(problem.n_models), where=counts > 0)


def cost(
    problem: PackingProblem,
    pages: int,
    tensor_reads: np.ndarray,
    read_weight: float,
    model_reads: np.ndarray | None = None,
) -> float:
    """The objective of a placement with `pages` pages and these reads per tensor and
    (when the problem has models) per model."""
    page_cost, read_cost = cost_coefficients(problem, read_weight)
    total = float(page_cost * pages + np.dot(read_cost, tensor_reads))
    if model_reads is not None and problem.n_models:
        total += float(np.dot(model_cost_coefficients(problem, read_weight), model_reads))
    return total


def check_read_weight(read_weight: float) -> None:
    """Raise ``ValueError`` unless `read_weight` is a finite number >= 0."""
    if isinstance(read_weight, bool) or not isinstance(read_weight, (int, float, np.floating)):
        raise ProblemTypeError(f"read_weight must be a number, got {read_weight!r}")
    if not np.isfinite(read_weight) or read_weight < 0:
        raise InvalidProblemError(f"read_weight must be finite and >= 0, got {read_weight}")
