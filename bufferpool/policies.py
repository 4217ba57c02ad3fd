"""Policies by name: ``make_replacer("lru", capacity)``."""

from __future__ import annotations

from typing import Any

from .arc import ARCReplacer
from .errors import InvalidTypeError, UnknownPolicyError
from .lfu import LFUReplacer
from .lru import LRUReplacer
from .mru import MRUReplacer
from .queueing import QueueingReplacer
from .replacer import Replacer
from .s3fifo import S3FIFOReplacer

_REPLACERS: dict[str, type[Replacer]] = {
    cls.name: cls
    for cls in (QueueingReplacer, LRUReplacer, MRUReplacer, LFUReplacer, ARCReplacer, S3FIFOReplacer)
}

#: Valid policy names; the first is the default.
POLICIES: tuple[str, ...] = tuple(_REPLACERS)
DEFAULT_POLICY = "queueing"


def make_replacer(policy: str, capacity: int, **options: Any) -> Replacer:
    """Build the replacer called ``policy`` for ``capacity`` frames.

    Parameters
    ----------
    policy
        One of :data:`POLICIES` (case-insensitive).
    capacity
        Number of frames.
    **options
        Passed to the policy's constructor (e.g. ``half_life`` for ``"queueing"``).

    Raises
    ------
    UnknownPolicyError
        If ``policy`` is not a known name (the message lists the valid ones).
    """
    if not isinstance(policy, str):
        raise InvalidTypeError(f"policy must be a name (str), got {type(policy).__name__}")
    cls = _REPLACERS.get(policy.lower())
    if cls is None:
        raise UnknownPolicyError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    try:
        return cls(capacity, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise InvalidTypeError(f"policy {cls.name!r} does not take option(s) {sorted(options)}: {exc}") from None
        raise
