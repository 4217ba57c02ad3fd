"""tensorstore: a deduplicating storage engine for neural network weights.

>>> import tensorstore as ts
>>> with ts.open("models.ts", "a") as store:
...     store.add_model("base", {"w": weights})
...     tensors = store.load_model("base")
"""

from .errors import (
    ConflictError,
    CorruptionError,
    EvaluatorError,
    FileFormatError,
    InvalidArgumentError,
    InvalidTensorError,
    ModelExistsError,
    ModelNotFoundError,
    NotAStoreError,
    ReadOnlyError,
    SharedCacheError,
    StoreClosedError,
    StoreError,
    StoreExistsError,
    StoreFullError,
    StoreNotFoundError,
    TensorNotFoundError,
    ViewsAliveError,
)
from .reports import CompactReport, DedupReport, PackReport, StoreStats, VerifyReport
from .reader import Reader
from .store import Store, open

__all__ = [
    "open", "Store", "StoreStats", "VerifyReport",
    "StoreError", "StoreNotFoundError", "StoreExistsError", "NotAStoreError", "ReadOnlyError",
    "ModelNotFoundError", "ModelExistsError", "TensorNotFoundError", "InvalidTensorError",
    "InvalidArgumentError", "FileFormatError", "CorruptionError", "StoreFullError", "StoreClosedError",
    "EvaluatorError", "ConflictError", "ViewsAliveError", "SharedCacheError", "Reader", "DedupReport", "PackReport", "CompactReport",
]
__version__ = "0.1.0"
