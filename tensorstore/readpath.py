"""The read path: page file -> checksum -> buffer pool -> blocks -> tensors.

Every read of the store goes through a ``ReadPath``: ``Store.load_model``,
``Store.load_tensor``, ``Store.reader()`` (zero-copy views), the shared tensor cache
(which assembles what it publishes here), ``verify``'s neighbours, ``dedup``, ``compact``
and ``push``. One path, one checksum rule, chosen by ``verify``:

``True`` or ``"first"`` (the default)
    A page's XXH3 checksum is checked the first time this process reads it from the page
    file. A page id names the same bytes forever (a changed page gets a new id), so a
    page that passed once is not checked again on later reads in this process: a warm
    read costs no hashing. The pool loads its frames through this rule too.
``"always"``
    Every read of a page from the page file is checked, every time, whatever this
    process checked before; so is every tensor mapped from the shared cache. What the
    buffer pool holds is this process's memory, checked when it was loaded.
``False`` or ``"never"``
    Nothing is checked (``tensorstore verify`` still checks everything).

Shared-cache files carry their own checksum, checked when a process first maps a file
(and at every load under ``"always"``): see :mod:`tensorstore.sharedcache`.

A ``ReadPath`` lives within one LMDB read transaction; it reads each page at most once
and decodes encoded blocks, a load's blocks in one batch.
"""

from __future__ import annotations

import threading

import lmdb
import numpy as np

from . import catalog as cat
from . import codec, dtypes
from .catalog import TensorRecord, id_key
from .dtypes import dtype_from_name
from .errors import CorruptionError, InvalidArgumentError

FIRST, ALWAYS, NEVER = "first", "always", "never"
_POLICIES = {True: FIRST, False: NEVER, FIRST: FIRST, ALWAYS: ALWAYS, NEVER: NEVER}


def verify_policy(verify: bool | str) -> str:
    """``"first"``, ``"always"`` or ``"never"`` for a ``verify`` argument."""
    try:
        return _POLICIES[verify]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"verify must be True, False, 'first', 'always' or 'never', not {verify!r}"
        ) from None


_loading = threading.local()  # the ReadPath pinning in this thread, and blocks it decoded


def load_frame(block_id: int, frame: memoryview) -> int:
    """The buffer pool's loader: a block's decoded bytes into a frame, read under the
    checksum rule of the ReadPath that asked for it (in this thread, inside its read
    transaction). Blocks that path has just decoded in a batch are copied."""
    ready = getattr(_loading, "ready", None)
    ready = ready.get(block_id) if ready else None
    if ready is not None:
        frame[: len(ready)] = ready
        return len(ready)
    path = _loading.path
    b = path.block(block_id)
    path.decoded_into(b, np.frombuffer(frame, dtype=np.uint8, count=b.nbytes))
    return b.nbytes


