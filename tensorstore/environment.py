"""The LMDB environment under a store: opening, transactions, map growth, errors.

Everything a store keeps lives in one LMDB environment (one directory, ``data.mdb`` and
``lock.mdb``), so one write transaction covers every change of one operation: a crash at
any instant leaves the store as it was before the operation or as it is after, never
between. This module knows transactions and nothing of what is stored in them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

import lmdb

from .errors import CorruptionError, NotAStoreError, ReadOnlyError, StoreError, StoreFullError

T = TypeVar("T")

DATA_FILE = "data.mdb"
DB_NAMES = ("meta", "models", "blocks", "hashes", "pages", "pagemeta", "replacements")
# The map LMDB reserves at open. It is address space, not disk (the data file grows only
# as pages are written), and growing it later means remapping: every zero-copy view and
# read snapshot of the process would then point into unmapped memory (SIGBUS). So a
# 64-bit process reserves 1 TiB up front, and the map grows only past that, only while
# nothing in the process points into it (see Environment._can_remap).
_MIN_MAP = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)
_SMALLEST_MAP = 64 << 20  # the reservation halves down to this when address space is limited
# Databases a store made before they existed lacks: created on the first read-write open;
# a read-only handle of such a store sees them as absent (``dbs`` has no key for them).
OPTIONAL_DB_NAMES = ("files", "contentcodes", "contentindex")
# LMDB flags of databases that are not plain key -> value maps (they must be given at every
# open): the content-code index keeps many fixed-size entries under one key
# (:mod:`tensorstore.contentcodes`).
DB_FLAGS = {"contentindex": {"dupsort": True, "dupfixed": True}}
_MIN_LMDB_PAGE = 4096  # a data file shorter than its two meta pages is no LMDB file
_MAX_GROW_ATTEMPTS = 16
_CREATING_WAIT = 10.0  # seconds to wait for another process to finish creating a store


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
        size = _settled_size(data)
        if data.exists() and size < 2 * _MIN_LMDB_PAGE:
            raise NotAStoreError(
                f"{data} is {size} bytes: too short to hold a store (empty or cut); "
                "restore it from a copy, or remove the directory to start anew"
            )
        self.env = self._open_lmdb(data, size, readonly, create)
        # LMDB maps the file and trusts it to be as long as its meta page says: a cut file
        # would kill the process with SIGBUS on the first read past its end.
        info, psize = self.env.info(), self.env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        if size and size < needed:
            # Another process may have committed between the first look and LMDB's reading
            # of the meta page; a commit writes its pages before its meta page, so a second
            # look sees them (seen on tmpfs, where commits take microseconds).
            size = data.stat().st_size
        if size and size < needed:
            self.env.close()
            raise CorruptionError(f"{data} is cut short: {size} bytes, but its pages run to {needed}; restore it from a copy")
        # Slots of reader processes that died inside a read transaction pin old pages and
        # stop LMDB from reusing space; clear them now and before each write.
        self.env.reader_check()
        self._write_lock = threading.Lock()
        self._current = threading.local()  # this thread's open write transaction, if any
        # Guards remapping against snapshots being begun: a remap needs none alive.
        self._map_lock = threading.RLock()  # re-entrant: a view's finalizer may end a snapshot inside
        self.snapshots = 0  # read transactions of this process now alive (see _can_remap)
        self.verified_pages: set[int] = set()  # see PageFile.verified
        self.live_views = 0  # zero-copy views handed out by readers and still referenced
        for attempt in range(2):
            try:
                self.dbs = self._open_dbs(readonly)
                break
            except lmdb.MapResizedError:
                # Another process grew the map past ours while we opened. Nothing of this
                # process points into the map yet: adopting the new size is safe.
                if attempt:
                    self.env.close()
                    raise StoreError(f"the store at {self.path} keeps growing its map while opening; try again") from None
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                self.env.close()
                if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadValsizeError)):
                    raise CorruptionError(
                        f"{data} is damaged: its database directory cannot be read ({exc}); restore it from a copy"
                    ) from exc
                raise NotAStoreError(f"{self.path} is an LMDB environment without the store's databases: {exc}") from exc

    def _open_dbs(self, readonly: bool) -> dict:
        """The named databases' handles, created where missing (read-write)."""
        if readonly:
            # open_db uses a read transaction of its own; handles opened in a read
            # transaction we pass in would not outlive it.
            dbs = {n: self.env.open_db(n.encode(), create=False) for n in DB_NAMES}
            for n in OPTIONAL_DB_NAMES:
                try:
                    dbs[n] = self.env.open_db(n.encode(), create=False, **DB_FLAGS.get(n, {}))
                except lmdb.NotFoundError:
                    pass
            return dbs
        # All in one write transaction: without one, open_db commits (and syncs) once per
        # database, eight commits for a new store. Handles opened in a write transaction
        # stay valid once it commits; if it aborts, none was created and none is kept.
        with self.env.begin(write=True) as txn:
            return {n: self.env.open_db(n.encode(), txn=txn, create=True, **DB_FLAGS.get(n, {}))
                    for n in DB_NAMES + OPTIONAL_DB_NAMES}

    def _open_lmdb(self, data: Path, size: int, readonly: bool, create: bool) -> lmdb.Environment:
        reserve = max(_MIN_MAP, 2 * size)
        while True:
            try:
                return lmdb.open(
                    str(self.path),
                    map_size=reserve,
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
                if _errno_of(exc) == errno.ENOMEM and reserve // 2 >= max(_SMALLEST_MAP, 2 * size):
                    reserve //= 2  # limited address space (ulimit -v): reserve less, grow later
                    continue
                version_word = isinstance(exc, lmdb.VersionMismatchError) or "is not supported" in str(exc)
                if version_word or (
                    isinstance(exc, lmdb.InvalidError) and size >= 2 * _MIN_LMDB_PAGE and _has_lmdb_magic(data)
                ):
                    # LMDB names a damaged meta page by the version byte it finds there
                    # ("format v254 not supported"): it is damage, not a version problem.
                    raise CorruptionError(
                        f"{data} is damaged: its LMDB header pages cannot be read ({exc}); restore it from a copy"
                    ) from exc
                if isinstance(exc, lmdb.InvalidError):
                    raise NotAStoreError(f"{data} is not an LMDB data file ({exc})") from exc
                if isinstance(exc, lmdb.ReadonlyError) or _errno_of(exc) in (errno.EACCES, errno.EROFS):
                    raise ReadOnlyError(
                        f"cannot open the store at {self.path} for writing ({exc}); open it with mode 'r'"
                    ) from exc
                raise _translate(exc, f"cannot open the store at {self.path}") from exc

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only snapshot; values are zero-copy buffers valid inside the block."""
        txn = self.begin_snapshot()
        try:
            yield txn
        finally:
            self.end_snapshot(txn)

    def begin_snapshot(self) -> lmdb.Transaction:
        """Begin a read transaction that the caller ends with :meth:`end_snapshot`.

        While it lives the map is never remapped in this process (its buffers stay valid).
        """
        with self._map_lock:
            try:
                txn = self.env.begin(buffers=True)
            except lmdb.MapResizedError:
                # Another process grew the map past this process's reservation. Adopting
                # the new size remaps, which is safe only when nothing points into the map.
                self._remap_or_refuse("another process grew the store past this process's map")
                txn = self.env.begin(buffers=True)
            self.snapshots += 1
        return txn

    def end_snapshot(self, txn: lmdb.Transaction) -> None:
        """End a snapshot from :meth:`begin_snapshot`."""
        txn.abort()
        with self._map_lock:
            self.snapshots -= 1

    def _can_remap(self) -> bool:
        # Remapping moves the map: buffers of live snapshots and zero-copy views would
        # point into unmapped memory, and the next read of one kills the process.
        return self.snapshots == 0 and self.live_views == 0

    def _remap_or_refuse(self, why: str, at_least: int = 0) -> None:
        """Remap (adopt the size another process set, or grow to ``at_least``), or raise
        a clear error when views or snapshots of this process are alive."""
        if not self._can_remap():
            raise StoreFullError(
                f"{why}, and the map cannot be remapped while {self.live_views} zero-copy view(s) and "
                f"{self.snapshots} read snapshot(s) of this process point into it; release them "
                "(or copy them with np.array) and try again; the store was left as it was"
            )
        if at_least:
            self.env.set_mapsize(at_least)
        else:
            self.env.set_mapsize(0)

    def write(self, fn: Callable[[lmdb.Transaction], T], *, expect_bytes: int = 0) -> T:
        """Run ``fn(txn)`` in one write transaction and commit it; return what it returns.

        ``fn`` must change nothing outside the transaction: when the map is full the
        transaction is aborted, the map grown, and ``fn`` run again from the start.
        Writes ``fn`` makes through other calls (``store.add_model`` inside ``fn``) join
        this transaction: several operations commit as one.
        ``expect_bytes`` (what the operation will write, about) grows the map beforehand
        so that a large add rarely has to run twice.
        """
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path} is open read-only; open it with mode 'r+' or 'a' to change it")
        outer = getattr(self._current, "txn", None)
        if outer is not None:
            # Called from inside another write of this thread: part of that transaction,
            # committed (or aborted, or run again after a map growth) with it.
            return fn(outer)
        with self._write_lock:
            self.env.reader_check()
            if expect_bytes:
                self._ensure_room(expect_bytes)
            for _ in range(_MAX_GROW_ATTEMPTS):
                try:
                    with self.env.begin(write=True, buffers=True) as txn:
                        self._current.txn = txn
                        try:
                            return fn(txn)
                        finally:
                            self._current.txn = None
                except lmdb.MapFullError:
                    self._grow(self.env.info()["map_size"])
                except lmdb.MapResizedError:
                    with self._map_lock:
                        self._remap_or_refuse("another process grew the store past this process's map")
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
            with self._map_lock:
                if self._can_remap():  # else: a hint only; a full map is handled in write()
                    self._grow_locked(used + 2 * expect_bytes)

    def _grow(self, at_least: int) -> None:
        with self._map_lock:
            current = self.env.info()["map_size"]
            self._remap_or_refuse(
                f"the store at {self.path} filled its map of {current >> 20} MiB",
                max(2 * current, at_least + min(_MIN_MAP, current)),
            )

    def _grow_locked(self, at_least: int) -> None:
        current = self.env.info()["map_size"]
        self.env.set_mapsize(max(2 * current, at_least + min(_MIN_MAP, current)))

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


@contextmanager
def opening(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the store directory's open lock: exclusive while a store is created (or
    replaced), shared while one is opened.

    Without it a process opening a store another process is creating finds an empty data
    file, or an LMDB file without the store's format record yet, and takes a new store for
    a damaged one. Opening takes microseconds; only creation makes others wait.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield  # no directory yet, or none we may read: nothing to serialise against
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # drops the lock


def other_users(path: Path) -> list[int]:
    """Process ids (other than this one) that have the store at ``path`` open now.

    Every process with an LMDB environment open holds a shared lock on the first byte of
    its ``lock.mdb`` for as long as it is open (LMDB's own test for "first user"); asking
    the kernel who would block an exclusive lock there names one of them. LMDB's reader
    table adds those holding a read snapshot. Call only while this process does not have
    the store open (closing a descriptor of ``lock.mdb`` drops this process's locks on it).
    """
    pids: set[int] = set()
    try:
        fd = os.open(path / "lock.mdb", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        fd = None
    if fd is not None:
        try:
            probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
            l_type, _, _, _, l_pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, probe))
            if l_type != fcntl.F_UNLCK and l_pid > 0:
                pids.add(l_pid)
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=len(DB_NAMES), map_size=_SMALLEST_MAP)
    except lmdb.Error:
        env = None
    if env is not None:
        try:
            env.reader_check()
            for line in env.readers().splitlines()[1:]:
                cols = line.split()
                if cols and cols[0].isdigit():
                    pids.add(int(cols[0]))
        finally:
            env.close()
    pids.discard(os.getpid())
    alive = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


def is_open(path: Path) -> bool:
    """Whether this process holds the store at ``path`` open."""
    return Path(path).resolve() in _shared


def _settled_size(data: Path) -> int:
    """The data file's size, once a process creating it right now has written its header.

    LMDB creates ``data.mdb`` empty and writes its two meta pages a moment later; another
    process opening the store in between must not take the empty file for a cut one. A
    creator holds LMDB's lock file exclusively until its header is written, so a shared
    lock on it waits for exactly that.
    """
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return 0
    if size >= 2 * _MIN_LMDB_PAGE:
        return size
    deadline = time.monotonic() + _CREATING_WAIT
    lock = data.parent / "lock.mdb"
    while time.monotonic() < deadline:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            break
        try:
            # An OFD lock: unlike a POSIX lock it is not dropped when LMDB, in this process,
            # closes its own descriptor of the same file.
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 1, 0))
        except OSError:
            pass
        finally:
            os.close(fd)
        size = data.stat().st_size if data.exists() else 0
        if size >= 2 * _MIN_LMDB_PAGE:
            return size
        time.sleep(0.01)
    return size


_FLOCK = struct.Struct("hh4xqqi4x")  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid
_LMDB_MAGIC = 0xBEEFC0DE


def _has_lmdb_magic(data: Path) -> bool:
    """Whether either meta page of ``data`` carries LMDB's magic number: an LMDB file, damaged."""
    try:
        with open(data, "rb") as f:
            head = f.read(2 * _MIN_LMDB_PAGE)
    except OSError:
        return False
    magic = _LMDB_MAGIC.to_bytes(4, "little")
    # The meta record follows the 16-byte page header of page 0 and of page 1 (whatever the
    # page size, LMDB's first meta page starts at 0; the second one at the page size).
    return head[16:20] == magic or any(head[p + 16 : p + 20] == magic for p in (4096,))


def _errno_of(exc: lmdb.Error) -> int | None:
    """The errno an LMDB error carries (py-lmdb puts it in the message, e.g. "...: Input/output error")."""
    for code in (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.ENOMEM):
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
