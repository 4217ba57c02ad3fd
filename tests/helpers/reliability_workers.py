"""Worker processes of the reliability tests: ``python reliability_workers.py ROLE ARGS...``.

Each role prints ``ready`` when it is set up, then one JSON line with what it saw, and
exits 0; a failed check exits non-zero with the traceback on stderr.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reliability_common as common  # noqa: E402  (this file runs as a script, beside it)

import tensorstore as ts  # noqa: E402
import tensorstore.environment as environment  # noqa: E402

# A 1 MiB starting map instead of 256 MiB: the writer grows the map many times while the
# readers run, so readers meet LMDB's MapResizedError and must adopt the new size.
_DEFAULT_MAP = environment._MIN_MAP
environment._MIN_MAP = 1 << 20


def _own_slots(store) -> tuple[int, int]:
    """(slots, slots holding a snapshot) in LMDB's reader table for this process."""
    lines = store.env.env.readers().splitlines()[1:]
    mine = [line.split() for line in lines if line.split() and line.split()[0] == str(os.getpid())]
    return len(mine), sum(1 for cols in mine if cols[2] != "-")


def reader(path: str, style: str, seed: int) -> dict:
    """Load models until the deadline the test sends on stdin; every load must be one whole, bit-exact version.

    styles: "model" (load_model), "cache" (load_model through a buffer pool), "tensor"
    (load_tensor, each tensor checked alone), "verify" (load_model and, every few rounds,
    verify() of the whole snapshot).
    """
    rng = random.Random(seed)
    cache = "512KiB" if style == "cache" else None
    seen: dict[str, int] = {}
    out = {"style": style, "loads": 0, "tensors": 0, "vanished": 0, "verifies": 0, "regressions": []}
    with ts.open(path, "r", cache_bytes=cache) as s:
        print("ready", flush=True)
        deadline = float(sys.stdin.readline())  # sent once every process is ready
        rounds = 0
        while time.time() < deadline:
            rounds += 1
            names = s.models()
            rng.shuffle(names)
            for name in names:
                try:
                    version = _load_and_check(s, name, style, rng, out)
                except ts.ModelNotFoundError:
                    out["vanished"] += 1  # deleted between the listing and the load: allowed
                    continue
                if version is None:
                    continue
                out["loads"] += 1
                # Snapshots only move forward: a newer version once seen never goes back.
                if version < seen.get(name, -1):
                    out["regressions"].append([name, seen[name], version])
                seen[name] = max(seen.get(name, -1), version)
            if style == "verify" and rounds % 3 == 0:
                report = s.verify()
                assert report.ok, report.problems
                out["verifies"] += 1
        out["models_seen"] = len(seen)
        out["slots"], out["active_slots"] = _own_slots(s)
    return out


def _load_and_check(s, name: str, style: str, rng: random.Random, out: dict) -> int | None:
    """Load (part of) a model and check it; return the version it is, if one was read."""
    if style != "tensor":
        got = s.load_model(name)
        out["tensors"] += len(got)
        return common.check_model(name, got)
    version = None
    for t in rng.sample(common.TENSORS, 2):  # each load_tensor is a snapshot of its own
        arr = s.load_tensor(name, t)
        v = common.version_of(name, t, arr)
        want = common.expected_tensor(name, 0 if v is None else v, t)
        assert common.same_array(arr, want), f"{name}/{t} v{v} is not bit-exact"
        out["tensors"] += 1
        version = v if v is not None else version
    return version


