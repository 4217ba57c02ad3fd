"""Helpers shared by the reliability tests and the worker processes they start.

Imported by the tests as ``reliability_common`` and by ``reliability_workers.py`` (run as a script),
beside it: nothing here may depend on pytest.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKERS = HERE / "reliability_workers.py"
PYTHON = sys.executable

# Small pages and blocks: a model of a few hundred KiB spans many blocks and pages.
PAGE_SIZE = "64KiB"
BLOCK_BYTES = "4KiB"

# -- deterministic, self-describing models ---------------------------------------------
#
# Every tensor of model "m<k>" at version v carries (k, v) in its first elements, so a
# single tensor says which model and version it belongs to and a torn read (tensors from
# two versions in one load) is caught. Versions of one model share most blocks ("base"
# differs in two rows) and every model shares "shared": replace and delete then move
# reference counts and compact pages rather than only append.

NAMES = tuple(f"m{k}" for k in range(6))
_ROWS = 96


def _shared() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((128, 256)).astype(np.float32)


def expected_tensor(name: str, version: int, tensor: str) -> np.ndarray:
    k = int(name[1:])
    if tensor == "shared":
        return _shared()
    if tensor == "base":
        a = np.random.default_rng(1000 + k).standard_normal((_ROWS, 256)).astype(np.float32)
        a[0, 0] = k * 100_000 + version  # exact in float32 below 2**24
        a[1 + version % (_ROWS - 1)] += 1.0
        return a
    if tensor == "fresh":  # int16, its length varies with the version: blocks of odd sizes
        a = np.random.default_rng([k, version]).integers(-30000, 30000, 300 + version % 700, dtype=np.int16)
        a[0], a[1] = k, version
        return a
    if tensor == "tag":
        return np.array([k, version], dtype=np.int64)
    raise KeyError(tensor)


TENSORS = ("shared", "base", "fresh", "tag")


def expected_model(name: str, version: int) -> dict[str, np.ndarray]:
    return {t: expected_tensor(name, version, t) for t in TENSORS}


def version_of(name: str, tensor: str, arr: np.ndarray) -> int | None:
    """The version a loaded tensor claims to be from (None for the version-less one)."""
    k = int(name[1:])
    if tensor == "shared":
        return None
    if tensor == "base":
        v = int(arr[0, 0]) - k * 100_000
    elif tensor in ("fresh", "tag"):
        if int(arr[0]) != k:
            raise AssertionError(f"{name}/{tensor} belongs to model m{int(arr[0])}")
        v = int(arr[1])
    else:
        raise KeyError(tensor)
    return v


def same_array(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def check_model(name: str, got: dict[str, np.ndarray]) -> int:
    """Assert ``got`` is one whole version of ``name``, bit-exact; return that version."""
    if set(got) != set(TENSORS):
        raise AssertionError(f"{name}: tensors {sorted(got)}")
    versions = {version_of(name, t, a) for t, a in got.items()} - {None}
    if len(versions) != 1:
        raise AssertionError(f"{name}: one load mixes versions {sorted(versions)}")
    (version,) = versions
    for t, a in got.items():
        if not same_array(a, expected_tensor(name, version, t)):
            raise AssertionError(f"{name} v{version}: tensor {t} is not bit-exact")
    return version


# -- processes --------------------------------------------------------------------------


class Worker:
    """A worker process (``reliability_workers.py ROLE ARGS``) whose output lines are read by a thread,
    so that waiting for a line has a timeout and a stuck worker fails the test, not hangs it."""

    def __init__(self, *args: object) -> None:
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            [PYTHON, str(WORKERS), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._err.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def stderr(self) -> str:
        return "\n".join(e for e in self._err if e)[-3000:]

    def expect(self, want: str, timeout: float = 60) -> float:
        """Wait for the line ``want``; return when it came (time.time())."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.args[:1]} printed nothing in {timeout} s (expected {want!r})") from None
        assert line == want, f"{self.args[:1]} printed {line!r}, expected {want!r}; stderr:\n{self.stderr()}"
        return time.time()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 120) -> dict:
        """Wait for a clean exit; return the JSON the worker printed last."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.args[:1]} did not finish in {timeout} s") from None
        lines = []
        while (line := self._lines.get(timeout=10)) is not None:
            lines.append(line)
        time.sleep(0.05)  # let the stderr pump catch up for the message below
        assert self.proc.returncode == 0, f"{self.args[:1]} exited {self.proc.returncode}:\n{self.stderr()}"
        return json.loads(lines[-1])

    def outcome(self, timeout: float = 120) -> dict:
        """Wait for the worker to end, however it ends: its JSON, or how it died."""
        self.proc.wait(timeout=timeout)
        lines = []
        while (line := self._lines.get(timeout=10)) is not None:
            lines.append(line)
        rc = self.proc.returncode
        if rc < 0:
            return {"result": f"killed by {signal.Signals(-rc).name}"}
        if rc != 0 or not lines:
            return {"result": f"exit {rc}", "stderr": self.stderr()}
        return json.loads(lines[-1])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait()

    def close_stdin(self) -> None:
        self.proc.stdin.close()


def worker(*args: object) -> Worker:
    return Worker(*args)


# -- the LMDB file underneath ----------------------------------------------------------


def raw_env(path: Path, *, readonly: bool = False):
    """The store's LMDB environment opened directly, as a tool or disk rot would see it.
    Only while no store handle in this process has it open (LMDB: one open per process)."""
    import lmdb

    return lmdb.open(str(path), max_dbs=16, readonly=readonly, lock=True, map_size=1 << 30)


def file_state(path: Path) -> tuple[bytes, int, int]:
    """data.mdb as bytes, its mtime (ns) and its inode number."""
    data = Path(path) / "data.mdb"
    st = data.stat()
    return data.read_bytes(), st.st_mtime_ns, st.st_ino


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
