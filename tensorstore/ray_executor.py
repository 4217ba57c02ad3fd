"""Jobs as Ray tasks: a :class:`concurrent.futures.Executor` on a Ray cluster.

``pip install 'tensorstore-dedup[ray]'``. Importing ``tensorstore`` never imports Ray; this
module imports it when a :class:`RayExecutor` is made.

    from tensorstore.ray_executor import RayExecutor
    with RayExecutor() as ex:                     # a local cluster, one worker per core
        store.dedup(evaluate=my_module.evaluate, max_accuracy_drop=0.005, executor=ex)
    RayExecutor("ray://head:10001")               # an existing cluster
    RayExecutor("auto")                           # the cluster this machine belongs to

Each job is one task of one CPU, and runs with one thread: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` are 1 in its worker (BLAS, torch and the
numpy evaluator read them), so two workers on two cores run two threads, not four that
take turns. Its function and arguments travel as Ray sends them
(cloudpickle; arrays through the object store). A function importable by module and name
on the workers is sent by reference, anything else by value (see ``tensorstore.executor``).

An address that names a host and port is tried with a plain TCP connect first: ``ray.init``
keeps retrying an address where nothing answers for minutes, the probe says so in seconds.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any
from urllib.parse import urlsplit

from .errors import StoreError

__all__ = ["RayExecutor", "RayMissingError", "RayClusterError", "require_ray"]

_TASK_CPUS = 1
# A worker's thread pools follow these when it starts (torch's intra-op pool, OpenBLAS, MKL,
# tensorstore.corpora.bert_numpy): one thread per CPU the task holds.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PROBE_SECONDS = 3.0  # a cluster's head answers a connect at once; a busy one well within this
_DEFAULT_PORTS = {"": 6379, "ray": 10001}  # the GCS's, and the Ray Client server's


class RayMissingError(StoreError, ImportError):
    """Ray is asked for (``--ray``, :class:`RayExecutor`) but not installed."""


def require_ray():
    """The ``ray`` module, or :class:`RayMissingError` with the command that installs it."""
    try:
        import ray
    except ImportError:
        raise RayMissingError("Ray is not installed: pip install 'tensorstore-dedup[ray]'") from None
    return ray


def _call(fn: Callable, args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Run jobs as Ray tasks.

    Parameters
    ----------
    address : str, optional
        The cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``). Without
        it a local cluster is started (and stopped by :meth:`shutdown`). A Ray already
        initialised in this process is used as it is, whatever ``address`` says.
    num_cpus : int, optional
        CPUs of a local cluster started here (default: every core).
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        ray = require_ray()
        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"address": address, "log_to_driver": False}
            if address is None:
                options |= {"num_cpus": num_cpus, "include_dashboard": False}
            if address is not None:
                _probe(address)
            try:
                ray.init(**options)
            except ConnectionError as exc:
                raise RayClusterError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
            self._owned = True
        threads = {name: str(_TASK_CPUS) for name in THREAD_VARS}
        self._task = ray.remote(num_cpus=_TASK_CPUS, runtime_env={"env_vars": threads})(_call)
        self._workers: int | None = None

    @property
    def workers(self) -> int:
        """CPUs of the cluster when first asked: how many tasks run at once."""
        if self._workers is None:
            self._workers = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        return self._workers

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a task; its exception, if any, is the one ``fn``
        raised (not Ray's wrapper, whose message carries the worker's traceback)."""
        task = self._task.remote(fn, args, kwargs).future()
        out: Future = Future()

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            else:
                cause = getattr(exc, "cause", None) if isinstance(exc, self._ray.exceptions.RayTaskError) else None
                out.set_exception(cause if isinstance(cause, Exception) else exc)

        task.add_done_callback(done)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the local cluster if this executor started it."""
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


class RayClusterError(StoreError, ConnectionError):
    """The Ray cluster named by ``--ray ADDRESS`` could not be joined."""


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port a cluster address names: ``HOST[:PORT]`` (the GCS) or
    ``ray://HOST[:PORT]`` (Ray Client). None for what Ray resolves itself (``auto``,
    ``local``, other schemes)."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme not in _DEFAULT_PORTS or address in ("auto", "local"):
        return None
    parts = urlsplit(address if scheme else "//" + address)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1:
        raise RayClusterError(f"the Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return parts.hostname, port or _DEFAULT_PORTS[scheme]


def _probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise ``RayClusterError`` unless something accepts a TCP connection where
    ``address`` points."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers at {host}:{port} ({why})") from None
