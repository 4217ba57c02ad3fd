"""Model files in and out: safetensors (read and write) and numpy ``.npz`` (read).

Importers read a whole file and validate it before the store sees a byte, so a bad file
never leaves half a model behind. ``.npz`` files are read with ``allow_pickle=False``:
an archive holding pickled objects is refused, never unpickled.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InvalidArgumentError

SUFFIXES = (".safetensors", ".npz")


def read_model_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return ``(tensors, metadata)`` read from a ``.safetensors`` or ``.npz`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise FileFormatError(f"{path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        return _read_npz(path)
    raise FileFormatError(f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header_meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # SafetensorError and the errors of a lying header
        raise FileFormatError(f"{path} is not a valid safetensors file: {exc}") from None
    meta = {"source": path.name, "format": "safetensors"}
    if header_meta:
        meta["safetensors_metadata"] = dict(header_meta)
    return tensors, meta


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _check_npy_member(path, zf, info)
        with np.load(path, allow_pickle=False) as archive:
            tensors = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise FileFormatError(f"{path} holds pickled Python objects; they are refused, never unpickled") from None
        raise FileFormatError(f"{path} is not a valid .npz file: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError) as exc:
        raise FileFormatError(f"{path} is not a valid .npz file: {exc}") from None
    for name, value in tensors.items():
        if not isinstance(value, np.ndarray):  # np.load hands back raw bytes for non-.npy members
            raise FileFormatError(f"{path}: member {name!r} is not a .npy array")
    return tensors, {"source": path.name, "format": "npz"}


def _check_npy_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member whose header declares more data than the member holds, before
    numpy allocates what the header asks for (a 200-byte file may declare terabytes)."""
    if not info.filename.endswith(".npy"):
        raise FileFormatError(f"{path}: member {info.filename!r} is not a .npy array")
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f, max_header_size=10000)
        except Exception as exc:  # numpy raises ValueError or SyntaxError on a bad header
            raise FileFormatError(f"{path}: member {info.filename!r} has a damaged .npy header ({exc})") from None
        header = f.tell()
    if dtype.hasobject:
        raise FileFormatError(f"{path} holds pickled Python objects; they are refused, never unpickled")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > info.file_size - header:
        raise FileFormatError(
            f"{path}: member {info.filename!r} declares {declared} bytes of data but holds {info.file_size - header}"
        )


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write ``tensors`` to a safetensors file, atomically (a temporary file renamed)."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise InvalidArgumentError(f"{path}: the output file must end in .safetensors")
    header = {}
    for k, v in (metadata or {}).items():
        if k == "safetensors_metadata" and isinstance(v, dict):
            header.update({str(a): str(b) for a, b in v.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header or None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

