"""What a user could use instead of the store, measured on the same family (SPEC §7, issue 13).

Each function compresses or deduplicates a family the way one alternative does, then decodes
everything back and compares it with the input, bit for bit: a figure is only reported with
the round trip it was measured with (``bit_exact``). Figures are plain dicts, ready for JSON:
``bytes`` (what the alternative keeps: compressed files, distinct chunks, or distinct
tensors' payloads; per-tensor baselines count tensor payloads only, as ``tensor-dedup``
does, no names or headers), ``ingest_s`` (encoding), ``load_warm_s`` (decoding every model
from memory, median of ``repeat``) and ``bit_exact``.

``zipllm_style`` is a reimplementation of ZipLLM's lossless path (NSDI'26: whole-tensor
dedup, then each fine-tuned tensor XOR-ed with its base model's tensor of the same name,
shape and dtype, byte planes, zstd), written here with :mod:`tensorstore.codec`; it is not
ZipLLM's code.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

CHUNK = 64 << 10
ZSTD_LEVEL = 3  # zstd's own default

Family = Mapping[str, Mapping[str, np.ndarray]]


def _median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls of ``fn``, and the last call's result."""
    times, out = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _tensor_key(a: np.ndarray) -> bytes:
    h = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    return h.digest()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _family_equal(decoded: Family, family: Family) -> bool:
    # Names as sets: a safetensors file keeps its tensors sorted by name, not as added.
    return set(decoded) == set(family) and all(
        set(decoded[n]) == set(family[n]) and all(_same(decoded[n][k], family[n][k]) for k in family[n])
        for n in family
    )


# --- per file ---------------------------------------------------------------------------


def chunk_dedup(paths: Mapping[str, Path], chunk: int = CHUNK) -> dict:
    """Fixed ``chunk``-byte pieces of the files, each distinct piece kept once (content-addressed
    model hubs); the files are rebuilt from the pieces to check the round trip."""
    pieces: dict[bytes, bytes] = {}
    recipes: dict[str, list[bytes]] = {}
    t0 = time.perf_counter()
    for name, p in paths.items():
        data = p.read_bytes()
        recipe = recipes[name] = []
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            digest = hashlib.blake2b(piece, digest_size=16).digest()
            pieces.setdefault(digest, piece)
            recipe.append(digest)
    ingest = time.perf_counter() - t0
    load, rebuilt = _median_time(lambda: {n: b"".join(pieces[d] for d in r) for n, r in recipes.items()}, 1)
    exact = all(rebuilt[n] == paths[n].read_bytes() for n in paths)
    return {"bytes": sum(len(v) for v in pieces.values()), "ingest_s": ingest, "load_warm_s": load, "bit_exact": exact}


def zstd_files(paths: Mapping[str, Path], repeat: int = 1, level: int = ZSTD_LEVEL) -> dict:
    """Each file compressed whole with zstd at ``level``; decoded with safetensors' loader."""
    import zstandard
    from safetensors.numpy import load as load_bytes

    cctx = zstandard.ZstdCompressor(level=level)
    t0 = time.perf_counter()
    compressed = {n: cctx.compress(p.read_bytes()) for n, p in paths.items()}
    ingest = time.perf_counter() - t0
    dctx = zstandard.ZstdDecompressor()
    load, _ = _median_time(lambda: [load_bytes(dctx.decompress(c)) for c in compressed.values()], repeat)
    exact = all(dctx.decompress(compressed[n]) == p.read_bytes() for n, p in paths.items())
    return {"bytes": sum(len(c) for c in compressed.values()), "ingest_s": ingest, "load_warm_s": load,
            "bit_exact": exact, "level": level}


# ZipNN's byte grouping needs to know the element type; it supports these.
_ZIPNN_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def zipnn_available() -> str | None:
    """None if ``zipnn`` imports, else why not (one line)."""
    try:
        import zipnn  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means the row is left out, with the reason
        return f"zipnn does not import: {type(exc).__name__}: {exc}"
    return None


