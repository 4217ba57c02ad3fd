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
    HashCollisionError,
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
from .remote import pull
from .remote_objects import RemoteAccessError, RemoteError, RemoteFormatError, RemoteNotFoundError

__all__ = [
    "open", "Store", "pull", "RemoteError", "RemoteNotFoundError", "RemoteAccessError", "RemoteFormatError", "StoreStats", "VerifyReport",
    "StoreError", "StoreNotFoundError", "StoreExistsError", "NotAStoreError", "ReadOnlyError",
    "ModelNotFoundError", "ModelExistsError", "TensorNotFoundError", "InvalidTensorError",
    "InvalidArgumentError", "FileFormatError", "CorruptionError", "HashCollisionError", "StoreFullError", "StoreClosedError",
    "EvaluatorError", "ConflictError", "ViewsAliveError", "SharedCacheError", "Reader", "DedupReport", "PackReport", "CompactReport",
]
__version__ = "0.1.0"
# Tells this package from Google's TensorStore, which uses the same import name (tensorstore_dedup).
__distribution__ = "tensorstore-dedup"
