"""Block placement and reference counting inside one write transaction.

A ``BlockWriter`` is made for one write transaction and thrown away after it. It
references blocks (an existing block with the same content digest gets one more reference;
a new one is placed in a page), drops references (a block nobody references leaves its
page, and the page is compacted or freed), and at ``flush`` writes every page, block and
page record it touched exactly once. Nothing outside the transaction is changed, so an
aborted transaction leaves no trace.

Placement is next-fit: pages that have room (after earlier deletes) first, then the
partly filled last page, then new pages; a model's new blocks therefore lie together in
the order they were added. ``repack`` replaces this with a layout chosen for reads.
"""

from __future__ import annotations

from dataclasses import replace

import lmdb

from tensorstore_index.exact import block_digest

from . import codec, contentcodes, dtypes, threads
from .digests import same_bytes, strong_digest

from .catalog import (
    BlockRecord,
    PageRecord,
    StoreState,
    decode_block,
    decode_page,
    encode_block,
    encode_page,
    hash_key,
    id_key,
)
from .errors import CorruptionError, HashCollisionError
from .pagefile import PageFile

ALIGN = 8  # block offsets are multiples of the largest itemsize, so views are aligned
# A page goes on the open list when a quarter of it is free: filling it rewrites the whole
# page, so less room would cost more writing than the space it saves.
OPEN_ROOM_FRACTION = 4
# Pages with room kept in memory during one transaction, for tails and small tensors to
# fill: without them every page ends with half a block of waste on average.
MAX_HOLES = 8
MIN_HOLE_ROOM = 256


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class BlockRun:
    """One run of a tensor's blocks between ``BlockWriter.start_encoded`` and
    ``finish_encoded``: the ids known so far and the new blocks being encoded."""

    __slots__ = ("blocks", "digests", "dtype_code", "ids", "new", "chosen")

    def __init__(self, blocks: list, digests: list[bytes], dtype_code: int) -> None:
        self.blocks, self.digests, self.dtype_code = blocks, digests, dtype_code
        self.ids: list[int] = [0] * len(blocks)  # -1 - i: a copy of new block i of this run
        self.new: list[tuple[int, bytes, list[int]]] = []  # (index, hash key, usable references)
        self.chosen: codec.Chosen | None = None

    def choices(self) -> list[tuple[int, bytes | None, int, bytes]]:
        try:
            return self.chosen.results()
        except ValueError as exc:  # a reference's stored payload does not decode
            raise CorruptionError(f"a stored block does not decode ({exc}); nothing was stored: "
                                  "`tensorstore verify STORE` names the models that hold it") from None

    def cancel(self) -> None:
        """Drop the encoding not yet begun (the transaction is failing)."""
        if self.chosen is not None:
            self.chosen.cancel()


class _DirtyPage:
    """A page being changed in this transaction: its bytes and its record, mutable."""

    __slots__ = ("used", "live", "block_ids", "buffer", "dead")

    def __init__(self, record: PageRecord, buffer: bytearray) -> None:
        self.used = record.used
        self.live = record.live
        self.block_ids = list(record.block_ids)
        self.buffer = buffer
        self.dead: set[int] = set()

    def free_offset(self) -> int:
        return _aligned(self.used)


