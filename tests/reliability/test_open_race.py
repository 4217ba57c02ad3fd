"""Processes racing to create, open and write one new store (issue 14, item 6).

Every process opens the same new path at the same instant (a barrier), half of them to
write (mode "a", adding a model of its own) and the rest to read (mode "r" once the
directory exists). Each must succeed or wait: no process may be told the store is
damaged or not a store because another was creating it at that moment.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

import tensorstore as ts

WRITERS = 4
READERS = 2
ROUNDS = 12


def _racer(root: str, role: str, k: int, barrier, results) -> None:
    for rnd in range(ROUNDS):
        path = os.path.join(root, f"s{rnd}")
        barrier.wait()
        try:
            if role == "writer":
                with ts.open(path, "a") as s:
                    # large enough that the map and the file grow while others open
                    s.add_model(f"m{k}", {"w": np.full(1 << 20, k, dtype=np.float32) + rnd})
                results.put((rnd, role, k, "ok"))
            else:
                deadline = time.time() + 30
                while not os.path.isdir(path) and time.time() < deadline:
                    time.sleep(0.001)
                while True:
                    try:
                        with ts.open(path, "r") as s:
                            list(s)
                        break
                    except ts.StoreNotFoundError:
                        if time.time() > deadline:
                            raise
                        time.sleep(0.001)  # the directory exists, the store not yet: true
                results.put((rnd, role, k, "ok"))
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the test
            results.put((rnd, role, k, f"{type(exc).__name__}: {exc}"))


def test_racing_processes_create_and_open_one_store(tmp_path, counts):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS + READERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), "writer", k, barrier, results)) for k in range(WRITERS)]
    procs += [ctx.Process(target=_racer, args=(str(tmp_path), "reader", k, barrier, results)) for k in range(READERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in range(ROUNDS * len(procs))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    failed = [o for o in outcomes if o[3] != "ok"]
    assert failed == [], failed
    for rnd in range(ROUNDS):
        with ts.open(tmp_path / f"s{rnd}", "r") as s:
            assert sorted(s) == [f"m{k}" for k in range(WRITERS)]
            for k in range(WRITERS):
                assert np.array_equal(s.load_model(f"m{k}")["w"], np.full(1 << 20, k, dtype=np.float32) + rnd)
            assert s.verify().ok
    counts("rounds x racing processes (writers + readers)", f"{ROUNDS} x ({WRITERS} + {READERS})")


def test_mode_w_refuses_while_another_process_has_the_store_open(tmp_path):
    from reliability_common import worker

    path = tmp_path / "store"
    with ts.open(path, "w") as s:
        s.add_model("a", {"w": np.arange(10, dtype=np.float32)})
    holder = worker("keep_open", path)
    holder.expect("ready")
    try:
        try:
            ts.open(path, "w").close()
        except ts.StoreExistsError as exc:
            assert str(holder.proc.pid) in str(exc) and "close it there" in str(exc), exc
        else:
            raise AssertionError("mode 'w' replaced a store another process has open")
        with ts.open(path, "r") as s:  # untouched
            assert list(s) == ["a"] and s.verify().ok
    finally:
        holder.close_stdin()
        holder.result()
    ts.open(path, "w").close()  # nobody has it open now: replaced
    with ts.open(path, "r") as s:
        assert len(s) == 0
