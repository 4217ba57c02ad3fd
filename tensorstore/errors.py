"""The store's errors: one base class, and each subclass also the builtin it means.

Catching ``KeyError`` around ``store.load_model`` works as it would around a dict;
catching ``StoreError`` catches everything this library raises on purpose.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The path holds no store and the mode does not create one."""


class StoreExistsError(StoreError, FileExistsError):
    """Mode ``"w-"`` was asked to create a store where one (or other data) already is."""


class NotAStoreError(StoreError, ValueError):
    """The path exists but is not a store (or is a store of an unknown format)."""


class ReadOnlyError(StoreError, PermissionError):
    """A write was attempted on a store opened read-only (``mode="r"``)."""


class _KeyMessage(KeyError):
    """A KeyError that prints its message, not the message's repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(StoreError, _KeyMessage):
    """No model of that name is in the store."""


class ModelExistsError(StoreError, _KeyMessage):
    """A model of that name already exists (pass ``replace=True`` to overwrite it)."""


class TensorNotFoundError(StoreError, _KeyMessage):
    """The model has no tensor of that name."""


class InvalidTensorError(StoreError, ValueError):
    """A tensor (or its name) cannot be stored: wrong type, dtype, or name."""


class InvalidArgumentError(StoreError, ValueError):
    """An argument other than a tensor is out of range or of the wrong form."""


class FileFormatError(StoreError, ValueError):
    """An imported file (safetensors, npz) is malformed or unsafe to read."""


class CorruptionError(StoreError, IOError):
    """Stored data failed a checksum or a consistency check."""


class StoreFullError(StoreError, OSError):
    """The disk (or the filesystem's quota) is full; the store was left as it was."""


class StoreClosedError(StoreError, ValueError):
    """The store handle was used after ``close()``."""


class EvaluatorError(StoreError, RuntimeError):
    """The accuracy evaluator raised, or returned NaN, infinity or something not a number."""


class ConflictError(StoreError, RuntimeError):
    """The store changed under a long operation (another writer); run it again."""


class ViewsAliveError(StoreError, RuntimeError):
    """The store cannot close while zero-copy views into its memory map are referenced."""


class SharedCacheError(StoreError, OSError):
    """The shared tensor cache cannot be used as asked (permissions, platform, path)."""


class HashCollisionError(StoreError, ValueError):
    """A new block has the content digest of a stored block but different bytes: two
    blocks the exact-dedup index cannot tell apart. Ordinary data does not do this
    (2^-128); a crafted input can. The write is refused and the store left as it was."""
