"""zstd frames as the codec keeps them: no magic number, no content size, no checksum.

Calls go through python-zstandard's cffi binding of libzstd when it is there: cffi lets go
of the GIL for the length of each call, so threads compress and decompress on both cores,
and a frame decompresses straight into the caller's array. python-zstandard's C binding
holds the GIL while it works (0.25; its issue 300) and returns new bytes, so it is only the
fallback (``BACKEND`` says which is in use; the frames are the same either way).

Contexts are not thread-safe: each thread gets its own.
"""

from __future__ import annotations

import threading

import numpy as np
import zstandard

# zstd level 1, its hash table cut from 2^14 entries to zstd's least, 2^6: weight planes
# have few long matches to find, and a small table stays in the L1 cache. On MiniLM blocks
# that packs 0.7% smaller, in three quarters of the time, than level 1 as zstd sets it;
# level 3 packs 2.2% larger and takes nearly twice as long; deltas come out within 0.6%
# (`python -m tensorstore.bench.codec_speed`; docs/benchmarks.md, Encoded blocks, zstd
# parameters). Whole tensors gain too (the ZipLLM-style baseline of the benchmarks).
LEVEL = 1
HASH_LOG = 6

try:  # python-zstandard's own cffi module: the same libzstd, built with the package
    from zstandard._cffi import ffi as _ffi, lib as _lib
except ImportError:  # pragma: no cover - a build of python-zstandard without cffi
    _ffi = _lib = None

BACKEND = "cffi" if _lib is not None else "c"
_MAGICLESS = 1  # ZSTD_f_zstd1_magicless
_local = threading.local()


def _check(code: int, what: str) -> int:
    if _lib.ZSTD_isError(code):
        raise ValueError(f"{what} ({_ffi.string(_lib.ZSTD_getErrorName(code)).decode()})")
    return code


def _cctx():
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _ffi.gc(_lib.ZSTD_createCCtx(), _lib.ZSTD_freeCCtx)
        # The level's parameters for an input of unknown size, set one by one: left to
        # itself, zstd picks smaller tables for a 16 KiB plane, which keep packed weights
        # about 4% larger. Frames are then byte for byte python-zstandard's.
        level = zstandard.ZstdCompressionParameters.from_level(LEVEL, hash_log=HASH_LOG)
        for param, value in ((_lib.ZSTD_c_experimentalParam2, _MAGICLESS), (_lib.ZSTD_c_contentSizeFlag, 0),
                             (_lib.ZSTD_c_checksumFlag, 0), (_lib.ZSTD_c_dictIDFlag, 0),
                             (_lib.ZSTD_c_windowLog, level.window_log), (_lib.ZSTD_c_hashLog, level.hash_log),
                             (_lib.ZSTD_c_chainLog, level.chain_log), (_lib.ZSTD_c_searchLog, level.search_log),
                             (_lib.ZSTD_c_minMatch, level.min_match), (_lib.ZSTD_c_targetLength, level.target_length),
                             (_lib.ZSTD_c_strategy, level.strategy)):
            _check(_lib.ZSTD_CCtx_setParameter(c, param, value), "zstd refused a parameter")
        _local.cctx = c
        _local.cbuf = _ffi.new("char[]", 1 << 16)
    return c


def _dctx():
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _ffi.gc(_lib.ZSTD_createDCtx(), _lib.ZSTD_freeDCtx)
        _check(_lib.ZSTD_DCtx_setParameter(d, _lib.ZSTD_d_experimentalParam1, _MAGICLESS), "zstd refused a parameter")
        _local.dctx = d
    return d


def functions() -> tuple[int, int, int, int] | None:
    """The addresses of ZSTD_decompressDCtx, ZSTD_compress2, ZSTD_isError and
    ZSTD_getErrorName in the cffi binding's libzstd (for ``codec``'s C kernel), or None
    without it."""
    if _lib is None:
        return None
    names = ("ZSTD_decompressDCtx", "ZSTD_compress2", "ZSTD_isError", "ZSTD_getErrorName")
    return tuple(int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, name))) for name in names)


def contexts() -> tuple[int, int]:
    """This thread's compression and decompression contexts, as addresses (what
    ``functions`` take)."""
    pair = getattr(_local, "addresses", None)
    if pair is None:
        pair = _local.addresses = (int(_ffi.cast("uintptr_t", _cctx())), int(_ffi.cast("uintptr_t", _dctx())))
    return pair


def _zc() -> zstandard.ZstdCompressor:
    c = getattr(_local, "zc", None)
    if c is None:
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, hash_log=HASH_LOG, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
            write_dict_id=False,
        )
        c = _local.zc = zstandard.ZstdCompressor(compression_params=params)
    return c


def _zd() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    return d


def compress(data) -> bytes:
    """One frame of ``data`` (a contiguous bytes-like)."""
    if _lib is None:
        return _zc().compress(data)
    c = _cctx()
    n = len(data) if not isinstance(data, np.ndarray) else data.nbytes
    bound = _lib.ZSTD_compressBound(n)
    if len(_local.cbuf) < bound:
        _local.cbuf = _ffi.new("char[]", bound)
    buf = _local.cbuf
    size = _check(_lib.ZSTD_compress2(c, buf, bound, _ffi.from_buffer(data), n), "zstd could not compress")
    return _ffi.buffer(buf, size)[:]


def decompress_into(frame, out: np.ndarray) -> None:
    """Decompress one frame into ``out`` (a contiguous, writable uint8 array), which it
    must fill exactly. Raises ``ValueError`` otherwise."""
    n = len(out)
    if _lib is None:
        try:
            plain = _zd().decompress(frame, max_output_size=n)
        except zstandard.ZstdError as exc:
            raise ValueError(f"a frame does not decompress ({exc})") from None
        if len(plain) != n:
            raise ValueError(f"a frame holds {len(plain)} bytes where {n} are needed")
        out[:] = np.frombuffer(plain, dtype=np.uint8)
        return
    size = _check(_lib.ZSTD_decompressDCtx(_dctx(), _ffi.from_buffer(out, require_writable=True), n,
                                           _ffi.from_buffer(frame), len(frame)),
                  "a frame does not decompress")
    if size != n:
        raise ValueError(f"a frame holds {size} bytes where {n} are needed")
