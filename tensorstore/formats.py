"""Model files in and out: safetensors (read and write), numpy ``.npz`` (read), and
Hugging Face model directories (read and write).

Importers read a whole file and validate it before the store sees a byte, so a bad file
never leaves half a model behind. ``.npz`` files are read with ``allow_pickle=False``:
an archive holding pickled objects is refused, never unpickled. PyTorch's pickled
checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are never opened: unpickling runs
whatever code the file names.

A model directory (what ``save_pretrained`` writes) is one model: its weights from a
single ``*.safetensors`` file or from the shards a ``*.safetensors.index.json`` names,
and every other file (``config.json``, tokenizer files, ``generation_config.json`` ...)
kept byte for byte beside them (``add_model(..., files=)``). How the tensors were split
into shards is kept in the model's metadata, so that :func:`write_model_dir` writes the
same file set back, or re-shards it to a size limit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InvalidArgumentError

SUFFIXES = (".safetensors", ".npz")
# Pickled PyTorch checkpoints: refused by name, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DIR_FORMAT = "huggingface-dir"
INDEX_SUFFIX = ".safetensors.index.json"
_SKIP_DIRS = (".git", ".cache")  # version control, huggingface_hub's download bookkeeping


def pickle_refusal(path: Path) -> FileFormatError:
    """The error for a pickled checkpoint, saying how to convert it."""
    return FileFormatError(
        f"{path}: pickled PyTorch checkpoints ({', '.join(PICKLE_SUFFIXES)}) are never loaded (unpickling runs "
        "arbitrary code); convert it to safetensors first, e.g. safetensors.torch.save_file(torch.load(f, "
        "weights_only=True), 'model.safetensors'), or save_pretrained(dir, safe_serialization=True)"
    )


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
    if suffix in PICKLE_SUFFIXES:
        raise pickle_refusal(path)
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



# -- Hugging Face model directories ---------------------------------------------------


def read_model_dir(path: str | Path) -> tuple[dict[str, np.ndarray], dict, dict[str, bytes]]:
    """Return ``(tensors, metadata, files)`` of a model directory.

    The weights are the shards a ``*.safetensors.index.json`` names, or else the one
    ``*.safetensors`` file in the directory. ``files`` holds every other file, by relative
    POSIX path (subdirectories included, ``.git`` and ``.cache`` left out).

    Raises
    ------
    FileFormatError
        No safetensors weights (pickled ``.bin``/``.pt`` weights are refused with how to
        convert them), several safetensors files without an index, or an index that does
        not match its shards.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    entries = _walk(root)
    indexes = [p for p in entries if "/" not in p and p.endswith(INDEX_SUFFIX)]
    weights = [p for p in entries if p.lower().endswith(".safetensors")]
    pickles = [p for p in entries if p.lower().endswith(PICKLE_SUFFIXES) and "/" not in p]
    if len(indexes) > 1:
        raise FileFormatError(f"{root}: more than one safetensors index ({', '.join(indexes)}); keep one")
    if indexes:
        index_name = indexes[0]
        shards, index_meta = _read_index(root, index_name)
        weight_files = list(shards)
    else:
        top = [p for p in weights if "/" not in p]
        if not top:
            if pickles:
                raise pickle_refusal(root / pickles[0])
            raise FileFormatError(f"{root}: no *.safetensors weights and no {INDEX_SUFFIX} in this directory")
        if len(top) > 1:
            raise FileFormatError(
                f"{root}: {len(top)} safetensors files ({', '.join(sorted(top)[:4])}...) and no {INDEX_SUFFIX} "
                "naming them as shards of one model; add each file as its own model, or add an index"
            )
        index_name, index_meta, shards = None, None, {top[0]: None}
        weight_files = top
    tensors: dict[str, np.ndarray] = {}
    layout: dict[str, list[str]] = {}
    shard_headers: dict[str, dict] = {}
    for shard in weight_files:
        part, meta = _read_safetensors(root / shard)
        expected = shards[shard]
        if expected is not None and set(expected) != set(part):
            missing, extra = sorted(set(expected) - set(part)), sorted(set(part) - set(expected))
            raise FileFormatError(
                f"{root / index_name}: does not match shard {shard} (missing from the shard: {missing[:3]}, "
                f"not in the index: {extra[:3]})"
            )
        for name in part:
            if name in tensors:
                raise FileFormatError(f"{root}: tensor {name!r} is in two shards")
        tensors.update(part)
        layout[shard] = list(part)
        if "safetensors_metadata" in meta:
            shard_headers[shard] = meta["safetensors_metadata"]
    taken = set(weight_files) | ({index_name} if index_name else set())
    files = {p: (root / p).read_bytes() for p in entries if p not in taken and p not in pickles}
    meta = {"source": root.name, "format": DIR_FORMAT, "shards": layout}
    if index_name:
        meta["index"] = index_name
        meta["index_metadata"] = index_meta
    if shard_headers:
        meta["shard_metadata"] = shard_headers
    if pickles:
        meta["skipped_pickles"] = sorted(pickles)
    return tensors, meta, files


