"""The accuracy-gated dedup planner: how many replacements can be applied?

Pure logic, independent of storage. The caller orders the candidate replacements (lowest
magnitude first) and supplies ``evaluate(k)``: the accuracy of the model with the first
``k`` replacements applied (higher is better). The planner finds the largest prefix ``k``
whose accuracy is at least ``baseline - max_accuracy_drop``, with few evaluations:

1. Try everything (``k = n``): often it fits, and one evaluation settles it.
2. Gallop: try ``k = 1, 2, 4, ...`` while within budget, until one fails.
3. Binary search between the last prefix within budget and the first one over it.

At most ``2 * ceil(log2 n)`` evaluations (plus one if the baseline is measured), within
the target ``2 * log2(n) + 3``. Accuracy need not be monotone in ``k``; the search keeps
the invariant "``low`` was evaluated and is within budget (or is 0, the untouched model);
``high`` was evaluated and is over budget", so the chosen ``k`` is always one that was
*measured* within budget. With monotone accuracy it is the largest such ``k``; otherwise it
is a ``k`` within budget whose successor is over it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from tensorstore_index.checks import as_real
from tensorstore_index.errors import EvaluationError, InvalidArgumentError, InvalidTypeError

T = TypeVar("T")

#: Error levels (relative L2) at which a dedup pass admits candidates, one round per level
#: up to its tolerance (a 1-2-5 series). Because a pass at a tolerance runs exactly the
#: rounds of every smaller tolerance first, a larger tolerance can only add replacements.
TOLERANCE_LEVELS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


@dataclass(frozen=True, slots=True)
class Replacement:
    """One candidate lossy replacement.

    Attributes
    ----------
    position : Hashable
        Which block is replaced, in the caller's terms (e.g. ``(tensor name, block index)``).
    representative : int
        Id of the block that would replace it.
    error : float
        Exact error of the replacement (e.g. relative L2), for the record.
    """

    position: Hashable
    representative: int
    error: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One call of ``evaluate``: the prefix length tried and the accuracy it gave."""

    prefix_len: int
    accuracy: float


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """The planner's decision and how it got there.

    Attributes
    ----------
    accepted : tuple
        The first ``k`` candidates: the replacements to apply.
    k : int
        How many candidates are accepted.
    candidates : int
        How many were offered.
    baseline : float
        Accuracy with no replacement.
    max_accuracy_drop : float
        The budget.
    accuracy : float
        Accuracy measured with the ``k`` accepted replacements (``baseline`` when ``k == 0``).
    evaluations : int
        Calls made to ``evaluate`` (including the baseline's, if the planner measured it).
    trace : tuple of Evaluation
        Every evaluation in the order made.
    """

    accepted: tuple[T, ...]
    k: int
    candidates: int
    baseline: float
    max_accuracy_drop: float
    accuracy: float
    evaluations: int
    trace: tuple[Evaluation, ...]

    @property
    def floor(self) -> float:
        """Lowest accuracy allowed: ``baseline - max_accuracy_drop``."""
        return self.baseline - self.max_accuracy_drop


def tolerance_levels(tolerance: float) -> tuple[float, ...]:
    """The rounds of a pass at ``tolerance``: every level of :data:`TOLERANCE_LEVELS` up to it.

    A tolerance between two levels acts as the level below it; one below the first level
    is a single round at itself.

    Raises
    ------
    InvalidArgumentError
        ``tolerance`` is not positive.
    """
    value = as_real(tolerance, "tolerance")
    if not value > 0:
        raise InvalidArgumentError(f"tolerance must be positive, got {value}")
    levels = tuple(level for level in TOLERANCE_LEVELS if level <= value)
    return levels or (value,)


def savings_order(saved_bytes: Sequence[float] | np.ndarray, cost: Sequence[float] | np.ndarray) -> np.ndarray:
    """Order candidates by bytes saved per unit of cost (accuracy risk), most first.

    Parameters
    ----------
    saved_bytes : array-like
        Bytes each replacement frees (for an encoded block: its size as stored, so a good
        delta, already small, saves little).
    cost : array-like
        What each replacement risks, e.g. its relative error times the block's magnitude
        score (the change on its tensor's scale); 0 ranks first.

    Returns
    -------
    numpy.ndarray
        Candidate indices; ties go to the lower cost, then to the earlier candidate.
    """
    saved = np.asarray(saved_bytes, dtype=np.float64)
    risk = np.asarray(cost, dtype=np.float64)
    if saved.ndim != 1 or risk.shape != saved.shape:
        raise InvalidArgumentError("saved_bytes and cost must be 1-D and of one length")
    if np.any(~np.isfinite(saved) | (saved < 0)) or np.any(np.isnan(risk) | (risk < 0)):
        raise InvalidArgumentError("saved_bytes must be finite and >= 0, cost >= 0 (not NaN)")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(risk > 0, saved / risk, np.inf)
    return np.lexsort((np.arange(saved.size), risk, -ratio))


