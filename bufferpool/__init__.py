"""bufferpool: the page cache (SPEC §2, §6).

A pool of frames in one pre-allocated arena with pinning and pluggable eviction policies
(``"queueing"`` — the default, ``"lru"``, ``"mru"``, ``"lfu"``, ``"arc"``, ``"s3fifo"``),
a trace simulator, Belady's offline optimum and a workload generator. Depends on numpy and
the standard library only.
"""

from . import workload
from .errors import (
    BufferPoolError,
    InvalidArgumentError,
    InvalidTypeError,
    PageNotTrackedError,
    PagePinnedError,
    PageTooLargeError,
    PoolExhaustedError,
    UnknownPolicyError,
)
from .policies import DEFAULT_POLICY, POLICIES, make_replacer
from .pool import BufferPool, PinnedPage, PoolStats
from .replacer import Replacer
from .simulate import SimResult, belady, expand_trace, sharing_of, simulate

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "BufferPool",
    "BufferPoolError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "PageNotTrackedError",
    "PagePinnedError",
    "PageTooLargeError",
    "PinnedPage",
    "PoolExhaustedError",
    "PoolStats",
    "Replacer",
    "SimResult",
    "UnknownPolicyError",
    "belady",
    "expand_trace",
    "make_replacer",
    "sharing_of",
    "simulate",
    "workload",
]
