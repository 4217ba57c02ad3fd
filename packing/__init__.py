"""packing: place deduplicated blocks into fixed-size pages (SPEC §2, §6).

Build a :class:`PackingProblem` from tensors (lists of block ids) and block sizes, call
:func:`pack`, and read each block's (page, offset) from the :class:`PackResult`::

    problem = PackingProblem.from_tensors({"w": [1, 2], "b": [3]}, {1: 65536, 2: 65536, 3: 1536},
                                          page_bytes=1 << 20)
    result = pack(problem, "two-stage")
    result.page_of(3), result.offset_of(3), result.pages, result.lower_bound_pages

:func:`score` measures a placement made elsewhere (a store's current layout) the same way,
so a new layout can be compared with the one it would replace. :func:`model_reads_bound`
says how few pages per model load any layout within a page budget can read.

Depends on numpy and OR-Tools only.
"""

from tensorstore_packing.algorithms import ALGORITHMS, pack
from tensorstore_packing.bounds import pages_lower_bound
from tensorstore_packing.errors import (
    BlockTooLargeError,
    InvalidProblemError,
    PackingError,
    ProblemTypeError,
    UnknownAlgorithmError,
    UnknownBlockError,
    UnknownTensorError,
)
from tensorstore_packing.instances import EncodedSizes, GeneratedInstance, generate
from tensorstore_packing.objective import DEFAULT_READ_WEIGHT
from tensorstore_packing.problem import DEFAULT_ALIGNMENT, PackingProblem
from tensorstore_packing.read_bound import ReadsBound, model_reads_bound, page_budget, realize
from tensorstore_packing.result import ModelReads, PackResult, SolverReport, score
from tensorstore_packing.set_plan import plan_family
from tensorstore_packing.two_stage import TwoStageOptions

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALIGNMENT",
    "DEFAULT_READ_WEIGHT",
    "BlockTooLargeError",
    "EncodedSizes",
    "GeneratedInstance",
    "InvalidProblemError",
    "ModelReads",
    "PackResult",
    "PackingError",
    "PackingProblem",
    "ProblemTypeError",
    "ReadsBound",
    "SolverReport",
    "TwoStageOptions",
    "UnknownAlgorithmError",
    "UnknownBlockError",
    "UnknownTensorError",
    "generate",
    "model_reads_bound",
    "pack",
    "page_budget",
    "pages_lower_bound",
    "plan_family",
    "realize",
    "score",
]