def _walk(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (symlinks followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for f in sorted(filenames):
            full = Path(dirpath) / f
            if full.is_file():
                out.append(full.relative_to(root).as_posix())
    return out


def _read_index(root: Path, index_name: str) -> tuple[dict[str, list[str]], dict]:
    """The shards an index names (shard -> its tensor names) and the index's metadata."""
    where = root / index_name
    try:
        index = json.loads(where.read_bytes())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"{where} is not a valid safetensors index: {exc}") from None
    shards: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if "/" in shard or "\\" in shard or shard in ("", ".", "..") or not shard.endswith(".safetensors"):
            raise FileFormatError(f"{where}: shard {shard!r} must be a .safetensors file name in the same directory")
        shards.setdefault(shard, []).append(tensor)
    for shard in shards:
        if not (root / shard).is_file():
            raise FileFormatError(f"{where} names shard {shard}, which is not in {root}")
    meta = index.get("metadata") or {}
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where}: 'metadata' must be an object")
    return shards, meta


def write_model_dir(
    out: str | Path,
    tensors: dict[str, np.ndarray],
    metadata: dict | None,
    files: dict[str, bytes],
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Write a model directory; return the relative paths written.

    Without ``max_shard_bytes`` the weights are laid out as they were added (same shard
    names, same tensors in each, same index metadata); a model that did not come from a
    directory becomes one ``model.safetensors``. With it, tensors are split in order into
    shards of at most that many bytes of tensor data (a larger tensor gets a shard of its
    own), named ``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json``,
    as ``save_pretrained(max_shard_size=)`` does. ``out`` must not exist or be empty; the
    directory is built beside it and renamed into place, so a failure leaves nothing.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory; choose a new output directory")
    meta = metadata or {}
    layout, index_name, index_meta = _output_layout(tensors, meta, max_shard_bytes)
    for path in files:
        if path in layout or path == index_name:
            raise FileFormatError(f"kept file {path!r} has the name of a weight file being written; cannot export")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        headers = meta.get("shard_metadata") if max_shard_bytes is None else None
        if headers is None and len(layout) == 1 and isinstance(meta.get("safetensors_metadata"), dict):
            headers = {next(iter(layout)): meta["safetensors_metadata"]}  # a model added from one file
        for shard, names in layout.items():
            header = (headers or {}).get(shard) or ({"format": "pt"} if index_name or max_shard_bytes else None)
            write_safetensors(tmp / shard, {n: tensors[n] for n in names}, {"safetensors_metadata": header} if header else None)
        if index_name:
            total = sum(int(t.nbytes) for t in tensors.values())
            index = {
                "metadata": dict(index_meta, total_size=total),
                "weight_map": {n: shard for shard, names in layout.items() for n in names},
            }
            (tmp / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        for path, data in files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(list(layout) + ([index_name] if index_name else []) + list(files))


def _output_layout(
    tensors: dict[str, np.ndarray], meta: dict, max_shard_bytes: int | None
) -> tuple[dict[str, list[str]], str | None, dict]:
    """shard file -> tensor names, the index's name (None for one unsharded file), its metadata."""
    stored = meta.get("shards") if meta.get("format") == DIR_FORMAT else None
    index_name = meta.get("index") if stored else None
    stem = index_name[: -len(INDEX_SUFFIX)] if index_name else "model"
    if max_shard_bytes is None:
        if stored and set(n for names in stored.values() for n in names) == set(tensors):
            return {s: list(names) for s, names in stored.items()}, index_name, dict(meta.get("index_metadata") or {})
        return {f"{stem}.safetensors": list(tensors)}, None, {}
    groups: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        if groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += t.nbytes
    if len(groups) == 1:
        return {f"{stem}.safetensors": groups[0]}, None, {}
    n = len(groups)
    return {f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors": g for i, g in enumerate(groups)}, f"{stem}{INDEX_SUFFIX}", {}
