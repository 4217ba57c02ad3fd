"""A process that pushes or pulls, for the concurrency and SIGKILL tests.

    python remote_worker.py rounds STORE URL PREFIX N      add PREFIX-0..N-1, pushing after each
    python remote_worker.py push STORE URL KILL_AT [PACK_BYTES]   push; SIGKILL itself at object request KILL_AT
    python remote_worker.py pull URL STORE KILL_AT          pull; likewise

KILL_AT ``k`` counts requests that write or read data (PUTs and GETs); an odd ``k`` dies just
before request ``k // 2`` is sent, an even one just after it completed. -1: never.
"""

import os
import signal
import sys

import numpy as np

import tensorstore as ts
from tensorstore import remote, remote_objects

calls = [0]


def arm(kill_at: int) -> None:
    if kill_at < 0:
        return

    def wrap(fn):
        def inner(*a, **k):
            calls[0] += 1
            if 2 * calls[0] - 1 == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            out = fn(*a, **k)
            if 2 * calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return inner

    for name in ("put", "get", "get_range"):
        setattr(remote_objects.Objects, name, wrap(getattr(remote_objects.Objects, name)))
    # Kill inside the local add too: the last request of a pull is followed by add_model.
    ts.Store.add_model = wrap(ts.Store.add_model)


def model(prefix: str, i: int) -> dict:
    rng = np.random.default_rng(abs(hash((prefix, i))) % 2**32)
    return {"w": rng.standard_normal((64, 64)).astype(np.float32), "b": np.full(64, i, np.float16)}


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "rounds":
        store, url, prefix, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        with ts.open(store, "a", page_size="64KiB", block_bytes="4KiB") as s:
            for i in range(n):
                s.add_model(f"{prefix}-{i}", model(prefix, i))
                s.push(url)
    elif cmd == "push":
        store, url, kill_at = sys.argv[2], sys.argv[3], int(sys.argv[4])
        pack_bytes = int(sys.argv[5]) if len(sys.argv) > 5 else 4 << 10
        arm(kill_at)
        with ts.open(store, "r") as s:
            remote.push(s, url, pack_bytes=pack_bytes)
    elif cmd == "pull":
        url, store, kill_at = sys.argv[2], sys.argv[3], int(sys.argv[4])
        arm(kill_at)
        remote.pull(url, store)
    print("done", calls[0], flush=True)


if __name__ == "__main__":
    main()