def view_reader(path: str, seed: int) -> dict:
    """Hold zero-copy ``reader()`` views of every model while the writer grows the store,
    and check them bit-exact every round: the map must never move under them.

    This process reserves the default map (the module-level 1 MiB is for the resize path
    of the other readers): a serving process as a user would run it.
    """
    environment._MIN_MAP = _DEFAULT_MAP
    rng = random.Random(seed)
    out = {"style": "views", "loads": 0, "tensors": 0, "vanished": 0, "verifies": 0, "regressions": [],
           "views_held_max": 0, "view_checks": 0}
    held: list[tuple[str, int, dict]] = []  # (name, version, the arrays as loaded)
    with ts.open(path, "r") as s:
        print("ready", flush=True)
        deadline = float(sys.stdin.readline())
        while time.time() < deadline:
            names = s.models()
            rng.shuffle(names)
            for name in names[:2]:
                r = s.reader()
                try:
                    got = r.load_model(name)
                except ts.ModelNotFoundError:
                    out["vanished"] += 1
                    continue
                finally:
                    r.close()  # the snapshot lives on while its views do
                held.append((name, common.check_model(name, got), got))
                out["loads"] += 1
                out["tensors"] += len(got)
            held = held[-12:]  # views of several snapshots at once, the oldest let go
            out["views_held_max"] = max(out["views_held_max"], s.env.live_views)
            for name, version, got in held:  # what was handed out never changes
                assert common.check_model(name, got) == version, f"a held view of {name} changed"
                out["view_checks"] += 1
        held.clear()
        got = None  # the loops' last names hold views too
        out["slots"], out["active_slots"] = _own_slots(s)
    return out


def writer(path: str, seed: int, start_version: int) -> dict:
    """Add, replace and delete models (and repack now and then) until the deadline on stdin."""
    rng = random.Random(seed)
    version = start_version
    ops = {"add": 0, "replace": 0, "delete": 0, "repack": 0}
    with ts.open(path, "a") as s:
        present = {}
        for name in s:
            present[name] = int(s.load_tensor(name, "tag")[1])
        print("ready", flush=True)
        deadline = float(sys.stdin.readline())
        map_sizes = {s.env.env.info()["map_size"]}
        while time.time() < deadline:
            name = rng.choice(common.NAMES)
            r = rng.random()
            if name not in present:
                version += 1
                s.add_model(name, common.expected_model(name, version))
                present[name] = version
                ops["add"] += 1
            elif r < 0.55:
                version += 1
                s.add_model(name, common.expected_model(name, version), replace=True)
                present[name] = version
                ops["replace"] += 1
            elif r < 0.97:
                s.delete_model(name)
                del present[name]
                ops["delete"] += 1
            else:
                s.repack("greedy-2")
                ops["repack"] += 1
            map_sizes.add(s.env.env.info()["map_size"])
        out = {"ops": ops, "present": present, "map_sizes": len(map_sizes)}
        out["slots"], out["active_slots"] = _own_slots(s)
    return out


def hold_write(path: str, seconds: float) -> dict:
    """Hold the store's write transaction (as a long add would) until a line arrives on
    stdin or ``seconds`` pass, whichever comes first."""
    import select

    with ts.open(path, "a") as s:

        def hold(txn):
            print("holding", flush=True)
            select.select([sys.stdin], [], [], seconds)
            return time.time()  # taken before the commit releases the lock

        return {"released": s.env.write(hold)}


def second_writer(path: str, name: str) -> dict:
    """Open the store and add one model while another process may hold the write lock.

    Opening for writing already waits: the environment opens its databases in a write
    transaction."""
    tried = time.time()
    print("trying", flush=True)
    with ts.open(path, "a") as s:
        opened = time.time()
        s.add_model(name, common.expected_model("m5", 999))
        return {"tried": tried, "opened": opened, "done": time.time()}


def hold_read(path: str) -> dict:
    """Open a read snapshot and wait inside it (to be killed there)."""
    with ts.open(path, "r") as s, s.env.read():
        print("ready", flush=True)
        time.sleep(600)
    return {}


def keep_open(path: str) -> dict:
    """Hold the store open without a transaction (a long-lived serving process)."""
    with ts.open(path, "r"):
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    return {}


def load_expect_corruption(path: str, name: str) -> dict:
    """Load ``name`` in this fresh process; report what happened."""
    try:
        with ts.open(path, "r") as s:
            s.load_model(name)
        return {"result": "loaded"}
    except ts.CorruptionError as exc:
        return {"result": "CorruptionError", "message": str(exc)}