def _zipnn(dtype: str):
    from zipnn import ZipNN

    # Defaults otherwise (method AUTO, zstd level 3, byte grouping by dtype): as a user would.
    return ZipNN(input_format="byte", bytearray_dtype=dtype)


def _dominant_float(family: Family) -> str:
    """The float dtype holding most of the family's bytes (ZipNN compresses a file as one type)."""
    weight: dict[str, int] = {}
    for tensors in family.values():
        for a in tensors.values():
            weight[a.dtype.name] = weight.get(a.dtype.name, 0) + a.nbytes
    floats = {k: v for k, v in weight.items() if k in _ZIPNN_DTYPES}
    return max(floats, key=floats.__getitem__) if floats else "float32"


def zipnn_files(paths: Mapping[str, Path], family: Family, repeat: int = 1) -> dict:
    """Each safetensors file compressed whole with ZipNN (``pip install zipnn``), byte grouping
    by the family's main float type, as ZipNN's file compressor does."""
    from safetensors.numpy import load as load_bytes

    dtype = _dominant_float(family)
    z = _zipnn(_ZIPNN_DTYPES[dtype])
    t0 = time.perf_counter()
    compressed = {n: z.compress(p.read_bytes()) for n, p in paths.items()}
    ingest = time.perf_counter() - t0
    load, _ = _median_time(lambda: [load_bytes(bytes(z.decompress(c))) for c in compressed.values()], repeat)
    exact = all(bytes(z.decompress(compressed[n])) == p.read_bytes() for n, p in paths.items())
    return {"bytes": sum(len(c) for c in compressed.values()), "ingest_s": ingest, "load_warm_s": load,
            "bit_exact": exact, "zipnn_dtype": dtype}


# --- per tensor -------------------------------------------------------------------------


def tensor_dedup(family: Family) -> dict:
    """Each distinct tensor (dtype, shape, bytes) kept once, as it is."""
    kept: dict[bytes, np.ndarray] = {}
    recipes: dict[str, dict[str, bytes]] = {}
    t0 = time.perf_counter()
    for name, tensors in family.items():
        recipes[name] = {}
        for k, a in tensors.items():
            key = _tensor_key(a)
            kept.setdefault(key, a)
            recipes[name][k] = key
    ingest = time.perf_counter() - t0
    decoded = {n: {k: kept[key] for k, key in r.items()} for n, r in recipes.items()}
    return {"bytes": sum(a.nbytes for a in kept.values()), "ingest_s": ingest, "load_warm_s": None,
            "bit_exact": _family_equal(decoded, family), "distinct_tensors": len(kept)}


def zipnn_tensor_dedup(family: Family, repeat: int = 1) -> dict:
    """Whole-tensor dedup first, then each distinct tensor compressed alone with ZipNN (byte
    grouping by its own dtype; a dtype ZipNN cannot group, such as int64, is zstd-compressed)."""
    import zstandard

    payloads: dict[bytes, tuple[str, bytes, np.dtype, tuple]] = {}
    recipes: dict[str, dict[str, bytes]] = {}
    coders: dict[str, object] = {}
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    t0 = time.perf_counter()
    for name, tensors in family.items():
        recipes[name] = {}
        for k, a in tensors.items():
            key = _tensor_key(a)
            recipes[name][k] = key
            if key in payloads:
                continue
            data = np.ascontiguousarray(a).tobytes()
            if a.dtype.name in _ZIPNN_DTYPES:
                z = coders.setdefault(a.dtype.name, _zipnn(_ZIPNN_DTYPES[a.dtype.name]))
                payloads[key] = ("zipnn", z.compress(data), a.dtype, a.shape)
            else:
                payloads[key] = ("zstd", cctx.compress(data), a.dtype, a.shape)
    ingest = time.perf_counter() - t0
    dctx = zstandard.ZstdDecompressor()

    def decode_all():
        out = {}
        for key, (how, blob, dtype, shape) in payloads.items():
            raw = bytes(coders[dtype.name].decompress(blob)) if how == "zipnn" else dctx.decompress(blob)
            out[key] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return {n: {k: out[key] for k, key in r.items()} for n, r in recipes.items()}

    load, decoded = _median_time(decode_all, repeat)
    return {"bytes": sum(len(p[1]) for p in payloads.values()), "ingest_s": ingest, "load_warm_s": load,
            "bit_exact": _family_equal(decoded, family),
            "zstd_tensors": sum(p[0] == "zstd" for p in payloads.values())}


