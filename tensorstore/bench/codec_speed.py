"""Where a block's encode and decode time goes, and whether threads help.

``python -m tensorstore.bench.codec_speed [--family DIR] [--blocks N]``: 64 KiB blocks of
the MiniLM family's base and of its full fine-tune ``minilm-full-spam-s9`` (the cached
family, ``docs/corpus.md``). Prints the bytes of the fine-tune's deltas (differences, and
the XORs of format 3) and, per block, the minimum over runs of: the zstd frames of a
delta's decode alone (in a loop, and in zstd's batch call on C threads), four planes put
back into elements by numpy, then, with the C kernel (``codec.KERNEL``) and with numpy
alone: a delta against its packed reference decoded (one thread, two threads), an XOR
delta decoded (one thread), a delta chosen against its packed reference as ingest does
(one thread, two), and a block packed; then, for the store's zstd parameters and two
others (level 1 with the hash table zstd gives it, level 3), the bytes of the base's
blocks packed and of the fine-tune's deltas, with the time per block of each. Figures in
``docs/benchmarks.md`` (Encoded blocks).
"""

from __future__ import annotations

import argparse
import os
import struct
import threading
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zstandard

from .. import codec, zstdframes

BLOCK = 65536
_MAGIC = b"\x28\xb5\x2f\xfd"  # the batch call wants frames with the magic number


def _best(fn, runs: int = 7) -> float:
    return min(timeit.repeat(fn, number=1, repeat=runs))


def _frames(payload) -> list[bytes]:
    """The zstd frames of a payload (see ``codec``'s format)."""
    view = memoryview(payload)
    if view[:1] == codec._DIFF:
        view = view[1:]
    return [bytes(body) for kind, body in codec._bodies(view, 4)[0] if kind == codec._ZSTD]


