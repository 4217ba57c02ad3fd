"""When is a candidate block close enough to replace a block?

Two measures, both expressed as an *error* where lower is better and a candidate is
accepted when ``error <= limit``:

``RelativeL2`` (the default)
    ``||q - c|| / ||q||``: the size of the change relative to the block it replaces. It is
    scale free, so one tolerance suits layers of very different magnitudes, and it is what
    the LSH (a cosine hash) is built to find: ``||q - c|| <= t ||q||`` implies an angle of
    at most ``asin(t)`` between ``q`` and ``c``.
``ElementShare``
    The measure of Zhou et al. (VLDB 2022): the share of elements with ``|q_i - c_i| <= delta``
    must be at least ``min_share``. Its error is the share of elements *outside* ``delta``.
    The LSH still proposes candidates by direction, so a candidate that meets this measure
    but points elsewhere (a few huge outliers) can be missed; verification is exact.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tensorstore_index.checks import as_real
from tensorstore_index.errors import InvalidArgumentError, InvalidTypeError


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of each vector (last axis) of ``a`` with the matching one of ``b``.

    ``a`` and ``b`` broadcast against each other. ``np.vecdot`` (numpy >= 2) keeps about
    1e-7 relative error on float32 rows of 16K elements at the speed of a float32 einsum
    (which errs by 2e-6; float64 is 3x slower).
    """
    if hasattr(np, "vecdot"):
        return np.vecdot(a, b)
    return np.einsum("...j,...j->...", a, b, dtype=np.float64)  # numpy 1.x


class Tolerance(Protocol):
    """What :meth:`index.lsh.LSHIndex.match` needs from a tolerance measure."""

    @property
    def limit(self) -> float:
        """Largest accepted error."""
        ...

    def errors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Exact error of ``candidates[i]`` as a replacement for ``queries[i]`` (float64).

        Vectors lie on the last axis and the two arrays broadcast against each other:
        ``queries`` of shape ``(n, 1, d)`` against ``candidates`` of ``(n, m, d)`` gives
        ``(n, m)`` errors without copying a query per candidate.
        """
        ...

    def may_accept(self, query_norms: np.ndarray, candidate_norms: np.ndarray) -> np.ndarray:
        """Cheap filter from L2 norms alone: ``False`` only where acceptance is impossible."""
        ...


@dataclass(frozen=True, slots=True)
class RelativeL2:
    """Accept ``c`` for ``q`` when ``||q - c|| / ||q|| <= max_error``.

    A zero query only accepts a zero candidate (its error is 0, anything else is ``inf``).
    Blocks holding NaN or inf get a NaN error and are never accepted.
    """

    max_error: float

    def __post_init__(self) -> None:
        value = as_real(self.max_error, "max_error")
        if value < 0:
            raise InvalidArgumentError(f"max_error must be >= 0, got {value}")
        object.__setattr__(self, "max_error", value)

    @property
    def limit(self) -> float:
        return self.max_error

    def errors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # Non-finite blocks give NaN errors (never accepted); silence numpy's warnings.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            diff = queries - candidates  # float32: nearby values subtract exactly
            squared = row_dots(diff, diff).astype(np.float64)
            # Each query's norm once, however many candidates it is broadcast against.
            norm_sq = np.broadcast_to(row_dots(queries, queries).astype(np.float64), squared.shape).copy()
            # float32 squares underflow below ~1e-19 and overflow above ~1e19: redo those rows
            # in float64 (rows holding NaN stay NaN).
            redo = (squared == 0) | (norm_sq == 0) | np.isinf(squared) | np.isinf(norm_sq)
            if redo.any():
                q64 = np.broadcast_to(queries, diff.shape)[redo].astype(np.float64)
                d64 = q64 - np.broadcast_to(candidates, diff.shape)[redo].astype(np.float64)
                squared[redo] = np.einsum("ij,ij->i", d64, d64)
                norm_sq[redo] = np.einsum("ij,ij->i", q64, q64)
            error = np.sqrt(squared) / np.sqrt(norm_sq)
        error[(norm_sq == 0) & (squared == 0)] = 0.0
        return error

    def may_accept(self, query_norms: np.ndarray, candidate_norms: np.ndarray) -> np.ndarray:
        # Triangle inequality: | ||q|| - ||c|| | <= ||q - c||. The slack absorbs float32
        # rounding of the norms so the filter never rejects a true match.
        slack = 1e-5 * (query_norms + candidate_norms) + 1e-300
        return np.abs(query_norms - candidate_norms) <= self.max_error * query_norms + slack


@dataclass(frozen=True, slots=True)
class ElementShare:
    """Accept ``c`` for ``q`` when at least ``min_share`` of elements differ by ``<= delta``.

    The error reported is ``1 - share`` and the limit ``1 - min_share``.
    """

    delta: float
    min_share: float

    def __post_init__(self) -> None:
        delta = as_real(self.delta, "delta")
        share = as_real(self.min_share, "min_share")
        if delta < 0:
            raise InvalidArgumentError(f"delta must be >= 0, got {delta}")
        if not 0 < share <= 1:
            raise InvalidArgumentError(f"min_share must be in (0, 1], got {share}")
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "min_share", share)

    @property
    def limit(self) -> float:
        return 1.0 - self.min_share

    def errors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # NaN compares False, so a NaN element counts as outside delta.
        with np.errstate(invalid="ignore"):
            within = np.abs(queries - candidates) <= self.delta
        return 1.0 - within.mean(axis=-1, dtype=np.float64)

    def may_accept(self, query_norms: np.ndarray, candidate_norms: np.ndarray) -> np.ndarray:
        return np.ones(np.broadcast(query_norms, candidate_norms).shape, dtype=bool)


def as_tolerance(tolerance: Tolerance | float) -> Tolerance:
    """Return ``tolerance``, reading a bare number ``t`` as ``RelativeL2(t)``."""
    if isinstance(tolerance, numbers.Real) and not isinstance(tolerance, (bool, np.bool_)):
        return RelativeL2(tolerance)
    if not hasattr(tolerance, "errors") or not hasattr(tolerance, "limit"):
        raise InvalidTypeError(
            "tolerance must be a float, RelativeL2 or ElementShare, "
            f"got {type(tolerance).__name__}"
        )
    return tolerance
