"""The page file: fixed-size pages in LMDB, each carrying its own checksum.

A page is ``page_size`` bytes of payload keyed by its id. The stored value is the payload
followed by its 8-byte XXH3 checksum, so a read can verify a page with nothing but the
page; a flipped byte anywhere in the payload or the checksum is caught. XXH3 rather than
the MurmurHash3 of block identity because every read pays for it: 16.8 GB/s here against
MurmurHash3's 3.7 (``docs/benchmarks.md``, Checksums).
This module knows pages and nothing of the blocks inside them.
"""

from __future__ import annotations

import struct

import lmdb
import xxhash

from .errors import CorruptionError

CHECKSUM_BYTES = 8
_KEY = struct.Struct(">Q")  # big-endian, so LMDB's key order is page-id order


def page_key(page_id: int) -> bytes:
    return _KEY.pack(page_id)


def page_id_of(key: bytes) -> int:
    return _KEY.unpack(key)[0]


class PageFile:
    """Reads and writes pages in the ``pages`` database of an LMDB environment."""

    def __init__(self, db, page_size: int, verified: set[int] | None = None) -> None:
        self.db = db
        self.page_size = page_size
        self.value_bytes = page_size + CHECKSUM_BYTES
        # Page ids verified by this process. A page id names the same bytes forever (a
        # changed page gets a new id), so a page is checked the first time the process
        # reads it, which is when it comes off the disk, and not on every warm read.
        self.verified = verified if verified is not None else set()

    def read(self, txn: lmdb.Transaction, page_id: int, *, verify: bool = True, recheck: bool = False) -> memoryview:
        """Return the page's payload (a zero-copy view valid while ``txn`` lives).

        Raises ``CorruptionError`` when the page is missing, of the wrong length, or
        (with ``verify``) its checksum does not match. A page this process verified before
        is not checked again unless ``recheck``.
        """
        value = txn.get(page_key(page_id), db=self.db)
        if value is None:
            raise CorruptionError(f"page {page_id} is referenced but missing from the page file")
        value = memoryview(value)
        if len(value) != self.value_bytes:
            raise CorruptionError(f"page {page_id} is {len(value)} bytes, expected {self.value_bytes}")
        payload = value[: self.page_size]
        if verify and (recheck or page_id not in self.verified):
            if xxhash.xxh3_64_digest(payload) != value[self.page_size :]:
                raise CorruptionError(f"page {page_id} failed its checksum")
            self.verified.add(page_id)
        return payload

    def new_buffer(self) -> bytearray:
        """A zeroed buffer for one page: the payload, then room for its checksum."""
        return bytearray(self.value_bytes)

    def write(self, txn: lmdb.Transaction, page_id: int, buffer: bytearray) -> None:
        """Seal ``buffer`` (from ``new_buffer``) with its checksum and store it as ``page_id``."""
        if len(buffer) != self.value_bytes:
            raise ValueError(f"a page buffer must be {self.value_bytes} bytes, got {len(buffer)}")
        view = memoryview(buffer)
        view[self.page_size :] = xxhash.xxh3_64_digest(view[: self.page_size])
        txn.put(page_key(page_id), buffer, db=self.db)

    def delete(self, txn: lmdb.Transaction, page_id: int) -> None:
        txn.delete(page_key(page_id), db=self.db)

    def ids(self, txn: lmdb.Transaction) -> list[int]:
        """Every page id present, in order."""
        with txn.cursor(db=self.db) as cur:
            return [page_id_of(bytes(k)) for k in cur.iternext(keys=True, values=False)]
