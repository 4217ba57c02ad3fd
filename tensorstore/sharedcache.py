"""Assembled tensors in shared memory, mapped read-only by every process that loads them.

A tensor whose bytes are spread over several pages has to be assembled before it can be
used; with a shared cache, the first process to assemble it writes it once into a file in
a memory filesystem (``/dev/shm`` by default) and every process maps that file instead of
assembling its own copy. The cache directory holds:

``<key>.t``
    One tensor's bytes, named by its content key: a hash of the dedup domain, the dtype,
    the shape and the content digests of its blocks as stored. Equal tensors of different
    models are one file; a tensor of one dedup domain never serves another domain. The
    bytes are followed by their XXH3-64 checksum (8 bytes), checked when a process first
    maps the file (and on every load when the reader's ``verify`` is ``"always"``); a file
    that fails it is assembled again from the store's pages and replaces it.
``<key>.m``
    A model's manifest: the content keys of its tensors, so that a process finding a model
    here reads nothing of the store but the model's catalog record.
``refs``
    An empty file whose byte-range locks are the reference counts (see below).
``tmp-<pid>-<n>``
    A tensor being written; renamed into place once complete, so no process ever maps a
    partly written tensor. Its writer holds a lock on it while it lives: only the file of
    a writer that died is reaped.

Reference counts are Linux open-file-description (OFD) locks: a process that maps tensor
``K`` holds a shared lock on one byte of ``refs`` chosen by ``K``. Deleting ``K`` needs an
exclusive lock on that byte, which is granted only while no process holds ``K``. The kernel
drops a process's locks when it exits, however it exits, so a killed process's references
are reclaimed with no bookkeeping and no scan of process tables.

Reclaim: a tensor no process holds stays for ``keep_alive`` seconds after its last use (a
process that comes back soon maps it instead of assembling it); past that, or when the
cache would exceed its byte budget, unheld tensors are deleted least recently used first.
Tensors in use are never deleted; when the budget is all in use, loads fall back to a
private copy rather than fail.

Who may read: the directory and its files take the store's permission bits (directory
mode from the store's directory, file mode from its data file), so only users who can
read the store can read its cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import time
import weakref

import xxhash
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import SharedCacheError

DEFAULT_KEEP_ALIVE = 300.0  # seconds an unused tensor stays for the next process
DEFAULT_SHARE = 0.25  # of the cache filesystem's size, when no budget is given
SHM_ROOT = Path("/dev/shm")
_SUFFIX = ".t"
_MANIFEST = ".m"
_MANIFEST_MAGIC = b"TSM1"
_REFS = "refs"
_CHECK_BYTES = 8  # a tensor file ends with the XXH3-64 of its bytes
_TOUCH_EVERY = 1.0  # seconds: recency finer than this is not worth a syscall per load
_STALE_TMP = 60.0  # seconds after which a dead process's half-written tensor is removed

# struct flock on Linux (x86-64, aarch64): l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = struct.Struct("hh4xqqi4x")
_PUBLISHING = 1 << 56  # lock bytes from here on say "being assembled"; below, "in use"


@dataclass(frozen=True, slots=True)
class SharedCacheStats:
    """What one process's handle on a shared cache has done, and what it maps now.

    Attributes
    ----------
    hits, misses
        Tensor requests served by mapping a cached file / by assembling and publishing it.
    fallbacks
        Requests served with a private copy because the cache had no room (all in use) or
        could not be written.
    mapped_tensors, mapped_bytes
        Distinct tensors (and their bytes) this process maps from the cache now.
    published_bytes
        Bytes this process wrote into the cache.
    reclaimed
        Unused tensors this process deleted (expired, or to make room).
    damaged
        Cached files that failed their checksum here, and were assembled again.
    cache_bytes, max_bytes
        Bytes of all tensors in the cache at this process's last scan, and the budget.
    """

    hits: int
    misses: int
    fallbacks: int
    mapped_tensors: int
    mapped_bytes: int
    published_bytes: int
    reclaimed: int
    damaged: int
    cache_bytes: int
    max_bytes: int


class SharedCache:
    """One process's handle on a shared tensor cache directory.

    Parameters
    ----------
    directory : Path
        The cache directory; created with ``dir_mode`` if missing.
    max_bytes : int
        Budget for all cached tensors (all processes together).
    keep_alive : float
        Seconds an unused tensor is kept after its last use.
    dir_mode, file_mode : int
        Permission bits for the directory and the files (the store's).
    """

    def __init__(self, directory: Path, max_bytes: int, keep_alive: float, dir_mode: int, file_mode: int) -> None:
        if not hasattr(fcntl, "F_OFD_SETLK"):
            raise SharedCacheError("the shared tensor cache needs Linux (open file description locks)")
        self.directory = Path(directory)
        self._root = str(self.directory)
        self.max_bytes = int(max_bytes)
        self.keep_alive = float(keep_alive)
        self._file_mode = file_mode
        self._open_directory(dir_mode)
        refs = self.directory / _REFS
        try:
            fd = os.open(refs, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode)
            self.writable = True
        except PermissionError:
            try:
                fd = os.open(refs, os.O_RDONLY | os.O_CLOEXEC)  # may read and hold, not delete
            except OSError as exc:
                raise SharedCacheError(f"cannot use the shared cache {self.directory}: {exc.strerror}") from None
            self.writable = False
        self._refs = fd  # holds this process's shared locks
        self._probe = os.open(refs, (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC)  # a second OFD, to test for holders
        # Re-entrant: a mapping's finalizer may run inside this thread's own call.
        self._lock = threading.RLock()
        self._held: dict[bytes, tuple[weakref.ref, int, int]] = {}  # key -> (mapping, bytes, token)
        self._token = 0
        self._counts = dict(hits=0, misses=0, fallbacks=0, published_bytes=0, reclaimed=0, damaged=0)
        self._checked: set[tuple[bytes, int]] = set()  # (key, inode) of files whose checksum passed here
        self._estimate: int | None = None  # bytes cached, as of the last scan; None: not scanned yet
        self._last_sweep = time.time()  # opening stays cheap: the first sweep is due later
        self._closed = False

    def _open_directory(self, dir_mode: int) -> None:
        d = self.directory
        if not d.exists():
            try:
                d.mkdir(parents=True)
                os.chmod(d, dir_mode)  # mkdir's mode is cut by the umask; the store's bits apply
            except FileExistsError:
                pass  # another process created it first
            except OSError as exc:
                raise SharedCacheError(f"cannot create the shared cache directory {d}: {exc.strerror}") from None
        st = d.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise SharedCacheError(f"the shared cache path {d} exists and is not a directory")
        wider = stat.S_IMODE(st.st_mode) & ~dir_mode & 0o077
        if wider:
            raise SharedCacheError(
                f"the shared cache directory {d} (mode {stat.S_IMODE(st.st_mode):o}) lets others in "
                f"that the store's directory (mode {dir_mode:o}) does not; remove it or tighten its permissions"
            )

    # -- the two verbs a reader uses -----------------------------------------------------

    def acquire(self, key: bytes, nbytes: int, fill: Callable[[memoryview], None], *,
                recheck: bool = False) -> mmap.mmap | None:
        """Map tensor ``key`` read-only, publishing it with ``fill(buffer)`` on a miss.

        The tensor is the mapping's first ``nbytes`` (its checksum follows). The process
        holds its reference for as long as the returned mapping lives, that is, until the
        last array that reads it is gone. Returns None when the tensor cannot be cached
        (no room, nowhere to write); the caller then makes a private copy. A file's
        checksum is checked when this process first maps it, and with ``recheck`` on
        every call.
        """
        with self._lock:
            if self._closed:
                raise SharedCacheError(f"the shared cache handle on {self.directory} is closed")
            ref = self._held.get(key)
            buffer = ref[0]() if ref is not None else None
            if buffer is not None and (not recheck or _intact(buffer, nbytes)):
                self._counts["hits"] += 1
                return buffer
            damaged = buffer is not None
            if damaged:  # changed since it was mapped: map or publish it anew
                del self._held[key]
                self._set_lock(self._refs, key, fcntl.F_UNLCK)
            if time.time() - self._last_sweep > self.keep_alive / 2:
                self._reclaim_locked(0)
            self._set_lock(self._refs, key, fcntl.F_RDLCK, wait=True)
            try:
                buffer, outcome, seen = self._obtain(key, nbytes, fill, recheck)
            except BaseException:
                self._set_lock(self._refs, key, fcntl.F_UNLCK)
                raise
            self._counts[outcome] += 1
            self._counts["damaged"] += damaged or seen
            if buffer is None:
                self._set_lock(self._refs, key, fcntl.F_UNLCK)
                return None
            self._token += 1
            self._held[key] = (weakref.ref(buffer), nbytes, self._token)
            weakref.finalize(buffer, self._released, key, self._token)
            return buffer

    def _obtain(self, key: bytes, nbytes: int, fill: Callable[[memoryview], None],
                recheck: bool) -> tuple[mmap.mmap | None, str, bool]:
        """The mapping, how it was had (hits, misses, fallbacks), and whether a damaged
        file was found on the way."""
        # Called holding the tensor's reference lock, so no process can delete it meanwhile.
        buffer, damaged = self._map_existing(key, nbytes, recheck)
        if buffer is not None:
            return buffer, "hits", False
        if not self.writable:
            return None, "fallbacks", damaged
        # One process assembles a tensor; the others wait for it, then map what it wrote.
        self._set_lock(self._probe, key, fcntl.F_WRLCK, wait=True, space=_PUBLISHING)
        try:
            buffer, again = self._map_existing(key, nbytes, recheck)
            if buffer is not None:
                return buffer, "hits", damaged
            buffer = self._publish(key, nbytes, fill)
            return buffer, ("misses" if buffer is not None else "fallbacks"), damaged or again
        finally:
            self._set_lock(self._probe, key, fcntl.F_UNLCK, space=_PUBLISHING)

    def _released(self, key: bytes, token: int) -> None:
        # The mapping's last user is gone: drop this process's reference.
        with self._lock:
            entry = self._held.get(key)
            if entry is None or entry[2] != token:
                return  # already re-mapped under a new token, which keeps the reference
            del self._held[key]
            self._touch(key)  # the keep-alive window starts at the last use
            self._set_lock(self._refs, key, fcntl.F_UNLCK)
            if self._closed and not self._held:
                self._close_fds()

    # -- reclaim ---------------------------------------------------------------------------

    def reclaim(self, need: int = 0, keep_alive: float | None = None) -> int:
        """Delete unused tensors past their keep-alive window, then least recently used
        ones until ``need`` more bytes fit the budget. Returns how many were deleted."""
        with self._lock:
            return self._reclaim_locked(need, keep_alive)

    def _reclaim_locked(self, need: int, keep_alive: float | None = None) -> int:
        keep = self.keep_alive if keep_alive is None else keep_alive
        now = time.time()
        self._last_sweep = now
        entries = []
        for entry in os.scandir(self.directory):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.endswith(_MANIFEST):
                if now - st.st_mtime >= keep and self.writable:
                    (self.directory / entry.name).unlink(missing_ok=True)  # rebuilt on demand
            elif entry.name.endswith(_SUFFIX):
                try:
                    entries.append((st.st_mtime, st.st_size, bytes.fromhex(entry.name[: -len(_SUFFIX)])))
                except ValueError:
                    continue  # not ours
            elif entry.name.startswith("tmp-") and self.writable:
                self._remove_stale_tmp(entry.name, st.st_mtime, now)
        total = sum(size for _, size, _ in entries)
        deleted = 0
        if self.writable:
            for mtime, size, key in sorted(entries):
                expired = now - mtime >= keep
                if not expired and total + need <= self.max_bytes:
                    break  # oldest first: nothing later is expired, and there is room
                if key in self._held or not self._try_delete(key):
                    continue
                total -= size
                deleted += 1
        self._counts["reclaimed"] += deleted
        self._estimate = total
        return deleted

    def usage(self) -> dict:
        """What the cache directory holds now, across all processes: tensors and their
        bytes, manifests, and the budget."""
        tensors = nbytes = manifests = 0
        for entry in os.scandir(self.directory):
            try:
                if entry.name.endswith(_SUFFIX):
                    tensors += 1
                    nbytes += entry.stat(follow_symlinks=False).st_size
                elif entry.name.endswith(_MANIFEST):
                    manifests += 1
            except FileNotFoundError:
                continue  # reclaimed by another process meanwhile
        return {"directory": self._root, "tensors": tensors, "bytes": nbytes, "manifests": manifests,
                "max_bytes": self.max_bytes, "keep_alive": self.keep_alive}

    def _try_delete(self, key: bytes) -> bool:
        try:
            self._set_lock(self._probe, key, fcntl.F_WRLCK, wait=False)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False  # some process holds it
            raise
        try:
            Path(self._path(key, _SUFFIX)).unlink(missing_ok=True)
        finally:
            self._set_lock(self._probe, key, fcntl.F_UNLCK)
        return True

    def _remove_stale_tmp(self, name: str, mtime: float, now: float) -> None:
        # tmp-<pid>-...: the writer links it into place within one assembly, holding a lock
        # on it meanwhile (``_claim``). One whose lock is gone belongs to a process that
        # died mid-write; it goes once that process is gone too, or after _STALE_TMP
        # seconds (the pid may have been reused). A file held by a live writer stays,
        # however long its assembly takes (and so does one its live writer has created
        # and not yet claimed: its pid is alive and the file is new).
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            return
        if pid == os.getpid():
            return
        path = self.directory / name
        if _claimed(path):
            return
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        if not alive or now - mtime > _STALE_TMP:
            path.unlink(missing_ok=True)

    # -- files -----------------------------------------------------------------------------

    def _path(self, key: bytes, suffix: str) -> str:
        return f"{self._root}/{key.hex()}{suffix}"  # a str: this is on every load's path

    def _map_existing(self, key: bytes, nbytes: int, recheck: bool = False) -> tuple[mmap.mmap | None, bool]:
        """The tensor's file mapped (None if absent or not intact), and whether it was
        there but failed its checksum."""
        try:
            fd = os.open(self._path(key, _SUFFIX), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, False
        try:
            st = os.fstat(fd)
            if st.st_size != nbytes + _CHECK_BYTES:
                return None, False  # not this tensor (foreign, or an older layout): publish over it
            buffer = mmap.mmap(fd, nbytes + _CHECK_BYTES, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            seen = (key, st.st_ino)
            if recheck or seen not in self._checked:
                if not _intact(buffer, nbytes):
                    buffer.close()
                    return None, True  # assembled again and published over it
                self._checked.add(seen)
            if time.time() - st.st_mtime > _TOUCH_EVERY:
                self._touch(key, fd=fd)
        finally:
            os.close(fd)
        return buffer, False

    def _publish(self, key: bytes, nbytes: int, fill: Callable[[memoryview], None]) -> mmap.mmap | None:
        if not self.writable or not self._make_room(nbytes + _CHECK_BYTES):
            return None
        tmp = self.directory / f"tmp-{os.getpid()}-{threading.get_ident()}-{key.hex()[:16]}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
        except OSError:
            return None
        try:
            _claim(fd)  # "being written": no other process reaps it while this one lives
            os.fchmod(fd, self._file_mode)
            try:
                # Reserve the memory now: writing into a sparse tmpfs file that cannot
                # grow would kill the process with SIGBUS instead of raising.
                os.posix_fallocate(fd, 0, nbytes + _CHECK_BYTES)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    tmp.unlink(missing_ok=True)
                    return None
                raise
            with mmap.mmap(fd, nbytes + _CHECK_BYTES, flags=mmap.MAP_SHARED) as out:
                with memoryview(out) as view:
                    fill(view[:nbytes])
                    view[nbytes:] = xxhash.xxh3_64_digest(view[:nbytes])
            # link, not rename: never replace a file other processes may have mapped, or
            # they would keep a second copy alive. (Only a size or checksum mismatch gets here with
            # the name taken; then ours replaces it.)
            final = self._path(key, _SUFFIX)
            try:
                os.link(tmp, final)
            except FileExistsError:
                os.replace(tmp, final)
            tmp.unlink(missing_ok=True)
            buffer = mmap.mmap(fd, nbytes + _CHECK_BYTES, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self._checked.add((key, os.fstat(fd).st_ino))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self._estimate += nbytes + _CHECK_BYTES
        self._counts["published_bytes"] += nbytes
        return buffer

    def _make_room(self, nbytes: int) -> bool:
        if nbytes > self.max_bytes:
            return False
        if self._estimate is None or self._estimate + nbytes > self.max_bytes:
            self._reclaim_locked(nbytes)  # other processes add too: rescan before deciding
        return self._estimate + nbytes <= self.max_bytes

    # -- manifests ---------------------------------------------------------------------------

    def read_manifest(self, key: bytes, count: int) -> list[bytes] | None:
        """The ``count`` content keys stored under ``key``, or None (absent or damaged)."""
        try:
            with open(self._path(key, _MANIFEST), "rb") as f:
                data = f.read()
        except OSError:
            return None
        body, check = data[:-8], data[-8:]
        if (len(data) != len(_MANIFEST_MAGIC) + 16 * count + 8 or not body.startswith(_MANIFEST_MAGIC)
                or xxhash.xxh3_64_digest(body) != check):
            return None
        return [body[i : i + 16] for i in range(len(_MANIFEST_MAGIC), len(body), 16)]

    def write_manifest(self, key: bytes, keys: list[bytes]) -> None:
        """Keep a model's content keys for the next process (best effort: a failure is a miss)."""
        if not self.writable:
            return
        body = _MANIFEST_MAGIC + b"".join(keys)
        tmp = self.directory / f"tmp-{os.getpid()}-{threading.get_ident()}-{key.hex()[:16]}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
            try:
                _claim(fd)
                os.fchmod(fd, self._file_mode)
                os.write(fd, body + xxhash.xxh3_64_digest(body))
            finally:
                os.close(fd)
            os.replace(tmp, self._path(key, _MANIFEST))  # nothing maps a manifest
        except OSError:
            tmp.unlink(missing_ok=True)

    def _touch(self, key: bytes, suffix: str = _SUFFIX, fd: int | None = None) -> None:
        try:
            os.utime(self._path(key, suffix) if fd is None else fd)
        except OSError:
            pass  # not the owner or deleted: recency is a hint, not a correctness matter

    @staticmethod
    def _set_lock(fd: int, key: bytes, kind: int, wait: bool = False, space: int = 0) -> None:
        # One byte per tensor, chosen by its key: two tensors share a byte with
        # probability ~n²/2^49, and then only keep each other alive (or wait) longer.
        slot = space + int.from_bytes(key[:6], "big")
        cmd = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
        fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, slot, 1, 0))

    # -- accounting and lifetime ------------------------------------------------------------

    def stats(self) -> SharedCacheStats:
        with self._lock:
            return SharedCacheStats(
                mapped_tensors=len(self._held),
                mapped_bytes=sum(nbytes for _, nbytes, _ in self._held.values()),
                cache_bytes=self._estimate or 0,
                max_bytes=self.max_bytes,
                **self._counts,
            )

    def close(self) -> None:
        """Stop using the cache. Tensors still mapped stay valid (and held) until released."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._held:
                self._close_fds()

    def _close_fds(self) -> None:
        os.close(self._probe)
        os.close(self._refs)  # drops every lock this process held


def _claim(fd: int) -> None:
    """Mark a temporary file as being written: an OFD write lock on its first byte, held
    until the writer closes it (or dies)."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))


def _claimed(path: Path) -> bool:
    """Whether a live writer holds ``path`` (see ``_claim``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True  # gone already, or not ours to judge
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
        return _FLOCK.unpack(got)[0] != fcntl.F_UNLCK
    except OSError:
        return True
    finally:
        os.close(fd)


def default_directory(store_path: Path) -> Path:
    """``/dev/shm/tensorstore-<id>``, one per store: its device and inode and the path."""
    st = store_path.stat()
    ident = f"{st.st_dev}:{st.st_ino}:{store_path.resolve()}".encode()
    return SHM_ROOT / f"tensorstore-{xxhash.xxh3_64_hexdigest(ident)}"


def default_budget(directory: Path) -> int:
    """A quarter of the size of the filesystem that holds ``directory``."""
    probe = directory if directory.exists() else directory.parent
    st = os.statvfs(probe)
    return int(st.f_blocks * st.f_frsize * DEFAULT_SHARE)


def _intact(buffer: mmap.mmap, nbytes: int) -> bool:
    """Whether a mapped tensor file's bytes match the checksum that follows them."""
    with memoryview(buffer) as view:
        return xxhash.xxh3_64_digest(view[:nbytes]) == view[nbytes : nbytes + _CHECK_BYTES]