def fork_loader() -> dict:
    """For each ``[path, model]`` JSON line on stdin, fork a child that opens the store and
    loads the model; print what it saw. This process never opens a store, so every child
    starts with no environment, no verified-page memory and no cache: a fresh process,
    without paying an interpreter start per load."""
    print("ready", flush=True)
    served = 0
    for line in sys.stdin:
        path, name = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(r)
            try:
                res = load_expect_corruption(path, name)
            except BaseException as exc:  # noqa: BLE001 - reported, judged by the test
                res = {"result": type(exc).__name__, "message": str(exc)}
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        res = json.loads(b"".join(chunks)) if chunks else {"result": "crashed", "status": status}
        print(json.dumps(res), flush=True)
        served += 1
    return {"served": served}


def open_and_load_all(path: str, mode: str) -> dict:
    """Open a (possibly damaged) store, verify it and load every model; report the outcome."""
    try:
        with ts.open(path, mode) as s:
            report = s.verify()
            for name in s:
                s.load_model(name)
            return {"result": "opened", "verify_ok": report.ok, "models": len(s)}
    except ts.StoreError as exc:
        return {"result": type(exc).__name__, "message": str(exc)}


def content_writer(path: str, seed: int) -> dict:
    """Adds, replaces, deletes and compacts forever (until killed): bases and fine-tunes of
    them re-exported under other names, so blocks are stored as deltas of references found
    by content and their codes come and go."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def model(k: int) -> dict:
        r = np.random.default_rng(k % 5)
        base = {"embed": (r.standard_normal((384, 64)) * 0.05).astype(np.float32),
                "w": (r.standard_normal((64, 64)) * 0.05).astype(np.float16)}
        if k < 5:
            return base
        t = np.random.default_rng(k)
        return {f"v{k}/{key}": (v.astype(np.float32) * (1 + 1e-3 * t.standard_normal(v.shape))).astype(v.dtype)
                for key, v in base.items()}

    with ts.open(path, "a", page_size="64KiB", block_bytes="4KiB") as s:
        print("ready", flush=True)
        while True:
            k = int(rng.integers(0, 20))
            name = f"m{k}"
            op = rng.integers(0, 10)
            if op < 6 or name not in s:
                s.add_model(name, model(k), replace=True)
            elif op == 9:
                s.compact(time_limit=0.5)  # turns blocks into deltas: their codes must go
            elif op == 8:
                s.dedup([name], tolerance=0.05)  # replaced blocks are freed with their codes
            else:
                s.delete_model(name)


def slow_backfill(path: str, step_blocks: int, delay: float) -> dict:
    """Codes a store written without codes, ``step_blocks`` a step, each step's writes
    held back ``delay`` seconds (a slow disk), so that a kill lands mid-way."""
    from tensorstore import contentcodes

    put = contentcodes.put_many
    contentcodes.put_many = lambda *a: (time.sleep(delay), put(*a))
    with ts.open(path, "a") as s:
        print("ready", flush=True)
        return {"coded": contentcodes.backfill(s, step_blocks=step_blocks)}


ROLES = {
    "content_writer": lambda a: content_writer(a[0], int(a[1])),
    "slow_backfill": lambda a: slow_backfill(a[0], int(a[1]), float(a[2])),
    "reader": lambda a: reader(a[0], a[1], int(a[2])),
    "view_reader": lambda a: view_reader(a[0], int(a[1])),
    "writer": lambda a: writer(a[0], int(a[1]), int(a[2])),
    "hold_write": lambda a: hold_write(a[0], float(a[1])),
    "second_writer": lambda a: second_writer(a[0], a[1]),
    "hold_read": lambda a: hold_read(a[0]),
    "keep_open": lambda a: keep_open(a[0]),
    "fork_loader": lambda a: fork_loader(),
    "open_and_load_all": lambda a: open_and_load_all(a[0], a[1]),
}

if __name__ == "__main__":
    try:
        result = ROLES[sys.argv[1]](sys.argv[2:])
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
    print(json.dumps(result), flush=True)