class BlockWriter:
    """References and places blocks within one LMDB write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, pages: PageFile, state: StoreState, domain: int = 0) -> None:
        self.txn = txn
        self.domain = domain  # new blocks are shared only within this dedup domain
        self.dbs = dbs
        self.pages = pages
        self.state = state
        self._blocks: dict[int, BlockRecord] = {}  # every block touched, as it now is
        # Records read and not (yet) changed: an add reads a found block's record to pick
        # its BLAKE3 check, then again to count the reference. Written at flush: none.
        self._read: dict[int, BlockRecord] = {}
        self._new_digests: dict[bytes, int] = {}
        self._indexed: dict[bytes, int | None] = {}  # what the committed index says of keys looked up
        self._removed: dict[int, BlockRecord] = {}
        self._dirty: dict[int, _DirtyPage] = {}  # pages loaded and not yet written back
        self._room: dict[int, int | None] = {}  # free room of each page written (None: freed)
        self._spare: list[bytearray] = []  # buffers of written pages, for reuse
        self._holes: list[int] = []  # pages left with room, kept to take small blocks
        self._hole_room = 0  # at least the largest room among the holes
        self._fresh: set[int] = set()  # pages created in this transaction: rewritable in place
        self._open = {page_id: room for page_id, room in state.open_pages}  # id -> free bytes
        self._min_open_room = pages.page_size // OPEN_ROOM_FRACTION
        self._current: int | None = None
        self._scratch = bytearray()  # where a block is copied to be hashed when no page has room
        # Content codes of the new blocks, written with them (``contentcodes``): ids from
        # here on are this transaction's.
        self._first_new_id = state.next_block_id
        self.code_log = contentcodes.CodeLog()

    # -- references -----------------------------------------------------------------

    def reference(self, data: memoryview, dtype_code: int) -> int:
        """Return the id of the block holding ``data``, storing it if it is new.

        The block is copied first and hashed from the copy: MurmurHash3 reads a block from
        memory at 2-2.5 GB/s but from the CPU cache at about 8 GB/s, and memcpy brings it
        there faster, so copy-then-hash takes half the time of hash-then-copy (22 ms against
        49 ms for 90.9 MB in 64 KiB blocks). The copy goes where the block will be placed if
        it is new and a page in memory has room, so a new block is copied once; a block found
        stored leaves its copy past the page's used bytes, which are zeroed when the page is
        written.
        """
        n = len(data)
        spot = self._room_for(n)
        if spot is not None:
            buffer, at = spot[1].buffer, spot[1].free_offset()
        else:  # no page in memory has room; moving on to another waits until the block is new
            if len(self._scratch) < n:
                self._scratch = bytearray(n)
            buffer, at = self._scratch, 0
        copy = memoryview(buffer)[at : at + n]
        copy[:] = data
        digest = block_digest(copy, dtype_code)
        key = hash_key(self.domain, digest)
        block_id = self._new_digests.get(key)
        if block_id is None:
            found = self.txn.get(key, db=self.dbs["hashes"])
            if found is not None:
                block_id = int.from_bytes(found, "big")
        if block_id is not None:
            self.reference_id(block_id)
            self._confirm(block_id, copy)  # after: it reads the record reference_id cached
            return block_id
        self.code_log.note(self.state.next_block_id, self.domain, dtype_code, copy)  # the id placing gives it
        if spot is not None:
            return self._place_at(spot[0], spot[1], at, n, dtype_code, digest, key)
        return self._place(copy, dtype_code, digest, key)

    def strongs_of_stored(self, blocks: list, digests: list[bytes]) -> list[bytes | None]:
        """The BLAKE3 digest of each block found already stored encoded (None for the
        others), for ``start_encoded`` to confirm them with: taken in one go on every core,
        so that an add of data the store holds hashes in one burst, not run by run."""
        hashed = []
        for i, (data, digest) in enumerate(zip(blocks, digests)):
            block_id = self._lookup(hash_key(self.domain, digest))
            if block_id is not None and self._has_strong(self.block(block_id)):
                hashed.append(i)
        out: list[bytes | None] = [None] * len(blocks)
        for i, strong in zip(hashed, threads.each(strong_digest, [blocks[i] for i in hashed])):
            out[i] = strong
        return out

    def start_encoded(
        self, blocks: list, digests: list[bytes], dtype_code: int, layout: codec.Layout, candidates: list[list[int]],
        strongs: list[bytes | None] | None = None,
    ) -> BlockRun:
        """Begin one run of a tensor's blocks: share the blocks found stored (confirmed on
        every core) and start encoding the new ones, in the smallest encoding
        (``codec.choose``), on the pool's threads; the caller places earlier runs meanwhile,
        and this one with ``finish_encoded``.

        ``digests`` are the blocks' content digests; ``candidates[i]`` the ids of stored
        blocks that block ``i`` may be a delta of (a delta's own reference stands in for
        it: a reference is never itself a delta); ``strongs`` the BLAKE3 digests that
        ``strongs_of_stored`` took of them, if it did.
        """
        run = BlockRun(blocks, digests, dtype_code)
        first: dict[bytes, int] = {}  # key -> the first new block with it, in this run
        found: list[tuple[int, object, bytes | None]] = []
        for i, (data, digest) in enumerate(zip(blocks, digests)):
            key = hash_key(self.domain, digest)
            block_id = self._lookup(key)
            if block_id is not None:
                self.reference_id(block_id)
                found.append((block_id, data, strongs[i] if strongs is not None else None))
                run.ids[i] = block_id
            elif key in first:
                if not same_bytes(blocks[first[key]], data):
                    raise HashCollisionError(_collision(f"block {first[key]} of this run"))
                run.ids[i] = -1 - first[key]
            else:
                first[key] = i
                run.new.append((i, key, self._references(candidates[i], len(data), dtype_code)))
        self._confirm_all(found)
        jobs = [codec.Job(blocks[i], [(self.stored_bytes(self.block(r)), self.block(r).encoding) for r in refs])
                for i, _, refs in run.new]
        run.chosen = codec.choosing(jobs, layout, strong_digest)  # BLAKE3 too, in the encoding threads
        return run

    def finish_encoded(self, run: BlockRun) -> list[int]:
        """Place the new blocks of a run ``start_encoded`` began and return the run's ids.

        A new block that a run finished after this one began stored meanwhile (the same
        bytes twice in one tensor, or in two) is shared, and its encoding dropped.
        """
        ids, blocks = run.ids, run.blocks
        coded: list[int] = []  # new blocks that are not deltas: content codes are made of them
        for (i, key, refs), (encoding, payload, which, strong) in zip(run.new, run.choices()):
            data = blocks[i]
            block_id = self._new_digests.get(key)
            if block_id is not None:
                self.reference_id(block_id)
                self._confirm(block_id, data, strong or None)
                ids[i] = block_id
                continue
            stored = data if encoding == codec.RAW else payload
            ref = refs[which] if encoding == codec.DELTA else 0
            ids[i] = self._place(stored, run.dtype_code, run.digests[i], key, len(data), encoding, ref, strong)
            if encoding != codec.DELTA:
                coded.append(i)
        self.code_log.note_many([ids[i] for i in coded], self.domain, run.dtype_code, [blocks[i] for i in coded],
                                [run.digests[i] for i in coded])
        for i, block_id in enumerate(ids):
            if block_id < 0:
                ids[i] = ids[-1 - block_id]
                self.reference_id(ids[i])
        return ids

    def _lookup(self, key: bytes) -> int | None:
        """The block with this ``hash_key``, stored in this transaction or before it."""
        block_id = self._new_digests.get(key)
        if block_id is None:
            # The index is written at flush alone, so what it says holds until then: an add
            # looks each key up twice (its parent's search, then its runs).
            try:
                return self._indexed[key]
            except KeyError:
                found = self.txn.get(key, db=self.dbs["hashes"])
                block_id = self._indexed[key] = None if found is None else int.from_bytes(found, "big")
        return block_id

    def _references(self, candidates: list[int], nbytes: int, dtype_code: int) -> list[int]:
        """The usable references among ``candidates``: live blocks of this domain, dtype
        and length, a delta replaced by its own reference."""
        out: list[int] = []
        for block_id in candidates:
            b = self.block(block_id)
            if b.ref:
                b = self.block(b.ref)
            if b.refs > 0 and b.nbytes == nbytes and b.dtype_code == dtype_code and b.domain == self.domain \
                    and b.block_id not in out:
                out.append(b.block_id)
        return out

    def _confirm(self, block_id: int, data, strong: bytes | None = None) -> None:
        """Raise ``HashCollisionError`` unless stored block ``block_id`` holds exactly
        ``data``. A MurmurHash3 match is not proof: colliding blocks can be constructed,
        and sharing one would hand another model's bytes to this one's users. A raw
        block's bytes are compared (memcmp against the mapped page); an encoded block's
        BLAKE3 digest is (``strong`` if already taken; a decode would cost more than the
        rest of the ingest), or, for a record that has none (format 2), its decoded bytes."""
        b = self.block(block_id)
        if b.encoding == codec.RAW:
            same = same_bytes(self.stored_view(b), data)
        elif b.strong:
            same = (strong or strong_digest(data)) == b.strong
        else:
            same = same_bytes(self._decoded(b), data)
        if not same:
            raise HashCollisionError(_collision(f"stored block {block_id}"))

    def _confirm_all(self, found: list[tuple[int, object, bytes | None]]) -> None:
        """``_confirm`` of each ``(block id, data, its BLAKE3 digest or None)``, the digests
        not given taken on every core: this thread takes its share too, so it lets go of the
        GIL throughout (a pool thread that needs the GIL between blocks waits up to 5 ms
        whenever this one runs Python)."""
        todo = [data for block_id, data, strong in found if strong is None and self._has_strong(self.block(block_id))]
        taken = iter(threads.each(strong_digest, todo))
        for block_id, data, strong in found:
            b = self.block(block_id)
            self._confirm(block_id, data, strong or (next(taken) if self._has_strong(b) else None))

    @staticmethod
    def _has_strong(b: BlockRecord) -> bool:
        """Whether ``_confirm`` checks ``b`` by its BLAKE3 digest (an encoded block)."""
        return b.encoding != codec.RAW and bool(b.strong)

    def _decoded(self, b: BlockRecord):
        ref = ref_payload = None
        if b.ref:
            r = self.block(b.ref)
            if r.encoding == codec.RAW:
                ref = self.stored_view(r)
            else:
                ref_payload = self.stored_view(r)
        return codec.decode(self.stored_view(b), b.nbytes, dtypes.layout_of_code(b.dtype_code), ref=ref,
                            ref_payload=ref_payload)

    def stored_view(self, b: BlockRecord) -> memoryview:
        """The bytes ``b`` keeps in its page, as this transaction sees them (a view)."""
        page = self._dirty.get(b.page_id)
        if page is not None:
            return memoryview(page.buffer)[b.offset : b.offset + b.stored]
        return self.pages.read(self.txn, b.page_id)[b.offset : b.offset + b.stored]

    def stored_bytes(self, b: BlockRecord) -> bytes:
        """A copy of the bytes ``b`` keeps in its page, as this transaction sees them."""
        return bytes(self.stored_view(b))

    def reference_id(self, block_id: int) -> None:
        """One more reference to a block already stored."""
        b = self.block(block_id)
        if b.refs == 0:  # released earlier in this transaction: bring it back
            self._revive(b)
        self._blocks[block_id] = _with_refs(b, b.refs + 1)
        self.state.blocks += 1

    def release(self, block_id: int) -> None:
        """Drop one model reference; a block with none left leaves its page."""
        self._drop(block_id)
        self.state.blocks -= 1

    def _hold(self, block_id: int) -> None:
        """One more reference that is not a model's: a delta block's on its reference."""
        b = self.block(block_id)
        if b.refs == 0:
            self._revive(b)
        self._blocks[block_id] = _with_refs(b, b.refs + 1)

    def _drop(self, block_id: int) -> None:
        b = self.block(block_id)
        if b.refs <= 0:
            raise CorruptionError(
                f"block {block_id} is released more often than it is referenced: its reference count is damaged; "
                "restore the store from a copy (`tensorstore verify --json` for details)"
            )
        b = _with_refs(b, b.refs - 1)
        self._blocks[block_id] = b
        if b.refs == 0:
            page = self._page(b.page_id)
            page.dead.add(block_id)
            page.live -= b.stored
            self._removed[block_id] = b
            self._count(b, -1)
            if b.ref:  # a delta gone: its reference may go too
                self._drop(b.ref)

    def _revive(self, b: BlockRecord) -> None:
        page = self._page(b.page_id)
        page.dead.discard(b.block_id)
        page.live += b.stored
        del self._removed[b.block_id]
        self._count(b, +1)
        if b.ref:
            self._hold(b.ref)

    def _count(self, b: BlockRecord, sign: int) -> None:
        self.state.unique_blocks += sign
        self.state.unique_bytes += sign * b.nbytes
        self.state.encoded_bytes += sign * b.stored
        self.state.encodings[b.encoding] += sign

    def block(self, block_id: int) -> BlockRecord:
        """The block's record as this transaction sees it."""
        b = self._blocks.get(block_id) or self._read.get(block_id)
        if b is None:
            value = self.txn.get(id_key(block_id), db=self.dbs["blocks"])
            if value is None:
                raise CorruptionError(f"block {block_id} is referenced but missing from the catalog")
            b = self._read[block_id] = decode_block(block_id, value)
        return b

    # -- placement ------------------------------------------------------------------

    def _place(self, data, dtype_code: int, digest: bytes, key: bytes, nbytes: int | None = None,
               encoding: int = codec.RAW, ref: int = 0, strong: bytes = b"") -> int:
        n = len(data)
        page_id, page = self._page_with_room(n)
        offset = page.free_offset()
        page.buffer[offset : offset + n] = data
        return self._place_at(page_id, page, offset, n, dtype_code, digest, key, nbytes, encoding, ref, strong)

    def _place_at(
        self, page_id: int, page: _DirtyPage, offset: int, n: int, dtype_code: int, digest: bytes, key: bytes,
        nbytes: int | None = None, encoding: int = codec.RAW, ref: int = 0, strong: bytes = b"",
    ) -> int:
        """Record a new block whose ``n`` stored bytes are already copied to ``page`` at
        ``offset``, its free offset; ``key`` is its ``hash_key``; ``nbytes`` its decoded
        length (``n`` for a raw block); a delta's reference ``ref`` gets one more reference."""
        block_id = self.state.next_block_id
        self.state.next_block_id += 1
        page.used = offset + n
        page.live += n
        page.block_ids.append(block_id)
        b = BlockRecord(block_id, page_id, offset, n if nbytes is None else nbytes, 1, dtype_code, self.domain, digest,
                        encoding, n, ref, strong)
        self._blocks[block_id] = b
        self._new_digests[key] = block_id
        self.state.blocks += 1
        self._count(b, +1)
        if ref:
            self._hold(ref)
        return block_id

    def _page_with_room(self, n: int) -> tuple[int, _DirtyPage]:
        """The page for an ``n``-byte block: a hole left earlier in this transaction that
        it fits (first fit), else the current page, else the next open or new page."""
        while True:
            spot = self._room_for(n)
            if spot is not None:
                return spot
            if self._current is not None:
                self._leave(self._current)
            self._current = self._take_open_page(n)
            if self._current is None:
                self._current = self._new_page()

    def _room_for(self, n: int) -> tuple[int, _DirtyPage] | None:
        """The page in memory an ``n``-byte block goes to, without moving on from any: a
        hole that it fits (first fit), else the current page if it fits; else None."""
        size = self.pages.page_size
        if n <= self._hole_room:
            for page_id in self._holes:
                page = self._dirty[page_id]
                if page.free_offset() + n <= size:
                    return page_id, page
            # No hole fits: remember the largest room so the next larger block skips them.
            self._hole_room = max((size - self._dirty[h].free_offset() for h in self._holes), default=0)
        if self._current is not None:
            page = self._dirty[self._current]
            if page.free_offset() + n <= size:
                return self._current, page
        return None

    def _take_open_page(self, n: int) -> int | None:
        """The first page on the open list with room for ``n`` bytes, loaded; or None."""
        for page_id, room in self._open.items():
            if room >= n:
                del self._open[page_id]
                self._page(page_id)
                return page_id
        return None

    def _leave(self, page_id: int) -> None:
        """Move on from a page: keep it as a hole for small blocks if it has room, else
        write it now, so that a large model holds a few pages in memory, not all."""
        self._current = None
        room = self.pages.page_size - self._dirty[page_id].free_offset()
        if room < MIN_HOLE_ROOM:
            self._write_back(page_id)
            return
        self._holes.append(page_id)
        self._hole_room = max(self._hole_room, room)
        if len(self._holes) > MAX_HOLES:
            self._write_back(self._holes.pop(0))

    def _new_page(self) -> int:
        page_id = self._allocate_page_id()
        self._dirty[page_id] = _DirtyPage(PageRecord(page_id, 0, 0, ()), self._buffer())
        return page_id

    def _buffer(self) -> bytearray:
        return self._spare.pop() if self._spare else self.pages.new_buffer()

    def _page(self, page_id: int) -> _DirtyPage:
        """The page as this transaction sees it, loaded into a writable buffer once."""
        page = self._dirty.get(page_id)
        if page is None:
            value = self.txn.get(id_key(page_id), db=self.dbs["pagemeta"])
            if value is None:
                raise CorruptionError(f"page {page_id} is referenced but has no catalog record")
            buffer = self._buffer()
            buffer[: self.pages.page_size] = self.pages.read(self.txn, page_id)
            page = self._dirty[page_id] = _DirtyPage(decode_page(page_id, value), buffer)
        return page

    # -- commit ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write every page, block and index entry still pending; update the open-page list."""
        txn, dbs = self.txn, self.dbs
        for page_id in list(self._dirty):
            self._write_back(page_id)
        for b in self._removed.values():
            txn.delete(b.key, db=dbs["hashes"])
            txn.delete(id_key(b.block_id), db=dbs["blocks"])
            del self._blocks[b.block_id]
        for key, block_id in self._new_digests.items():
            if block_id in self._blocks:
                txn.put(key, id_key(block_id), db=dbs["hashes"])
        for block_id, b in self._blocks.items():
            txn.put(id_key(block_id), encode_block(b), db=dbs["blocks"])
        self.code_log.flush(txn, dbs, self._first_new_id, self._blocks.keys(), list(self._removed.values()))
        open_ = dict(self._open)  # open pages this transaction did not touch
        for page_id, room in self._room.items():
            open_.pop(page_id, None)
            if room is not None and room >= self._min_open_room:
                open_[page_id] = room
        self.state.open_pages = sorted([page_id, room] for page_id, room in open_.items())

    def _write_back(self, page_id: int) -> None:
        """Write a page (compacted first if blocks left it) or free it if it is empty.

        Pages are immutable once committed: a committed page that changed is written under
        a new id and the old id deleted, so a page id names the same bytes forever and any
        cache, in this process or another, can hold pages without invalidation.
        """
        page = self._dirty.pop(page_id)
        if page.dead:
            self._compact(page)
        if page_id not in self._fresh:
            self.pages.delete(self.txn, page_id)
            self.txn.delete(id_key(page_id), db=self.dbs["pagemeta"])
            self._room[page_id] = None
            self.state.pages -= 1
        if page.block_ids:
            target = page_id if page_id in self._fresh else self._allocate_page_id()
            if target != page_id:
                for block_id in page.block_ids:
                    b = self.block(block_id)
                    self._blocks[block_id] = replace(b, page_id=target)
            record = PageRecord(target, page.used, page.live, tuple(page.block_ids))
            used = record.used
            page.buffer[used : self.pages.page_size] = bytes(self.pages.page_size - used)
            self.pages.write(self.txn, target, page.buffer)
            self.txn.put(id_key(target), encode_page(record), db=self.dbs["pagemeta"])
            self._room[target] = self.pages.page_size - _aligned(used)
        elif page_id in self._fresh:  # filled and emptied within this transaction
            self.pages.delete(self.txn, page_id)
            self.txn.delete(id_key(page_id), db=self.dbs["pagemeta"])
            self._room[page_id] = None
            self.state.pages -= 1
        self._spare.append(page.buffer)
        if self._current == page_id:
            self._current = None
        if page_id in self._holes:
            self._holes.remove(page_id)

    def _allocate_page_id(self) -> int:
        page_id = self.state.next_page_id
        self.state.next_page_id += 1
        self.state.pages += 1
        self._fresh.add(page_id)
        return page_id

    def _compact(self, page: _DirtyPage) -> None:
        """Slide the page's live blocks to its start, in their order."""
        old = bytes(page.buffer[: page.used])
        at, kept = 0, []
        for block_id in page.block_ids:
            if block_id in page.dead:
                continue
            b = self.block(block_id)
            at = _aligned(at)
            page.buffer[at : at + b.stored] = old[b.offset : b.offset + b.stored]
            if at != b.offset:
                self._blocks[block_id] = replace(b, offset=at)
            at += b.stored
            kept.append(block_id)
        page.used, page.block_ids = at, kept
        page.dead.clear()


def _collision(what: str) -> str:
    return (f"a block has the content digest of {what} but different bytes (a MurmurHash3 collision, which "
            "ordinary data does not produce): refused, nothing was stored")


def _with_refs(b: BlockRecord, refs: int) -> BlockRecord:
    # Every field by position: ``dataclasses.replace`` costs 10-18 us here, once per block
    # of every add, a tenth of the ingest of data already present.
    return BlockRecord(b.block_id, b.page_id, b.offset, b.nbytes, refs, b.dtype_code, b.domain, b.digest, b.encoding,
                       b.stored, b.ref, b.strong)
