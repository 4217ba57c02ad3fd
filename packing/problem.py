"""The packing problem: blocks with sizes, tensors as sets of blocks, a page capacity.

A *block* is a piece of weight data stored once; a *tensor* is the set of blocks it is
read from. A block listed by several tensors is shared. Everything is held in numpy
arrays so that a million blocks cost a few arrays, not a million Python objects:

* blocks are numbered densely ``0 .. n_blocks-1`` in the order of their (sorted)
  external ids; ``block_ids[i]`` is block ``i``'s external id;
* tensors are a CSR structure: tensor ``t`` reads the dense blocks
  ``tensor_blocks[tensor_ptr[t]:tensor_ptr[t + 1]]``; each such (tensor, block) pair is
  a *reference*;
* models (optional) are a CSR structure over tensors, the same way.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tensorstore_packing.errors import (
    BlockTooLargeError,
    InvalidProblemError,
    ProblemTypeError,
    UnknownBlockError,
    UnknownTensorError,
)

#: Blocks start at offsets that are multiples of this many bytes, so that a block read
#: straight from a page can be viewed as any numpy dtype without a copy.
DEFAULT_ALIGNMENT = 16

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class PackingProblem:
    """Blocks of given sizes, the tensors that read them, and a page capacity.

    Build one with :meth:`from_tensors` (plain Python data) or :meth:`from_arrays`
    (numpy arrays, fast for millions of blocks); the constructor itself checks every
    field and expects the normalised form described in the module docstring.

    Attributes
    ----------
    block_ids : numpy.ndarray
        ``(n_blocks,)`` int64 external block ids, strictly increasing.
    block_bytes : numpy.ndarray
        ``(n_blocks,)`` int64 size of each block in bytes (> 0).
    tensor_names : tuple of str
        One name per tensor, distinct.
    tensor_ptr : numpy.ndarray
        ``(n_tensors + 1,)`` int64 CSR offsets into `tensor_blocks`.
    tensor_blocks : numpy.ndarray
        ``(n_refs,)`` int64 dense block indices; distinct within a tensor.
    tensor_weights : numpy.ndarray
        ``(n_tensors,)`` float64 request rate of each tensor (>= 0).
    page_bytes : int
        Page capacity in bytes.
    alignment : int
        Blocks start at multiples of this (a power of two); each block occupies
        `slot_bytes` = its size rounded up to it.
    model_names : tuple of str
        Names of the models (may be empty).
    model_ptr, model_tensors : numpy.ndarray
        CSR from model to dense tensor indices.
    slot_bytes : numpy.ndarray
        ``(n_blocks,)`` int64 bytes a block occupies in a page (size rounded up to
        `alignment`). Derived, not passed.
    """

    block_ids: np.ndarray
    block_bytes: np.ndarray
    tensor_names: tuple[str, ...]
    tensor_ptr: np.ndarray
    tensor_blocks: np.ndarray
    tensor_weights: np.ndarray
    page_bytes: int
    alignment: int = DEFAULT_ALIGNMENT
    model_names: tuple[str, ...] = ()
    model_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    model_tensors: np.ndarray = field(default_factory=lambda: _EMPTY)
    slot_bytes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_capacity(self.page_bytes, self.alignment)
        ids = _int_array(self.block_ids, "block_ids")
        sizes = _int_array(self.block_bytes, "block_bytes")
        if ids.shape != sizes.shape:
            raise InvalidProblemError(
                f"block_ids has {ids.size} entries but block_bytes has {sizes.size}"
            )
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            raise InvalidProblemError("block_ids must be strictly increasing (sorted, distinct)")
        slots = _slot_sizes(ids, sizes, self.page_bytes, self.alignment)
        ptr = _csr_ptr(self.tensor_ptr, "tensor_ptr")
        blocks = _int_array(self.tensor_blocks, "tensor_blocks")
        names = tuple(self.tensor_names)
        _check_names(names, "tensor")
        if ptr.size != len(names) + 1 or ptr[-1] != blocks.size:
            raise InvalidProblemError(
                "tensor_ptr must have n_tensors + 1 entries ending at len(tensor_blocks)"
            )
        if blocks.size and (blocks.min() < 0 or blocks.max() >= ids.size):
            raise InvalidProblemError("tensor_blocks holds a dense block index out of range")
        if _first_references(ptr, blocks, ids.size).size != blocks.size:
            raise InvalidProblemError(
                "a tensor lists a block twice; from_tensors/from_arrays drop repeats for you"
            )
        weights = np.asarray(self.tensor_weights, dtype=np.float64)
        if weights.shape != (len(names),):
            raise InvalidProblemError("tensor_weights must have one entry per tensor")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidProblemError("tensor weights (request rates) must be finite and >= 0")
        mptr = _csr_ptr(self.model_ptr, "model_ptr")
        mtensors = _int_array(self.model_tensors, "model_tensors")
        mnames = tuple(self.model_names)
        _check_names(mnames, "model")
        if mptr.size != len(mnames) + 1 or mptr[-1] != mtensors.size:
            raise InvalidProblemError(
                "model_ptr must have n_models + 1 entries ending at len(model_tensors)"
            )
        if mtensors.size and (mtensors.min() < 0 or mtensors.max() >= len(names)):
            raise InvalidProblemError("model_tensors holds a tensor index out of range")
        normalised = {
            "block_ids": ids,
            "block_bytes": sizes,
            "tensor_names": names,
            "tensor_ptr": ptr,
            "tensor_blocks": blocks,
            "tensor_weights": weights,
            "model_names": mnames,
            "model_ptr": mptr,
            "model_tensors": mtensors,
            "slot_bytes": slots,
        }
        for name, value in normalised.items():
            if isinstance(value, np.ndarray):
                value = value.copy() if value.flags.writeable else value
                value.flags.writeable = False  # shared by results: keep it immutable
            object.__setattr__(self, name, value)
        object.__setattr__(self, "page_bytes", int(self.page_bytes))
        object.__setattr__(self, "alignment", int(self.alignment))

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, Sequence[int]],
        block_sizes: Mapping[int, int] | Sequence[int] | np.ndarray,
        page_bytes: int,
        weights: Mapping[str, float] | None = None,
        *,
        models: Mapping[str, Sequence[str]] | None = None,
        alignment: int = DEFAULT_ALIGNMENT,
    ) -> PackingProblem:
        """Build a problem from plain Python data.

        Parameters
        ----------
        tensors : Mapping[str, Sequence[int]]
            Tensor name -> the block ids it reads. A block listed by several tensors is
            shared. A block listed twice by one tensor is counted once.
        block_sizes : Mapping[int, int] or array-like of int
            Block id -> size in bytes; an array means block id ``i`` has size
            ``block_sizes[i]``. Blocks no tensor lists are still placed.
        page_bytes : int
            Page capacity in bytes.
        weights : Mapping[str, float], optional
            Tensor name -> request rate; tensors not named get 1.0.
        models : Mapping[str, Sequence[str]], optional
            Model name -> names of its tensors. Used for per-model metrics and as a
            hint to keep a model's data together.
        alignment : int, default 16
            Byte alignment of block offsets within a page.

        Returns
        -------
        PackingProblem

        Raises
        ------
        UnknownBlockError
            A tensor lists a block id absent from `block_sizes`.
        BlockTooLargeError
            A block does not fit in a page.
        InvalidProblemError, ProblemTypeError
            Any other malformed input (negative sizes, empty capacity, ...).
        """
        if not isinstance(tensors, Mapping):
            raise ProblemTypeError(
                f"tensors must be a mapping of tensor name to block ids, got {type(tensors).__name__}"
            )
        ids, sizes = _block_table(block_sizes)
        names = tuple(tensors)
        _check_names(names, "tensor")
        lists = [_int_array(tensors[n], f"block ids of tensor {n!r}") for n in names]
        lengths = np.fromiter((a.size for a in lists), dtype=np.int64, count=len(lists))
        ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        flat = np.concatenate(lists) if lists else _EMPTY
        dense = _lookup_blocks(ids, flat, names, ptr)
        return cls.from_arrays(
            sizes,
            ptr,
            dense,
            page_bytes,
            block_ids=ids,
            tensor_names=names,
            weights=weights,
            models=models,
            alignment=alignment,
        )

    @classmethod
    def from_arrays(
        cls,
        block_bytes: np.ndarray | Sequence[int],
        tensor_ptr: np.ndarray | Sequence[int],
        tensor_blocks: np.ndarray | Sequence[int],
        page_bytes: int,
        *,
        block_ids: np.ndarray | Sequence[int] | None = None,
        tensor_names: Sequence[str] | None = None,
        weights: Mapping[str, float] | np.ndarray | Sequence[float] | None = None,
        models: Mapping[str, Sequence[str | int]] | None = None,
        alignment: int = DEFAULT_ALIGNMENT,
    ) -> PackingProblem:
        """Build a problem from CSR arrays (the fast path for millions of blocks).

        Parameters
        ----------
        block_bytes : array-like of int
            Size of each dense block ``0 .. n-1`` in bytes.
        tensor_ptr, tensor_blocks : array-like of int
            CSR: tensor ``t`` reads dense blocks ``tensor_blocks[ptr[t]:ptr[t+1]]``.
            Repeats within a tensor are dropped (first occurrence kept).
        page_bytes : int
            Page capacity in bytes.
        block_ids : array-like of int, optional
            External id of each dense block (strictly increasing); default ``0 .. n-1``.
        tensor_names : Sequence[str], optional
            Default ``"t0", "t1", ...``.
        weights : Mapping[str, float] or array-like, optional
            Request rate per tensor (by name, missing ones 1.0, or one per tensor).
        models : Mapping[str, Sequence[str | int]], optional
            Model name -> its tensors, by name or dense index.
        alignment : int, default 16
            Byte alignment of block offsets within a page.

        Returns
        -------
        PackingProblem
        """
        sizes = _int_array(block_bytes, "block_bytes")
        ids = np.arange(sizes.size, dtype=np.int64) if block_ids is None else block_ids
        ptr = _csr_ptr(tensor_ptr, "tensor_ptr")
        blocks = _int_array(tensor_blocks, "tensor_blocks")
        if ptr[-1] != blocks.size:
            raise InvalidProblemError("tensor_ptr must end at len(tensor_blocks)")
        n_tensors = ptr.size - 1
        names = (
            tuple(f"t{i}" for i in range(n_tensors)) if tensor_names is None else tuple(tensor_names)
        )
        if len(names) != n_tensors:
            raise InvalidProblemError(
                f"{len(names)} tensor names for {n_tensors} tensors in tensor_ptr"
            )
        if blocks.size and (blocks.min() < 0 or blocks.max() >= sizes.size):
            raise UnknownBlockError("tensor_blocks holds a dense block index out of range")
        keep = _first_references(ptr, blocks, sizes.size)
        if keep.size != blocks.size:  # drop repeated blocks within a tensor
            tensor_of_ref = np.repeat(np.arange(n_tensors), np.diff(ptr))
            counts = np.bincount(tensor_of_ref[keep], minlength=n_tensors)
            ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            blocks = blocks[keep]
        lookup = {name: i for i, name in enumerate(names)}
        tensor_weights = _weights(weights, names, lookup)
        model_names, model_ptr, model_tensors = models_csr(models, names, lookup)
        return cls(
            block_ids=ids,
            block_bytes=sizes,
            tensor_names=names,
            tensor_ptr=ptr,
            tensor_blocks=blocks,
            tensor_weights=tensor_weights,
            page_bytes=page_bytes,
            alignment=alignment,
            model_names=model_names,
            model_ptr=model_ptr,
            model_tensors=model_tensors,
        )

    # ------------------------------------------------------------------ views
    @property
    def n_blocks(self) -> int:
        """Number of distinct blocks."""
        return int(self.block_ids.size)

    @property
    def n_tensors(self) -> int:
        """Number of tensors."""
        return len(self.tensor_names)

    @property
    def n_models(self) -> int:
        """Number of models (0 when none were given)."""
        return len(self.model_names)

    @property
    def n_refs(self) -> int:
        """Number of (tensor, block) references."""
        return int(self.tensor_blocks.size)

    def tensor_of_ref(self) -> np.ndarray:
        """Dense tensor index of every reference, aligned with `tensor_blocks`."""
        return np.repeat(np.arange(self.n_tensors, dtype=np.int64), np.diff(self.tensor_ptr))

    def tensor_blocks_of(self, t: int) -> np.ndarray:
        """Dense block indices read by tensor ``t`` (dense index)."""
        return self.tensor_blocks[self.tensor_ptr[t] : self.tensor_ptr[t + 1]]

    def block_index(self, block_ids: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense indices of external block ids.

        Raises
        ------
        UnknownBlockError
            If an id is not a block of this problem.
        """
        wanted = np.atleast_1d(_int_array(block_ids, "block ids"))
        pos = np.searchsorted(self.block_ids, wanted)
        found = pos < self.n_blocks
        found[found] = self.block_ids[pos[found]] == wanted[found]
        if not found.all():
            raise UnknownBlockError(f"unknown block id {int(wanted[np.argmin(found)])}")
        return pos.astype(np.int64)

    def tensor_index(self, name: str) -> int:
        """Dense index of the tensor called `name`.

        Raises
        ------
        UnknownTensorError
            If there is no such tensor.
        """
        try:
            return self.tensor_names.index(name)
        except ValueError:
            raise UnknownTensorError(f"unknown tensor {name!r}") from None

    def model_tensors_of(self, m: int) -> np.ndarray:
        """Dense tensor indices of model ``m`` (dense index)."""
        return self.model_tensors[self.model_ptr[m] : self.model_ptr[m + 1]]

    @property
    def total_slot_bytes(self) -> int:
        """Bytes all blocks occupy in pages (sizes rounded up to the alignment)."""
        return int(self.slot_bytes.sum())


