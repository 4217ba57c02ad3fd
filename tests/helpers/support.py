"""Helpers shared by the store's tests (importable: tests/ is on pytest's path)."""

import ml_dtypes
import mmh3
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorstore as ts


def random_model(seed: int = 0, scale: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((200 * scale, 64)).astype(np.float32),
        "layer.0.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(64).astype(np.float32),
        "norm.weight": np.ones(64, np.float16),
        "steps": np.array(1234, np.int64),
    }


def head_only_digest(data, block_class: int = 0) -> bytes:
    """A deliberately weak block digest (MurmurHash3 of the first 64 bytes only): patched
    in for ``block_digest``, it makes blocks with equal heads collide, as a crafted pair
    would under the real one."""
    return mmh3.mmh3_x64_128_digest(bytes(memoryview(data).cast("B")[:64]), block_class & 0xFFFFFFFF)


def head_only_digests(blocks: list, classes: list[int]) -> list[bytes]:
    """``head_only_digest`` of each block: patched in for ``digests.block_digests``."""
    return [head_only_digest(b, c) for b, c in zip(blocks, classes)]


def colliding_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 tensors of one 4 KiB block each: equal first 64 bytes, other tails."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(1024).astype(np.float32)
    b = a.copy()
    b[512:] = rng.standard_normal(512).astype(np.float32)
    return a, b


def chain_family() -> dict[str, dict[str, np.ndarray]]:
    """A base and three fine-tunes, each near the others in some blocks (64 blocks a tensor):
    t1's near-duplicate replacements take blocks of t2 as representatives."""
    rng = np.random.default_rng(5)
    base = {"w": rng.standard_normal((1024, 64)).astype(np.float32), "b": rng.standard_normal(64).astype(np.float32)}
    t1 = {k: v.copy() for k, v in base.items()}
    t1["w"][:512] += 1e-3 * rng.standard_normal((512, 64)).astype(np.float32)
    t2 = {k: v.copy() for k, v in t1.items()}
    t2["w"][256:768] += 1e-4 * rng.standard_normal((512, 64)).astype(np.float32)
    t3 = {k: v + 3e-3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
    return {"t1": t1, "t2": t2, "t3": t3, "base": base}


def snapshot(store: ts.Store) -> tuple:
    """Everything observable about a store: used to show a failed call changed nothing."""
    tables = store.catalog()
    return (
        store.stats().to_dict() | {"file_bytes": None},
        {name: t.to_pylist() for name, t in tables.items() if name != "models"},
        tables["models"].drop(["created"]).to_pylist(),
        {m: {k: v.tobytes() for k, v in store.load_model(m).items()} for m in store},
    )


# -- arrays of every dtype, shape and layout, for property tests --------------------

DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, ml_dtypes.bfloat16,
          np.int32, np.uint32, np.float32, np.int64, np.uint64, np.float64,
          ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


_DRAWN_BYTES = 2048  # bytes of an array drawn by hypothesis itself (see _random_array)


def _random_array(draw, dtype, shape):
    """Arbitrary bit patterns: NaN payloads, -0.0, infinities and subnormals included."""
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape))
    size = n * itemsize
    raw = draw(st.binary(min_size=min(size, _DRAWN_BYTES), max_size=min(size, _DRAWN_BYTES)))
    if size > _DRAWN_BYTES:
        # Hypothesis draws a binary byte by byte (about 15 us each): a 500 KB array took
        # seconds. Past the first bytes, which it steers and shrinks, random bits from a
        # drawn seed: every bit pattern still occurs.
        raw += np.random.default_rng(draw(st.integers(0, 2**64 - 1))).bytes(size - _DRAWN_BYTES)
    arr = np.frombuffer(raw, dtype=np.uint8).view(dtype) if n else np.zeros(0, dtype)
    if dtype is np.bool_:
        arr = arr.view(np.uint8) % 2 == 1  # a bool array holds only 0 and 1
    return arr.reshape(shape)


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40))
    arr = _random_array(draw, dtype, shape)
    layout = draw(st.sampled_from(["c", "fortran", "strided", "reversed"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif layout == "reversed" and arr.ndim:
        arr = arr[::-1]
    return arr


def rewrite_block_bytes(store_path, block_id: int, flip_at: int) -> None:
    """Flip one stored byte of a block and re-seal its page, as a bug (not the disk) would:
    the page checksum holds, only the content digest can tell."""
    import json

    import lmdb
    import xxhash

    env = lmdb.open(str(store_path), max_dbs=16, subdir=True)
    blocks, pages, meta = (env.open_db(n.encode()) for n in ("blocks", "pages", "meta"))
    with env.begin(write=True) as txn:
        size = json.loads(txn.get(b"format", db=meta))["page_size"]
        from tensorstore import catalog as cat

        b = cat.decode_block(block_id, txn.get(cat.id_key(block_id), db=blocks))
        page = bytearray(txn.get(cat.id_key(b.page_id), db=pages))
        page[b.offset + flip_at] ^= 0x01
        page[size:] = xxhash.xxh3_64_digest(bytes(page[:size]))
        txn.put(cat.id_key(b.page_id), bytes(page), db=pages)
    env.close()
