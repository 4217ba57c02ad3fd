"""Exceptions raised by :mod:`packing`.

Every error a caller can trigger with bad input is a :class:`PackingError` and also
inherits the builtin that fits (``ValueError`` or ``TypeError``), so callers may catch
either.
"""

from __future__ import annotations


class PackingError(Exception):
    """Base class of every error raised by :mod:`packing`."""


class InvalidProblemError(PackingError, ValueError):
    """The packing problem is malformed (negative sizes, empty capacity, ...)."""


class BlockTooLargeError(InvalidProblemError):
    """A block (after alignment) does not fit in one page."""


class UnknownBlockError(InvalidProblemError):
    """A tensor, or a look-up, names a block id the problem does not have."""


class UnknownTensorError(InvalidProblemError):
    """A weight or a model names a tensor the problem does not have."""


class ProblemTypeError(PackingError, TypeError):
    """An argument has the wrong type (floats where byte counts are expected, ...)."""


class UnknownAlgorithmError(PackingError, ValueError):
    """``pack`` was asked for an algorithm it does not know."""
