"""Errors raised by the ``index`` package.

Each inherits the builtin a caller would naturally catch (``ValueError`` for a bad value,
``TypeError`` for a wrong type), so ``except ValueError`` keeps working, and all share
``IndexLibraryError`` for callers that want everything this package raises.
"""

from __future__ import annotations


class IndexLibraryError(Exception):
    """Base of every error raised by the ``index`` package."""


class InvalidArgumentError(IndexLibraryError, ValueError):
    """An argument has the right type but a value the function cannot accept."""


class InvalidTypeError(IndexLibraryError, TypeError):
    """An argument (or a callback's return value) has the wrong type."""


class EvaluationError(IndexLibraryError, RuntimeError):
    """The planner's ``evaluate`` callback raised; the original is the ``__cause__``."""

    def __init__(self, message: str, prefix_len: int) -> None:
        super().__init__(message)
        self.prefix_len = prefix_len