class ReadPath:
    """Assembles tensors from blocks within one read transaction, each page read once.

    Parameters
    ----------
    store : tensorstore.Store
        The store read (its page file, catalog and buffer pool).
    txn : lmdb.Transaction
        The read transaction every page and record comes from.
    verify : bool or str
        The checksum rule (module docstring).
    """

    def __init__(self, store, txn: lmdb.Transaction, verify: bool | str = True) -> None:
        self.store = store
        self.txn = txn
        self.policy = verify_policy(verify)
        self.blocks_db = store.env.dbs["blocks"]
        self.pages: dict[int, memoryview] = {}

    def page(self, page_id: int) -> memoryview:
        """A page's payload: a view of the memory map, valid while the transaction lives."""
        view = self.pages.get(page_id)
        if view is None:
            view = self.pages[page_id] = self.read_page(page_id)
        return view

    def read_page(self, page_id: int) -> memoryview:
        """Read a page from the page file under this path's checksum rule."""
        try:
            return self.store.page_file.read(self.txn, page_id, verify=self.policy != NEVER,
                                             recheck=self.policy == ALWAYS)
        except CorruptionError as exc:
            raise CorruptionError(f"{exc}; it holds blocks of {self.store.models_in_page(self.txn, page_id)}") from None

    def tensor(self, t: TensorRecord) -> np.ndarray:
        return self.assemble(t, self.runs(t))

    def blocks(self, t: TensorRecord) -> list[cat.BlockRecord]:
        """The catalog records of the tensor's blocks, in order."""
        return [self.block(block_id, t.name) for block_id in t.block_ids.tolist()]

    def block(self, block_id: int, tensor: str | None = None) -> cat.BlockRecord:
        value = self.txn.get(id_key(block_id), db=self.blocks_db)
        if value is None:
            whose = f"tensor {tensor!r}" if tensor is not None else "a delta block"
            raise CorruptionError(f"{whose} references block {block_id}, which is missing")
        return cat.decode_block(block_id, value)

    def runs(self, t: TensorRecord, blocks: list[cat.BlockRecord] | None = None, *,
             per_block: bool | None = None) -> list[tuple]:
        """Where the tensor's bytes lie: ``(page, offset in page, offset in tensor, length,
        block)``, where ``block`` is None for raw bytes copied from the page, else
        ``(block, reference block or None)``: to decode, or to take from the buffer pool.

        Raw blocks of a tensor mostly lie back to back in a page; each such run is one
        entry, unless ``per_block`` (the default when the store has a buffer pool, which
        holds blocks one by one).
        """
        per_block = self.store.pool is not None if per_block is None else per_block
        runs: list[tuple] = []
        at = 0
        for b in self.blocks(t) if blocks is None else blocks:
            block_id = b.block_id
            want = min(t.step, t.nbytes - at)
            if b.nbytes != want:
                raise CorruptionError(f"block {block_id} holds {b.nbytes} bytes where tensor {t.name!r} needs {want}")
            if b.encoding != codec.RAW or per_block:
                runs.append((b.page_id, b.offset, at, b.nbytes, (b, self.block(b.ref) if b.ref else None)))
            elif runs and runs[-1][4] is None and runs[-1][0] == b.page_id and runs[-1][1] + runs[-1][3] == b.offset:
                page, offset, start, n, _ = runs[-1]
                runs[-1] = (page, offset, start, n + b.nbytes, None)
            else:
                runs.append((b.page_id, b.offset, at, b.nbytes, None))
            at += b.nbytes
        return runs

    def assemble(self, t: TensorRecord, runs: list[tuple], out: np.ndarray | None = None) -> np.ndarray:
        """One tensor from its runs, into ``out`` (uint8) if given (``assemble_all``)."""
        return self.assemble_all([(t, runs)], [out])[0]

    def assemble_all(self, plan: list[tuple[TensorRecord, list[tuple]]],
                     outs: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Tensors from their runs (``plan``: ``[(tensor, runs)]``), each into its ``outs``
        entry (uint8) where given: raw runs copied from their pages; blocks from the buffer
        pool when the store has one; the rest decoded in one batch
        (a model's blocks together, so that small tensors decode in parallel too)."""
        results, todo = [], []
        for k, (t, runs) in enumerate(plan):
            out = outs[k] if outs is not None and outs[k] is not None else np.empty(t.nbytes, dtype=np.uint8)
            for page_id, offset, start, n, block in runs:
                if block is None:
                    out[start : start + n] = self.page(page_id)[offset : offset + n]
                else:
                    todo.append((block[0], block[1], out[start : start + n], t))
            results.append(out.view(dtype_from_name(t.dtype).newbyteorder("=")).reshape(t.shape))
        if todo and self.store.pool is not None:
            todo = self._from_pool(todo)
            self._decode(todo)
            self._offer(todo)
        elif todo:
            self._decode(todo)
        return results

    def _decode(self, todo: list[tuple]) -> None:
        """Decode ``(block, ref, out, tensor)`` items into their ``out`` (a raw block is
        copied)."""
        jobs = []
        for b, ref, out, t in todo:
            if b.encoding == codec.RAW:
                out[:] = self.stored(b)
            else:
                jobs.append(self._job(b, ref, dtypes.layout(t.dtype), out, f"tensor {t.name!r}"))
        try:
            codec.decode_many(jobs)
        except ValueError as exc:
            raise CorruptionError(f"an encoded block does not decode: {exc}") from None

    def _from_pool(self, todo: list[tuple]) -> list[tuple]:
        """Copy the blocks the pool holds into their ``out``; return the others.

        The pool holds blocks decoded, so a warm load decodes nothing. Blocks it lacks are
        decoded together (``_decode``), then put in the pool
        (``_offer``), rather than decoded one by one by its loader.
        """
        from tensorstore_bufferpool import PoolExhaustedError

        pool = self.store.pool
        _loading.path, _loading.ready = self, None
        missing = []
        for item in todo:
            b, _, out, _ = item
            if b.block_id not in pool:
                missing.append(item)
                continue
            try:
                with pool.pin(b.block_id) as frame:
                    out[:] = frame[: len(out)]
            except PoolExhaustedError:
                # More threads than frames are pinning at once: read around the pool
                # rather than fail or wait on another thread's copy.
                missing.append(item)
        return missing

    def _offer(self, items: list[tuple]) -> None:
        """Put blocks just decoded into their ``out`` in the pool (its loader copies them)."""
        from tensorstore_bufferpool import PoolExhaustedError

        pool = self.store.pool
        _loading.path = self
        _loading.ready = {b.block_id: out for b, _, out, _ in items}
        try:
            for b, _, _, _ in items:
                with pool.pin(b.block_id):
                    pass
        except PoolExhaustedError:
            pass  # other threads hold every frame: these stay out of the pool this time
        finally:
            _loading.ready = None

    def decoded_into(self, b: cat.BlockRecord, out: np.ndarray) -> None:
        """One block's decoded bytes into ``out`` (uint8, ``b.nbytes`` long)."""
        if b.encoding == codec.RAW:
            out[:] = self.stored(b)
            return
        ref = self.block(b.ref) if b.ref else None
        try:
            codec.decode_many([self._job(b, ref, dtypes.layout_of_code(b.dtype_code), out, f"block {b.block_id}")])
        except ValueError as exc:
            raise CorruptionError(f"an encoded block does not decode: {exc}") from None

    def _job(self, b: cat.BlockRecord, ref: cat.BlockRecord | None, layout: codec.Layout, out: np.ndarray,
             what: str) -> codec.DecodeJob:
        """Decoding ``b`` (with its reference record ``ref``) into ``out``."""
        return codec.DecodeJob(self.stored(b), None if ref is None else (self.stored(ref), ref.encoding), layout, out, what)

    def stored(self, b: cat.BlockRecord) -> memoryview:
        """The bytes ``b`` keeps in its page: a view of the page, valid while the
        transaction lives."""
        return self.page(b.page_id)[b.offset : b.offset + b.stored]

    def block_bytes(self, b: cat.BlockRecord) -> np.ndarray:
        """The decoded bytes of one block (uint8): a view of the page for a raw block."""
        if b.encoding == codec.RAW:
            return np.frombuffer(self.stored(b), dtype=np.uint8)
        return self.blocks_bytes([b])[0]

    def blocks_bytes(self, blocks: list[cat.BlockRecord]) -> np.ndarray:
        """The decoded bytes of blocks of one dtype and length, one row each."""
        n = blocks[0].nbytes
        out = np.empty((len(blocks), n), dtype=np.uint8)
        layout = dtypes.layout_of_code(blocks[0].dtype_code)
        jobs = []
        for k, b in enumerate(blocks):
            if b.encoding == codec.RAW:
                out[k] = np.frombuffer(self.stored(b), dtype=np.uint8)
            else:
                ref = self.block(b.ref) if b.ref else None
                jobs.append(self._job(b, ref, layout, out[k], f"block {b.block_id}"))
        try:
            codec.decode_many(jobs)
        except ValueError as exc:
            raise CorruptionError(f"an encoded block does not decode: {exc}") from None
        return out