def measure(family: Path, blocks: int = 300) -> dict:
    from safetensors.numpy import load_file

    base = load_file(str(family / "minilm-base.safetensors"))
    tuned = load_file(str(family / "minilm-full-spam-s9.safetensors"))
    layout = codec.Layout(4, True)
    pairs, xors, raw, new = [], [], [], []
    for name, t in tuned.items():
        if t.dtype != np.float32 or name not in base or base[name].shape != t.shape:
            continue
        x, y = base[name].reshape(-1).view(np.uint8), t.reshape(-1).view(np.uint8)
        for s in range(0, len(y) - BLOCK + 1, BLOCK):
            old, mine = x[s : s + BLOCK], y[s : s + BLOCK]
            raw.append(old)
            new.append(mine)
            packed_ref = codec.encode(old.data, layout)
            pairs.append((codec.encode(mine.data, layout, old.data), packed_ref))
            xors.append(codec.encode_xor(mine.data, layout, old.data))
        if len(pairs) >= blocks:
            break
    n = min(blocks, len(pairs))
    pairs, xors, raw, new = pairs[:n], xors[:n], raw[:n], new[:n]
    out = np.empty(BLOCK * n, dtype=np.uint8)
    slots = [out[k * BLOCK : (k + 1) * BLOCK] for k in range(n)]

    def decode_one(k: int) -> None:
        codec.decode(pairs[k][0], BLOCK, layout, out=slots[k], ref_payload=pairs[k][1])

    def decode_xor(k: int) -> None:
        codec.decode(xors[k], BLOCK, layout, out=slots[k], ref_payload=pairs[k][1])

    def choose_one(k: int) -> None:
        codec.choose_jobs([codec.Job(new[k].data, [(pairs[k][1], codec.PACKED)])], layout)

    two = ThreadPoolExecutor(2)
    frames = [f for d, r in pairs for f in _frames(d) + _frames(r)]
    places = [np.empty(BLOCK // 4, dtype=np.uint8) for _ in frames]
    batch = zstandard.ZstdDecompressor()
    with_magic = [_MAGIC + f for f in frames]
    sizes = struct.pack(f"={len(frames)}Q", *[BLOCK // 4] * len(frames))
    planes, _ = codec._split(raw[0].data, layout)
    grid = slots[0].reshape(-1, 4)

    def interleave() -> None:
        for j, p in enumerate(planes):
            grid[:, j] = p

    def halves(fn) -> None:
        list(two.map(lambda part: [fn(k) for k in part], (range(0, n // 2), range(n // 2, n))))

    us = 1e6 / n
    res = {
        "blocks": n,
        "kernel": codec.KERNEL is not None,
        "delta_bytes": sum(len(d) for d, _ in pairs),
        "xor_delta_bytes": sum(map(len, xors)),
        "zstd_frames_loop_us": _best(lambda: [zstdframes.decompress_into(f, p) for f, p in zip(frames, places)]) * us,
        "zstd_frames_batch_two_threads_us": _best(
            lambda: batch.multi_decompress_to_buffer(with_magic, decompressed_sizes=sizes, threads=2)) * us,
        "interleave_numpy_us": _best(lambda: [interleave() for _ in range(n)]) * us,
    }
    kernel = codec.KERNEL
    try:  # the C kernel's rows, then numpy's (the fallback where nothing compiled the kernel)
        for path, setting in (("kernel", kernel), ("numpy", None)):
            if path == "kernel" and kernel is None:
                continue
            codec.KERNEL = setting
            res |= {
                f"decode_delta_one_thread_{path}_us": _best(lambda: [decode_one(k) for k in range(n)]) * us,
                f"decode_delta_two_threads_{path}_us": _best(lambda: halves(decode_one)) * us,
                f"decode_xor_delta_one_thread_{path}_us": _best(lambda: [decode_xor(k) for k in range(n)]) * us,
                f"choose_delta_one_thread_{path}_us": _best(lambda: [choose_one(k) for k in range(n)], 3) * us,
                f"choose_delta_two_threads_{path}_us": _best(lambda: halves(choose_one), 3) * us,
                f"pack_one_thread_{path}_us": _best(lambda: [codec.encode(b.data, layout) for b in raw], 3) * us,
            }
    finally:
        codec.KERNEL = kernel
    for label, level, hash_log in (("store", zstdframes.LEVEL, zstdframes.HASH_LOG), ("level1_own_table", 1, None),
                                   ("level3", 3, None)):
        with _zstd(level, hash_log):
            res |= {
                f"zstd_{label}_packed_bytes": sum(len(codec.encode(b.data, layout)) for b in raw),
                f"zstd_{label}_pack_us": _best(lambda: [codec.encode(b.data, layout) for b in raw], 3) * us,
                f"zstd_{label}_delta_bytes": sum(len(codec.encode(m.data, layout, r.data)) for m, r in zip(new, raw)),
                f"zstd_{label}_delta_us": _best(lambda: [codec.encode(m.data, layout, r.data)
                                                         for m, r in zip(new, raw)], 3) * us,
            }
    res["load_average"] = os.getloadavg()[0]
    two.shutdown()
    return res


class _zstd:
    """zstd at ``level`` with ``hash_log`` (None: the level's own) for the ``with`` block:
    ``zstdframes`` makes each thread's contexts from its module settings when first asked,
    so they are dropped on the way in and out."""

    def __init__(self, level: int, hash_log: int | None) -> None:
        own = zstandard.ZstdCompressionParameters.from_level(level).hash_log
        self.settings = (level, own if hash_log is None else hash_log)

    def __enter__(self) -> None:
        self.saved = (zstdframes.LEVEL, zstdframes.HASH_LOG)
        zstdframes.LEVEL, zstdframes.HASH_LOG = self.settings
        zstdframes._local = threading.local()

    def __exit__(self, *exc) -> None:
        zstdframes.LEVEL, zstdframes.HASH_LOG = self.saved
        zstdframes._local = threading.local()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", type=Path, default=Path.home() / ".cache" / "tensorstore" / "minilm-family")
    parser.add_argument("--blocks", type=int, default=300)
    args = parser.parse_args()
    for k, v in measure(args.family, args.blocks).items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
