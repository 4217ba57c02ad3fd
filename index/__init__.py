"""index: duplicate detection for weight blocks (SPEC §2, §5).

Exact duplicates: :func:`block_digest` (mmh3, in :mod:`index.exact`).
Near duplicates: :class:`LSHIndex` (one per block class; :class:`LSHIndexes` keeps them),
verified with a :class:`RelativeL2` or :class:`ElementShare` tolerance.
Order: :func:`magnitude_scores` and :func:`magnitude_order` (low magnitude first).
Accuracy gate: :func:`plan_replacements` over :class:`Replacement` candidates, ranked by
:func:`savings_order` (bytes saved per unit of risk), one round per level of
:func:`tolerance_levels`.

This package depends on numpy, mmh3 and faiss only; it never imports the store.
"""

from tensorstore_index.errors import (
    EvaluationError,
    IndexLibraryError,
    InvalidArgumentError,
    InvalidTypeError,
)
from tensorstore_index.exact import DIGEST_BYTES, block_digest
from tensorstore_index.magnitude import DEFAULT_STATISTIC, STATISTICS, magnitude_order, magnitude_scores
from tensorstore_index.planner import (
    TOLERANCE_LEVELS,
    Evaluation,
    Plan,
    Replacement,
    max_evaluations,
    plan_replacements,
    savings_order,
    tolerance_levels,
)
from tensorstore_index.tolerance import ElementShare, RelativeL2, Tolerance

# FAISS takes about 30 ms to import; every ingest needs block_digest and nothing of it, so
# the near-duplicate search is imported when first used (PEP 562).
_LAZY = {
    "Candidates": "tensorstore_index.lsh",
    "LSHIndex": "tensorstore_index.lsh",
    "LSHIndexes": "tensorstore_index.lsh",
    "Matches": "tensorstore_index.lsh",
    "exhaustive_match": "tensorstore_index.exhaustive",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'index' has no attribute {name!r}")
    import importlib

    value = globals()[name] = getattr(importlib.import_module(module), name)
    return value


__all__ = [
    "DEFAULT_STATISTIC",
    "DIGEST_BYTES",
    "STATISTICS",
    "TOLERANCE_LEVELS",
    "Candidates",
    "ElementShare",
    "Evaluation",
    "EvaluationError",
    "IndexLibraryError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LSHIndex",
    "LSHIndexes",
    "Matches",
    "Plan",
    "RelativeL2",
    "Replacement",
    "Tolerance",
    "block_digest",
    "exhaustive_match",
    "magnitude_order",
    "magnitude_scores",
    "max_evaluations",
    "plan_replacements",
    "savings_order",
    "tolerance_levels",
]