# ---------------------------------------------------------------------- checks
def _check_capacity(page_bytes: object, alignment: object) -> None:
    if isinstance(page_bytes, bool) or not isinstance(page_bytes, numbers.Integral):
        raise ProblemTypeError(f"page_bytes must be an int, got {type(page_bytes).__name__}")
    if page_bytes <= 0:
        raise InvalidProblemError(f"page_bytes must be positive (an empty page holds nothing), got {page_bytes}")
    if isinstance(alignment, bool) or not isinstance(alignment, numbers.Integral):
        raise ProblemTypeError(f"alignment must be an int, got {type(alignment).__name__}")
    if alignment <= 0 or alignment & (alignment - 1):
        raise InvalidProblemError(f"alignment must be a positive power of two, got {alignment}")


def _int_array(values: object, what: str) -> np.ndarray:
    """`values` as a 1-d int64 array; a ``TypeError`` for floats, bools, strings."""
    if isinstance(values, (str, bytes)):
        raise ProblemTypeError(f"{what} must be integers, got {type(values).__name__}")
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ProblemTypeError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise InvalidProblemError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False).reshape(-1)


def _csr_ptr(values: object, what: str) -> np.ndarray:
    ptr = _int_array(values, what)
    if ptr.size == 0 or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
        raise InvalidProblemError(f"{what} must start at 0 and never decrease")
    return ptr


