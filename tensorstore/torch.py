"""PyTorch tensors in and out of a store, bit-exact, in every dtype both sides know.

In: ``store.add_model(name, model.state_dict())`` takes torch tensors as they are: any
dtype the store knows (bool, int8-64, uint8-64, float16, bfloat16, float32, float64,
float8_e4m3fn, float8_e5m2), with ``requires_grad``, non-contiguous, on any device (copied
to host memory first). The store converts them with :func:`to_numpy`, which reinterprets
the bits (``Tensor.view``), so bfloat16 and fp8 values, NaN payloads included, are stored
exactly. Importing :mod:`tensorstore` never imports torch: the store recognises a torch
tensor only when torch is already imported, which it must be for one to exist.

Out, in the manner of ``safetensors.torch``::

    from tensorstore.torch import load_model, load_tensor
    state = load_model(store, "bert-ft")            # {name: torch.Tensor} on the CPU
    model.load_state_dict(state)
    w = load_tensor(store, "bert-ft", "classifier.weight", device="cuda")

What is shared, and what is copied:

- From a :class:`~tensorstore.Store`, each tensor is assembled into a new private numpy
  array and the torch tensor *shares that array's memory* (``torch.from_numpy``): one copy
  out of the store's pages, none after it. The tensor is writable and owns nothing else.
- From a :class:`~tensorstore.Reader` (``store.reader()``), tensors that are read-only
  views of the store's memory map or of the shared cache are copied by default, because
  torch has no read-only tensors: a write into such memory would kill the process
  (SIGSEGV). ``share_readonly=True`` wraps them without a copy instead; the caller then
  promises never to write to them (e.g. inference under ``torch.inference_mode()``). They
  stay valid as long as they are referenced, like the numpy views they wrap.
- ``device`` other than ``"cpu"`` copies each tensor to that device (the host array is
  then dropped).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np
import torch

from .errors import InvalidTensorError

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Reader
    from .store import Store

__all__ = ["load_model", "load_tensor", "to_numpy", "to_torch"]

# torch dtypes numpy has no type of its own for: reinterpret the bits through an integer
# of the same width, then view them as the ml_dtypes type the store keeps.
_VIA_INT: dict[torch.dtype, tuple[torch.dtype, np.dtype]] = {
    torch.bfloat16: (torch.int16, np.dtype(ml_dtypes.bfloat16)),
    torch.float8_e4m3fn: (torch.uint8, np.dtype(ml_dtypes.float8_e4m3fn)),
    torch.float8_e5m2: (torch.uint8, np.dtype(ml_dtypes.float8_e5m2)),
}
_FROM_NUMPY: dict[np.dtype, tuple[np.dtype, torch.dtype]] = {
    np_dt: (np.dtype(np.int16 if via == torch.int16 else np.uint8), t_dt) for t_dt, (via, np_dt) in _VIA_INT.items()
}
# Plain dtypes numpy and torch share (torch's uint16/32/64 need torch >= 2.3).
_NATIVE = {
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.float32, torch.float64,
} | {getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n)}


def to_numpy(tensor: torch.Tensor, what: str = "tensor") -> np.ndarray:
    """A numpy array with the same bits, shape and dtype as ``tensor``.

    Shares memory with a CPU tensor where it can (the store copies what it keeps); a
    tensor on another device is copied to the host. Autograd state is dropped.

    Raises
    ------
    InvalidTensorError
        A dtype the store does not keep (complex, fp8 variants other than e4m3fn/e5m2,
        quantized), a sparse or nested tensor, or a tensor on the ``meta`` device.
    """
    if not isinstance(tensor, torch.Tensor):
        raise InvalidTensorError(f"{what} is a {type(tensor).__name__}, not a torch tensor")
    if tensor.layout != torch.strided or tensor.is_nested:
        raise InvalidTensorError(f"{what} has layout {tensor.layout}; only dense (strided) tensors can be stored; call .to_dense() first")
    if tensor.is_quantized:
        raise InvalidTensorError(f"{what} is quantized ({tensor.dtype}); store its int_repr() and scales as separate tensors")
    if tensor.device.type == "meta":
        raise InvalidTensorError(f"{what} is on the 'meta' device and holds no data; materialise it first")
    dtype = tensor.dtype
    if dtype not in _NATIVE and dtype not in _VIA_INT:
        raise InvalidTensorError(
            f"{what} has dtype {dtype}, which the store does not keep; supported: "
            + ", ".join(str(d) for d in sorted(_NATIVE | set(_VIA_INT), key=str))
        )
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    if dtype in _VIA_INT:
        via, np_dtype = _VIA_INT[dtype]
        # A same-width dtype view keeps the strides, so non-contiguous tensors need no copy here.
        return t.view(via).numpy().view(np_dtype)
    return t.numpy()


def to_torch(array: np.ndarray, *, share_readonly: bool = False) -> torch.Tensor:
    """A CPU torch tensor with the same bits, shape and dtype as ``array``.

    Shares ``array``'s memory when it is writable; a read-only array is copied unless
    ``share_readonly`` (see the module docstring for why that is the caller's promise).
    """
    array = np.asarray(array)
    if not array.flags.writeable and not share_readonly:
        array = array.copy()
    via = _FROM_NUMPY.get(array.dtype)
    with warnings.catch_warnings():
        # torch warns that it cannot mark a read-only array read-only; share_readonly
        # means the caller has taken that on.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        if via is None:
            return torch.from_numpy(array)
        return torch.from_numpy(array.view(via[0])).view(via[1])


def load_model(source: "Store | Reader", name: str, device: str | torch.device = "cpu", *, share_readonly: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of model ``name`` as torch tensors on ``device``, bit-exact.

    Parameters
    ----------
    source : Store or Reader
        A store (each tensor a new private array, shared with its torch tensor) or a read
        snapshot from ``store.reader()`` (read-only views copied unless ``share_readonly``).
    name : str
        The model.
    device : str or torch.device
        Where the tensors go (``"cpu"``: no copy beyond the one out of the store).
    share_readonly : bool
        Wrap read-only views without copying them; never write to such tensors.
    """
    arrays = source.load_model(name)
    return {k: _place(to_torch(a, share_readonly=share_readonly), device) for k, a in arrays.items()}


def load_tensor(source: "Store | Reader", name: str, tensor_name: str, device: str | torch.device = "cpu", *, share_readonly: bool = False) -> torch.Tensor:
    """One tensor of model ``name`` as a torch tensor on ``device``; see :func:`load_model`."""
    return _place(to_torch(source.load_tensor(name, tensor_name), share_readonly=share_readonly), device)


def _place(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    return t if torch.device(device).type == "cpu" else t.to(device)
