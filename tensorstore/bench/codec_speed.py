"""Where a block's encode and decode time goes, and whether threads help.

``python -m tensorstore.bench.codec_speed [--family DIR] [--blocks N]``: 64 KiB blocks of
the MiniLM family's base and of its full fine-tune ``minilm-full-spam-s9`` (the cached
family, ``docs/corpus.md``). Prints, per block, the minimum over runs of: a delta against
its packed reference decoded (in one thread, and on two threads the way the codec used
to run them), the zstd frames of that decode alone (in a loop, and in zstd's batch call
on C threads), the planes put back into elements, and a block packed (one thread, two
threads). Figures in ``docs/benchmarks.md`` (Encoded blocks).
"""

from __future__ import annotations

import argparse
import os
import struct
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zstandard

from .. import codec

BLOCK = 65536
_MAGIC = b"\x28\xb5\x2f\xfd"  # the batch call wants frames with the magic number


def _best(fn, runs: int = 7) -> float:
    return min(timeit.repeat(fn, number=1, repeat=runs))


def _frames(payload) -> list[bytes]:
    """The zstd frames of a payload (see ``codec``'s format)."""
    view, at, heads = memoryview(payload), 0, []
    for _ in range(4):
        head, at = codec._read_varint(view, at)
        heads.append(head)
    out = []
    for head in heads:
        kind, size = head & 3, head >> 2
        if kind == codec._ZSTD:
            out.append(bytes(view[at : at + size]))
        if kind != codec._ZEROS:
            at += size
    return out


def measure(family: Path, blocks: int = 300) -> dict:
    from safetensors.numpy import load_file

    base = load_file(str(family / "minilm-base.safetensors"))
    tuned = load_file(str(family / "minilm-full-spam-s9.safetensors"))
    layout = codec.Layout(4, True)
    pairs, raw = [], []
    for name, t in tuned.items():
        if t.dtype != np.float32 or name not in base or base[name].shape != t.shape:
            continue
        x, y = base[name].reshape(-1).view(np.uint8), t.reshape(-1).view(np.uint8)
        for s in range(0, len(y) - BLOCK + 1, BLOCK):
            raw.append(x[s : s + BLOCK])
            pairs.append((codec.encode(y[s : s + BLOCK].data, layout, x[s : s + BLOCK].data),
                          codec.encode(x[s : s + BLOCK].data, layout)))
        if len(pairs) >= blocks:
            break
    pairs, raw = pairs[:blocks], raw[:blocks]
    out = np.empty(BLOCK * len(pairs), dtype=np.uint8)
    slots = [out[k * BLOCK : (k + 1) * BLOCK] for k in range(len(pairs))]

    def decode_one(k: int) -> None:
        codec.decode(pairs[k][0], BLOCK, layout, out=slots[k], ref_payload=pairs[k][1])

    two = ThreadPoolExecutor(2)
    frames = [f for d, r in pairs for f in _frames(d) + _frames(r)]
    d = codec._decompressor()
    batch = zstandard.ZstdDecompressor()
    with_magic = [_MAGIC + f for f in frames]
    sizes = struct.pack(f"={len(frames)}Q", *[BLOCK // 4] * len(frames))
    planes, tail = codec._split(raw[0].data, layout)
    grid = slots[0].reshape(-1, 4)

    def interleave() -> None:
        for j, p in enumerate(planes):
            grid[:, j] = p

    n = len(pairs)
    us = 1e6 / n
    res = {
        "blocks": n,
        "decode_delta_one_thread_us": _best(lambda: [decode_one(k) for k in range(n)]) * us,
        "decode_delta_two_threads_us": _best(lambda: list(two.map(decode_one, range(n), chunksize=8))) * us,
        "zstd_frames_loop_us": _best(lambda: [d.decompress(f, max_output_size=BLOCK // 4) for f in frames]) * us,
        "zstd_frames_batch_two_threads_us": _best(
            lambda: batch.multi_decompress_to_buffer(with_magic, decompressed_sizes=sizes, threads=2)) * us,
        "interleave_us": _best(lambda: [interleave() for _ in range(n)]) * us,
        "pack_one_thread_us": _best(lambda: [codec.encode(b.data, layout) for b in raw], 3) * us,
        "pack_two_threads_us": _best(lambda: list(two.map(lambda b: codec.encode(b.data, layout), raw)), 3) * us,
        "load_average": os.getloadavg()[0],
    }
    two.shutdown()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", type=Path, default=Path.home() / ".cache" / "tensorstore" / "minilm-family")
    parser.add_argument("--blocks", type=int, default=300)
    args = parser.parse_args()
    for k, v in measure(args.family, args.blocks).items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
