"""Object storage under a remote: URLs to obstore stores, counted requests, one-line errors.

Every call the remote makes goes through ``Objects``, which counts requests and bytes
(what ``push`` and ``pull`` report as transferred) and turns obstore's errors into the
store's: a missing bucket or remote is ``RemoteNotFoundError``, refused credentials
``RemoteAccessError``, anything else from the service ``RemoteError``. Credentials and
endpoints are obstore's own (environment variables such as ``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``GOOGLE_SERVICE_ACCOUNT``, ``AZURE_STORAGE_ACCOUNT_NAME``); they are
never put in a message.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from .errors import InvalidArgumentError, StoreError

SCHEMES = ("memory", "file", "s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "http", "https")
# Range reads of one pull run on this many threads (obstore releases the GIL while it waits).
_FETCH_THREADS = 16

_memory: dict[str, object] = {}  # memory:// stores of this process, by URL
_memory_lock = threading.Lock()


class RemoteError(StoreError, OSError):
    """The object store failed a request (network, service error); nothing was half-applied."""


class RemoteNotFoundError(RemoteError, FileNotFoundError):
    """No remote at the URL: the bucket or directory is missing, or nothing was pushed there."""


class RemoteAccessError(RemoteError, PermissionError):
    """The object store refused the credentials (or has none to use)."""


class RemoteFormatError(StoreError, ValueError):
    """The remote is not a tensorstore remote, or was written by a newer version."""


class _Conflict(Exception):
    """A conditional write found the object already there (another writer was first)."""


@dataclass(slots=True)
class Transfer:
    """Requests made and bytes moved, as the object store saw them."""

    gets: int = 0
    puts: int = 0
    heads: int = 0
    lists: int = 0
    deletes: int = 0
    bytes_in: int = 0  # GET bodies, whole objects and ranges
    bytes_out: int = 0  # PUT bodies

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def redact(url: str) -> str:
    """The URL without user information (a password in a URL is never printed)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        return parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()
    return url


def _retry_config() -> dict:
    # object_store's default keeps retrying an unreachable endpoint for three minutes; a
    # command should say so sooner.
    return {"max_retries": 4, "retry_timeout": timedelta(seconds=30),
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2}}


class Objects:
    """One remote's object store, with counters. ``url``'s scheme picks the service."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidArgumentError(f"a remote URL must be a non-empty string, not {url!r}")
        self.url = url
        self.shown = redact(url)
        self.transfer = Transfer()
        self._lock = threading.Lock()
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidArgumentError(
                f"remote URL {self.shown!r} has an unknown scheme {scheme + '://' if scheme else '(none)'}; "
                "use s3://BUCKET/PREFIX, gs://, az://, file:///PATH or memory://NAME"
            )
        try:
            import obstore  # noqa: F401
            from obstore.store import MemoryStore, from_url
        except ImportError:
            raise InvalidArgumentError(
                "remotes need obstore: pip install 'tensorstore-dedup[remote]'"
            ) from None
        if scheme == "memory":
            # obstore gives each memory:// URL a new store; share one per URL in this process
            # so that a push and a later pull (or a test's two handles) see the same objects.
            with _memory_lock:
                self.store = _memory.setdefault(url, MemoryStore())
            return
        if scheme == "file":
            path = Path(urlsplit(url).path)
            if not path.is_dir():
                if not create:
                    raise RemoteNotFoundError(f"no remote at {self.shown}: {path} is not a directory")
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise RemoteError(f"cannot create the remote directory {path}: {exc.strerror}") from None
        try:
            self.store = from_url(url, retry_config=_retry_config())
        except Exception as exc:  # obstore raises its own types and ValueError for a bad URL
            raise InvalidArgumentError(f"remote URL {self.shown!r} is not usable: {_first_line(exc)}") from None

    # -- requests -------------------------------------------------------------------

    def _count(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.transfer, k, getattr(self.transfer, k) + v)

    def get(self, key: str) -> bytes:
        import obstore

        try:
            data = bytes(obstore.get(self.store, key).bytes())
        except Exception as exc:
            raise self._error(exc, f"reading {key}") from None
        self._count(gets=1, bytes_in=len(data))
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes:
        import obstore

        try:
            data = bytes(obstore.get_range(self.store, key, start=start, end=end))
        except Exception as exc:
            raise self._error(exc, f"reading bytes {start}-{end} of {key}") from None
        self._count(gets=1, bytes_in=len(data))
        if len(data) != end - start:
            from .errors import CorruptionError

            raise CorruptionError(f"{key} on the remote {self.shown} is cut short: bytes {start}-{end} returned {len(data)}")
        return data

    def get_runs(self, runs: list[tuple[str, int, int]]) -> list[bytes]:
        """``get_range`` of each ``(key, start, end)``, one request each, on threads.

        Not obstore's ``get_ranges``: it merges ranges up to 1 MiB apart into one request,
        which would move (and count) bytes nobody asked for.
        """
        if len(runs) <= 1:
            return [self.get_range(*r) for r in runs]
        with ThreadPoolExecutor(min(_FETCH_THREADS, len(runs))) as pool:
            return list(pool.map(lambda r: self.get_range(*r), runs))

    def put(self, key: str, data: bytes, *, create: bool = False) -> None:
        """Write ``data`` at ``key``; with ``create``, only if nothing is there (else ``_Conflict``)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, key, data, mode="create" if create else "overwrite")
        except (AlreadyExistsError, PreconditionError):
            self._count(puts=1, bytes_out=len(data))
            raise _Conflict(key) from None
        except Exception as exc:
            raise self._error(exc, f"writing {key}") from None
        self._count(puts=1, bytes_out=len(data))

    def exists(self, key: str) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.head(self.store, key)
        except NotFoundError:
            return False
        except Exception as exc:
            raise self._error(exc, f"looking up {key}") from None
        finally:
            self._count(heads=1)
        return True

    def list(self, prefix: str) -> list[dict]:
        """Every object under ``prefix``: dicts with ``path``, ``size``, ``last_modified``."""
        import obstore

        out = []
        try:
            for chunk in obstore.list(self.store, prefix=prefix, chunk_size=1000):
                self._count(lists=1)
                out.extend(chunk)
        except Exception as exc:
            raise self._error(exc, f"listing {prefix}") from None
        if not out:
            self._count(lists=1)
        return out

    def delete(self, keys: list[str]) -> None:
        import obstore

        if not keys:
            return
        try:
            obstore.delete(self.store, keys)
        except Exception as exc:
            raise self._error(exc, "deleting objects") from None
        self._count(deletes=len(keys))

    # -- errors ---------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> StoreError:
        from obstore import exceptions as ox

        text = str(exc)
        where = f"the remote {self.shown}"
        if isinstance(exc, (ox.PermissionDeniedError, ox.UnauthenticatedError)) or any(
            s in text for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")
        ):
            return RemoteAccessError(
                f"{where} refused the credentials while {doing}; check the credentials in the environment "
                "(e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's permissions"
            )
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return RemoteNotFoundError(f"{where}: the bucket does not exist; create it first")
        if isinstance(exc, (ox.NotFoundError, FileNotFoundError)):  # the local file system's is the builtin
            return RemoteNotFoundError(f"{where} has no object {doing.split()[-1]}")
        return RemoteError(f"{where} failed while {doing}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