def max_evaluations(candidates: int) -> int:
    """Upper bound on ``evaluate`` calls for ``candidates`` (baseline given): ``2 ceil(log2 n)``.

    For ``n == 1`` the bound is 1; for ``n == 0`` it is 0.
    """
    if candidates <= 1:
        return max(candidates, 0)
    return 2 * math.ceil(math.log2(candidates))


def plan_replacements(
    candidates: Sequence[T],
    evaluate: Callable[[int], float],
    *,
    max_accuracy_drop: float,
    baseline: float | None = None,
) -> Plan[T]:
    """Choose the longest prefix of ``candidates`` that keeps accuracy within budget.

    Parameters
    ----------
    candidates : sequence
        Replacements in the order to apply them (typically :class:`Replacement`, lowest
        magnitude first). The planner only counts them and returns the accepted prefix.
    evaluate : callable
        ``evaluate(k) -> float``: accuracy with the first ``k`` candidates applied, higher is
        better. Called with ``1 <= k <= len(candidates)``, never twice with the same ``k``
        (and with ``k = 0`` only when ``baseline`` is None).
    max_accuracy_drop : float
        Absolute budget, ``0 <= max_accuracy_drop < 1``.
    baseline : float, optional
        Accuracy with no replacement; measured as ``evaluate(0)`` when omitted.

    Returns
    -------
    Plan
        ``plan.accuracy >= plan.floor`` always holds: the chosen ``k`` was evaluated (or is 0).

    Raises
    ------
    InvalidArgumentError
        Budget outside ``[0, 1)``, or ``evaluate`` returned NaN or infinity.
    InvalidTypeError
        ``candidates`` is not a sequence, a number has the wrong type, or ``evaluate``
        returned something that is not a real number.
    EvaluationError
        ``evaluate`` raised; the original exception is chained as ``__cause__``.
    """
    if not isinstance(candidates, Sequence) or isinstance(candidates, (str, bytes)):
        raise InvalidTypeError(
            f"candidates must be a sequence, got {type(candidates).__name__}"
        )
    if not callable(evaluate):
        raise InvalidTypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    budget = as_real(max_accuracy_drop, "max_accuracy_drop")
    if not 0 <= budget < 1:
        raise InvalidArgumentError(f"max_accuracy_drop must be in [0, 1), got {budget}")
    n = len(candidates)
    trace: list[Evaluation] = []
    measured: dict[int, float] = {}

    def accuracy_at(k: int) -> float:
        if k not in measured:
            measured[k] = _call(evaluate, k)
            trace.append(Evaluation(k, measured[k]))
        return measured[k]

    base = accuracy_at(0) if baseline is None else as_real(baseline, "baseline")
    floor = base - budget

    def fits(k: int) -> bool:
        return accuracy_at(k) >= floor

    low, high = _bracket(n, fits)
    while high - low > 1:  # low fits, high does not: both measured (or low == 0)
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return Plan(
        accepted=tuple(candidates[:low]),
        k=low,
        candidates=n,
        baseline=base,
        max_accuracy_drop=budget,
        accuracy=measured[low] if low else base,
        evaluations=len(trace),
        trace=tuple(trace),
    )


def _bracket(n: int, fits: Callable[[int], bool]) -> tuple[int, int]:
    """Return ``(low, high)`` with ``low`` fitting (or 0) and ``high`` not (or ``low == n``).

    Tries everything first, then gallops ``1, 2, 4, ...``.
    """
    if n == 0 or fits(n):
        return n, n
    low, step = 0, 1
    while step < n:
        if not fits(step):
            return low, step
        low, step = step, step * 2
    return low, n  # n itself was measured over budget


def _call(evaluate: Callable[[int], float], k: int) -> float:
    """Call ``evaluate(k)`` and check that it returned a finite real number."""
    try:
        value = evaluate(k)
    except Exception as exc:
        raise EvaluationError(
            f"evaluate({k}) raised {type(exc).__name__}: {exc}", prefix_len=k
        ) from exc
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"evaluate({k}) must return a real number (accuracy), got {type(value).__name__}"
        )
    result = float(value)
    if not math.isfinite(result):
        raise InvalidArgumentError(f"evaluate({k}) returned {result}; accuracy must be finite")
    return result