def zipllm_style(family: Family, parents: Mapping[str, str | None], repeat: int = 1) -> dict:
    """A reimplementation of ZipLLM's lossless path, told each model's base (``parents``).

    Whole-tensor exact dedup across the family; then every distinct tensor of a model with a
    base that has a tensor of the same name, shape and dtype is XOR-ed with it, split into
    byte planes and zstd-compressed (``codec.encode_xor(data, layout, base)``, BitX); every other
    distinct tensor (the base's own, or one its base lacks) is byte planes + zstd alone
    (``codec.encode(data, layout)``), as ZipNN would. Parents must come before their
    children in ``family`` (a base is decoded before what refers to it).
    """
    from .. import codec
    from ..dtypes import dtype_name, layout

    order = list(family)
    for name in order:
        parent = parents.get(name)
        if parent is not None and (parent not in family or order.index(parent) > order.index(name)):
            raise ValueError(f"the base of {name!r}, {parent!r}, must be a model listed before it")
    payloads: dict[bytes, tuple[bytes, str | None, str, np.dtype, tuple]] = {}  # key -> (payload, ref model, ref tensor, ...)
    recipes: dict[str, dict[str, bytes]] = {}
    by_model: dict[str, dict[str, int]] = {}  # what each model added: bytes, tensors as deltas, packed alone
    deltas = 0
    t0 = time.perf_counter()
    for name in order:
        recipes[name] = {}
        added = by_model[name] = {"bytes": 0, "delta_tensors": 0, "packed_tensors": 0}
        base = family[parents[name]] if parents.get(name) else None
        for k, a in family[name].items():
            key = _tensor_key(a)
            recipes[name][k] = key
            if key in payloads:
                continue
            data = np.ascontiguousarray(a).tobytes()
            lay = layout(dtype_name(a.dtype))
            ref = base.get(k) if base is not None else None
            if ref is not None and ref.dtype == a.dtype and ref.shape == a.shape:
                payloads[key] = (codec.encode_xor(data, lay, np.ascontiguousarray(ref).tobytes()), parents[name], k, a.dtype, a.shape)
                deltas += 1
                added["delta_tensors"] += 1
            else:
                payloads[key] = (codec.encode(data, lay), None, k, a.dtype, a.shape)
                added["packed_tensors"] += 1
            added["bytes"] += len(payloads[key][0])
    ingest = time.perf_counter() - t0

    def decode_all():
        decoded: dict[str, dict[str, np.ndarray]] = {}
        by_key: dict[bytes, np.ndarray] = {}
        for name in order:  # a base is decoded before its fine-tunes, whose references it holds
            decoded[name] = {}
            for k, key in recipes[name].items():
                if key not in by_key:
                    payload, ref_model, ref_name, dtype, shape = payloads[key]
                    ref = None if ref_model is None else decoded[ref_model][ref_name].tobytes()
                    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    raw = codec.decode(payload, n, layout(dtype_name(dtype)), ref=ref)
                    by_key[key] = raw.view(dtype).reshape(shape)
                decoded[name][k] = by_key[key]
        return decoded

    load, decoded = _median_time(decode_all, repeat)
    return {"bytes": sum(len(p[0]) for p in payloads.values()), "ingest_s": ingest, "load_warm_s": load,
            "bit_exact": _family_equal(decoded, family), "delta_tensors": deltas,
            "packed_tensors": len(payloads) - deltas, "zstd_level": codec.LEVEL, "by_model": by_model,
            "label": "ZipLLM-style (reimplementation)"}
