"""The LMDB environment under a store: opening, transactions, map growth, errors.

Everything a store keeps lives in one LMDB environment (one directory, ``data.mdb`` and
``lock.mdb``), so one write transaction covers every change of one operation: a crash at
any instant leaves the store as it was before the operation or as it is after, never
between. This module knows transactions and nothing of what is stored in them.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

import lmdb

from .errors import CorruptionError, NotAStoreError, ReadOnlyError, StoreError, StoreFullError

T = TypeVar("T")

DATA_FILE = "data.mdb"
DB_NAMES = ("meta", "models", "blocks", "hashes", "pages", "pagemeta", "replacements")
# Databases a store made before they existed lacks: created on the first read-write open;
# a read-only handle of such a store sees them as absent (``dbs`` has no key for them).
OPTIONAL_DB_NAMES = ("files",)
_MIN_MAP = 256 << 20
_MIN_LMDB_PAGE = 4096  # a data file shorter than its two meta pages is no LMDB file
_MAX_GROW_ATTEMPTS = 16


class Environment:
    """One LMDB environment with the store's named databases.

    Parameters
    ----------
    path : Path
        The store's directory.
    readonly : bool
        Open without write access; every write raises ``ReadOnlyError``.
    create : bool
        Create the directory's LMDB files if missing.
    """

    def __init__(self, path: Path, *, readonly: bool, create: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        data = self.path / DATA_FILE
        size = data.stat().st_size if data.exists() else 0
        if data.exists() and size < 2 * _MIN_LMDB_PAGE:
            raise NotAStoreError(f"{data} is {size} bytes: too short to hold a store (empty or cut)")
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=max(_MIN_MAP, 2 * size),
                max_dbs=len(DB_NAMES) + len(OPTIONAL_DB_NAMES),
                readonly=readonly,
                create=create,
                # Many readers and one writer across processes: LMDB's own reader table.
                lock=True,
                max_readers=512,
                # Pages are large values read whole; kernel readahead helps, not hurts.
                readahead=True,
            )
        except lmdb.Error as exc:
            if isinstance(exc, (lmdb.InvalidError, lmdb.VersionMismatchError)):
                raise NotAStoreError(f"{data} is not an LMDB data file ({exc})") from exc
            if isinstance(exc, lmdb.ReadonlyError) or _errno_of(exc) in (errno.EACCES, errno.EROFS):
                raise ReadOnlyError(f"cannot open the store at {self.path} for writing ({exc}); open it with mode 'r'") from exc
            raise _translate(exc, f"cannot open the store at {self.path}") from exc
        # LMDB maps the file and trusts it to be as long as its meta page says: a cut file
        # would kill the process with SIGBUS on the first read past its end.
        info, psize = self.env.info(), self.env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        if size and size < needed:
            self.env.close()
            raise CorruptionError(f"{data} is cut short: {size} bytes, but its pages run to {needed}; restore it from a copy")
        # Slots of reader processes that died inside a read transaction pin old pages and
        # stop LMDB from reusing space; clear them now and before each write.
        self.env.reader_check()
        self._write_lock = threading.Lock()
        self.verified_pages: set[int] = set()  # see PageFile.verified
        self.live_views = 0  # zero-copy views handed out by readers and still referenced
        try:
            # On a read-only environment open_db uses a read transaction of its own; handles
            # opened in a transaction we pass in do not outlive it.
            self.dbs = {n: self.env.open_db(n.encode(), create=not readonly) for n in DB_NAMES}
            for n in OPTIONAL_DB_NAMES:
                try:
                    self.dbs[n] = self.env.open_db(n.encode(), create=not readonly)
                except lmdb.NotFoundError:
                    pass
        except lmdb.Error as exc:
            self.env.close()
            raise NotAStoreError(f"{self.path} is an LMDB environment without the store's databases: {exc}") from exc

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only snapshot; values are zero-copy buffers valid inside the block."""
        try:
            txn = self.env.begin(buffers=True)
        except lmdb.MapResizedError:  # another process grew the map: adopt its size
            self.env.set_mapsize(0)
            txn = self.env.begin(buffers=True)
        try:
            yield txn
        finally:
            txn.abort()

    def write(self, fn: Callable[[lmdb.Transaction], T], *, expect_bytes: int = 0) -> T:
        """Run ``fn(txn)`` in one write transaction and commit it; return what it returns.

        ``fn`` must change nothing outside the transaction: when the map is full the
        transaction is aborted, the map grown, and ``fn`` run again from the start.
        ``expect_bytes`` (what the operation will write, about) grows the map beforehand
        so that a large add rarely has to run twice.
        """
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path} is open read-only; open it with mode 'r+' or 'a' to change it")
        with self._write_lock:
            self.env.reader_check()
            if expect_bytes:
                self._ensure_room(expect_bytes)
            for _ in range(_MAX_GROW_ATTEMPTS):
                try:
                    with self.env.begin(write=True, buffers=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._grow(self.env.info()["map_size"])
                except lmdb.MapResizedError:
                    self.env.set_mapsize(0)
                except lmdb.Error as exc:
                    if _errno_of(exc) == errno.EIO and self._disk_nearly_full(expect_bytes):
                        # A full disk reaches LMDB as a short write, which it reports as EIO.
                        raise StoreFullError(f"the disk under {self.path} is full; the store was left as it was") from exc
                    raise _translate(exc, f"writing to the store at {self.path} failed") from exc
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise StoreFullError(f"the disk under {self.path} is full; the store was left as it was") from exc
                    raise
            raise StoreFullError(f"the store at {self.path} could not grow its map after {_MAX_GROW_ATTEMPTS} attempts")

    def _disk_nearly_full(self, expect_bytes: int) -> bool:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize < max(expect_bytes, 1 << 20) + (16 << 20)

    def _ensure_room(self, expect_bytes: int) -> None:
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        if used + 2 * expect_bytes > info["map_size"]:
            self._grow(used + 2 * expect_bytes)

    def _grow(self, at_least: int) -> None:
        current = self.env.info()["map_size"]
        self.env.set_mapsize(max(2 * current, at_least + _MIN_MAP))

    # -- facts ----------------------------------------------------------------------

    def file_bytes(self) -> int:
        """Bytes of the data file (its length, not the map's reservation)."""
        return os.stat(self.path / DATA_FILE).st_size

    def close(self) -> None:
        """Release this user of the environment; the last one closes it."""
        with _shared_lock:
            self._users -= 1
            if self._users == 0:
                _shared.pop(self._key, None)
                self.env.close()


# LMDB allows an environment to be open once per process, so handles on one store share it.
_shared: dict[Path, Environment] = {}
_shared_lock = threading.Lock()


def acquire(path: Path, *, readonly: bool, create: bool = False) -> Environment:
    """The process's environment for ``path``, opened on first use and shared after."""
    key = Path(path).resolve()
    with _shared_lock:
        env = _shared.get(key)
        if env is None:
            env = Environment(path, readonly=readonly, create=create)
            env._key, env._users = key, 0
            _shared[key] = env
        elif env.readonly and not readonly:
            raise ReadOnlyError(
                f"{path} is open read-only elsewhere in this process; close those handles before opening it for writing"
            )
        env._users += 1
        return env


def is_open(path: Path) -> bool:
    """Whether this process holds the store at ``path`` open."""
    return Path(path).resolve() in _shared


def _errno_of(exc: lmdb.Error) -> int | None:
    """The errno an LMDB error carries (py-lmdb puts it in the message, e.g. "...: Input/output error")."""
    for code in (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
        if os.strerror(code) in str(exc):
            return code
    return None


def _translate(exc: lmdb.Error, doing: str) -> StoreError:
    """Map an LMDB error to the store's error that means the same."""
    if isinstance(exc, lmdb.DiskError):
        return StoreFullError(f"{doing}: the disk is full; the store was left as it was")
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError, lmdb.InvalidError, lmdb.VersionMismatchError)):
        return CorruptionError(f"{doing}: the LMDB file is damaged or not an LMDB file ({exc})")
    if isinstance(exc, lmdb.ReadonlyError):
        return ReadOnlyError(f"{doing}: the store is read-only ({exc})")
    return StoreError(f"{doing}: {exc}")
