"""Errors raised by the ``bufferpool`` package.

Each inherits the builtin a caller would naturally catch (``ValueError`` for a bad value,
``TypeError`` for a wrong type, ``RuntimeError`` for a pool that cannot do what was asked,
``KeyError`` for an unknown page), and all share :class:`BufferPoolError`.
"""

from __future__ import annotations


class BufferPoolError(Exception):
    """Base of every error raised by the ``bufferpool`` package."""


class InvalidArgumentError(BufferPoolError, ValueError):
    """An argument has the right type but a value the function cannot accept."""


class InvalidTypeError(BufferPoolError, TypeError):
    """An argument (or the ``load`` callback's return value) has the wrong type."""


class UnknownPolicyError(InvalidArgumentError):
    """A replacement policy name that is not one of :data:`bufferpool.POLICIES`."""


class PageTooLargeError(InvalidArgumentError):
    """``load`` returned more bytes than one frame holds."""


class PoolExhaustedError(BufferPoolError, RuntimeError):
    """A new page is needed but every frame holds a pinned (or loading) page."""


class PagePinnedError(BufferPoolError, RuntimeError):
    """The page is pinned or being loaded, so it cannot be dropped now."""


class PageNotTrackedError(BufferPoolError, KeyError):
    """A replacer was asked about a page it does not track."""
