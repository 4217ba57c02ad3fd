"""Where independent jobs run: in this process (the default), or on a pool or a Ray cluster.

An *executor* is any :class:`concurrent.futures.Executor`: ``submit(fn, *args) -> Future``
and ``map``. The store hands it jobs that are pure functions of their arguments — the
accuracy evaluations of ``dedup`` and the encoding of new blocks in ``add`` — and commits
their results in one process, so the store keeps one writer whatever runs the jobs.
:class:`SerialExecutor` runs each job when it is submitted; ``tensorstore.ray_executor``
runs them as Ray tasks (``pip install 'tensorstore-dedup[ray]'``). How many jobs the store
keeps in flight is :func:`parallelism`.

The dedup pass is sequential by nature: a model is planned against the blocks the models
before it leave (replaced blocks are freed, representatives gain references), and each
plan is a binary search over evaluations. :func:`evaluate_ahead` still runs the
evaluations of different models at once and keeps the result exactly the serial pass's:

1. **Ahead**: the models are planned several at a time (one thread each, as many as the
   executor runs jobs), each against the plans of the earlier models finished so far; a
   plan's evaluations go to the executor, and every answer is kept, keyed by the model's
   name and a digest of the tensors evaluated. Planning itself (reading the store, the
   block search) runs one model at a time, under a lock released only while a thread
   waits for an evaluation.
2. **Exact**: the serial pass then runs as always, with an evaluator that answers from
   what was kept and sends only what was not (a model whose candidates an earlier
   model's plan changed) to the executor. Its evaluations are thus the serial pass's,
   one for one, so are its replacements and its accuracy checks; step 1 only did them
   sooner.

That holds for a *deterministic* evaluator (the same tensors give the same accuracy), which
the serial pass needs too for its result to mean anything. The evaluator travels to where
the executor runs it: to another process it must be picklable — a function importable by
module and name on the workers (``MODULE:FUNC``, what ``tensorstore dedup --evaluator``
takes) is sent by reference; a closure or lambda is sent by value (Ray uses cloudpickle),
with everything it refers to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import xxhash

__all__ = ["SerialExecutor", "parallelism", "evaluate_ahead", "encoding_on"]

# Jobs per worker in one batch: enough to hide a worker finishing early, few enough that
# a task carries a good amount of work (a job is one 64 KiB block).
_CHUNKS_PER_WORKER = 4
_encoding: ContextVar[Executor | None] = ContextVar("tensorstore_encoding_executor", default=None)


class SerialExecutor(Executor):
    """Runs each job in the calling thread when it is submitted (the store's default)."""

    workers = 1

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to whoever calls result(), as a pool would
            future.set_exception(exc)
        return future


def parallelism(executor: Executor) -> int:
    """How many jobs ``executor`` runs at once: its ``workers`` attribute, else a standard
    pool's ``_max_workers``, else 1."""
    n = getattr(executor, "workers", None) or getattr(executor, "_max_workers", None) or 1
    return max(1, int(n))


@contextmanager
def encoding_on(executor: Executor) -> Iterator[None]:
    """Within the block, new blocks are encoded on ``executor`` (``tensorstore add --ray``).

    The blocks are chunked and hashed here, their encodings chosen by the executor's
    workers (a pure function of a block and its candidate references, so the store is
    byte for byte what an encoding here makes), and placed and committed here.
    """
    token = _encoding.set(executor)
    try:
        yield
    finally:
        _encoding.reset(token)


def encoding_executor() -> Executor | None:
    """The executor of the innermost :func:`encoding_on`, if any."""
    return _encoding.get()


def run_chunked(executor: Executor, fn: Callable[[list, Any], list], items: list, *args: Any) -> list:
    """``fn(chunk, *args)`` over consecutive chunks of ``items`` on ``executor``; the
    results, concatenated in order."""
    n = max(1, -(-len(items) // (parallelism(executor) * _CHUNKS_PER_WORKER)))
    futures = [executor.submit(fn, items[i : i + n], *args) for i in range(0, len(items), n)]
    return [r for f in futures for r in f.result()]


def tensors_key(name: str, tensors: dict[str, np.ndarray]) -> tuple:
    """What identifies one evaluation: the model's name and its tensors' names, dtypes,
    shapes and bytes (XXH3-128 of each)."""
    parts = []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        parts.append((k, a.dtype.str, a.shape, xxhash.xxh3_128_digest(a.reshape(-1).view(np.uint8))))
    return (name, tuple(parts))


def evaluate_ahead(
    names: Sequence[str],
    evaluate: Callable[[str, dict[str, np.ndarray]], Any],
    executor: Executor,
    plan: Callable[[int, Callable[[str, dict[str, np.ndarray]], Any]], Any],
) -> Callable[[str, dict[str, np.ndarray]], Any]:
    """Run the evaluations of planning every model ahead, and return the evaluator for the
    exact pass (see the module's docstring).

    Parameters
    ----------
    names : sequence of str
        The models in the pass's order.
    evaluate : callable
        The user's ``evaluate(name, tensors)``; it runs on ``executor``.
    executor : concurrent.futures.Executor
        Where evaluations run; :func:`parallelism` models are planned at once.
    plan : callable
        ``plan(i, evaluator)`` plans model ``names[i]`` with ``evaluator`` against the
        plans of the models before it that finished so far, and returns its plan. Errors
        are dropped here: the exact pass meets them again and reports them.

    Returns
    -------
    callable
        ``evaluate(name, tensors)`` that answers from the evaluations done ahead, and
        submits any other to ``executor`` (and waits for it).
    """
    answers: dict[tuple, Any] = {}
    lock = threading.Lock()

    def ahead(name: str, tensors: dict[str, np.ndarray]) -> Any:
        key = tensors_key(name, tensors)
        if key in answers:
            return answers[key]
        future = executor.submit(evaluate, name, tensors)
        lock.release()  # other models plan while this evaluation runs
        try:
            value = future.result()
        finally:
            lock.acquire()
        answers[key] = value
        return value

    def plan_one(i: int) -> None:
        with lock:
            try:
                plan(i, ahead)
            except Exception:  # noqa: BLE001 - met again, and reported, by the exact pass
                pass

    workers = min(parallelism(executor), len(names))
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="dedup-ahead") as pool:
            list(pool.map(plan_one, range(len(names))))

    def exact(name: str, tensors: dict[str, np.ndarray]) -> Any:
        key = tensors_key(name, tensors)
        if key not in answers:
            answers[key] = executor.submit(evaluate, name, tensors).result()
        return answers[key]

    return exact