def _check_names(names: tuple, kind: str) -> None:
    for name in names:
        if not isinstance(name, str):
            raise ProblemTypeError(f"{kind} names must be str, got {name!r}")
    if len(set(names)) != len(names):
        raise InvalidProblemError(f"{kind} names must be distinct")


def _slot_sizes(ids: np.ndarray, sizes: np.ndarray, page_bytes: int, alignment: int) -> np.ndarray:
    if np.any(sizes <= 0):
        i = int(np.argmax(sizes <= 0))
        raise InvalidProblemError(f"block {int(ids[i])} has size {int(sizes[i])}; sizes must be positive")
    slots = -(-sizes // alignment) * alignment
    if np.any(slots > page_bytes):
        i = int(np.argmax(slots > page_bytes))
        raise BlockTooLargeError(
            f"block {int(ids[i])} of {int(sizes[i])} bytes ({int(slots[i])} aligned to "
            f"{alignment}) is larger than a page of {page_bytes} bytes"
        )
    return slots


def _first_references(ptr: np.ndarray, blocks: np.ndarray, n_blocks: int) -> np.ndarray:
    """Positions of the references that are a tensor's first listing of a block."""
    tensor_of_ref = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
    keys = tensor_of_ref * max(n_blocks, 1) + blocks
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def _block_table(block_sizes: object) -> tuple[np.ndarray, np.ndarray]:
    """(sorted ids, sizes) from a mapping or an array indexed by id."""
    if isinstance(block_sizes, Mapping):
        ids = _int_array(list(block_sizes.keys()), "block ids (keys of block_sizes)")
        sizes = _int_array(list(block_sizes.values()), "block sizes")
        order = np.argsort(ids, kind="stable")
        return ids[order], sizes[order]
    sizes = _int_array(block_sizes, "block_sizes")
    return np.arange(sizes.size, dtype=np.int64), sizes


def _lookup_blocks(
    ids: np.ndarray, flat: np.ndarray, names: tuple[str, ...], ptr: np.ndarray
) -> np.ndarray:
    pos = np.searchsorted(ids, flat)
    found = pos < ids.size
    found[found] = ids[pos[found]] == flat[found]
    if not found.all():
        r = int(np.argmin(found))
        tensor = names[int(np.searchsorted(ptr, r, side="right")) - 1]
        raise UnknownBlockError(
            f"tensor {tensor!r} lists block id {int(flat[r])}, which block_sizes does not have"
        )
    return pos.astype(np.int64)


def _weights(
    weights: object, names: tuple[str, ...], lookup: dict[str, int]
) -> np.ndarray:
    out = np.ones(len(names), dtype=np.float64)
    if weights is None:
        return out
    if isinstance(weights, Mapping):
        for name, w in weights.items():
            if name not in lookup:
                raise UnknownTensorError(f"weights name tensor {name!r}, which is not a tensor")
            if isinstance(w, bool) or not isinstance(w, numbers.Real):
                raise ProblemTypeError(f"weight of tensor {name!r} must be a number, got {w!r}")
            out[lookup[name]] = float(w)
        return out
    arr = np.asarray(weights)
    if arr.dtype.kind not in "iuf":
        raise ProblemTypeError(f"weights must be numbers, got dtype {arr.dtype}")
    if arr.shape != (len(names),):
        raise InvalidProblemError(f"weights must have one entry per tensor ({len(names)})")
    return arr.astype(np.float64)


def models_csr(
    models: object, names: tuple[str, ...], lookup: dict[str, int]
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    if models is None:
        return (), np.zeros(1, dtype=np.int64), _EMPTY
    if not isinstance(models, Mapping):
        raise ProblemTypeError(f"models must be a mapping of model name to tensor names, got {type(models).__name__}")
    model_names = tuple(models)
    members: list[int] = []
    ptr = [0]
    for model in model_names:
        seen: set[int] = set()
        for tensor in models[model]:
            if isinstance(tensor, str):
                if tensor not in lookup:
                    raise UnknownTensorError(f"model {model!r} names unknown tensor {tensor!r}")
                t = lookup[tensor]
            elif isinstance(tensor, numbers.Integral) and not isinstance(tensor, bool):
                t = int(tensor)
                if not 0 <= t < len(names):
                    raise UnknownTensorError(f"model {model!r} names tensor index {t}, out of range")
            else:
                raise ProblemTypeError(f"model {model!r}: tensors are names or indices, got {tensor!r}")
            if t not in seen:
                seen.add(t)
                members.append(t)
        ptr.append(len(members))
    return model_names, np.asarray(ptr, dtype=np.int64), np.asarray(members, dtype=np.int64)

