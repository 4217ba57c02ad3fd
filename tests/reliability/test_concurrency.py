"""Many readers and one writer across processes (SPEC §4, LMDB's model).

Four reader processes load models while a writer process adds, replaces, deletes and now
and then repacks them. Every load must be one whole version of a model, bit-exact; a
reader's view never goes back in time; ``verify()`` passes on any snapshot; the map grows
under the readers' feet, while one more reader holds zero-copy ``reader()`` views of
several snapshots and checks them every round; no process leaves a reader slot behind. A second writer waits for
the first, and a writer killed while it holds the write lock does not block the next one.

Durations: about 8 s by default; ``pytest -m slow tests/reliability/test_concurrency.py``
runs for ``TS_SOAK_SECONDS`` (default 30).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import tensorstore as ts
import tensorstore.environment as environment
from reliability_common import BLOCK_BYTES, PAGE_SIZE, check_model, env_int, expected_model, raw_env, worker

STYLES = ("model", "cache", "tensor", "verify")


def _slots(env) -> list[list[str]]:
    """LMDB's reader table: one [pid, thread, txnid] per slot in use ('-': no snapshot held)."""
    return [line.split() for line in env.readers().splitlines()[1:] if line.strip() and "no active" not in line]


def _soak(path, seconds: float, counts, monkeypatch) -> None:
    monkeypatch.setattr(environment, "_MIN_MAP", 1 << 20)  # as in the workers: a map that must grow
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        for version, name in enumerate(("m0", "m1", "m2"), start=1):
            s.add_model(name, expected_model(name, version))
    # Hold the environment open in this process for the whole run, without a transaction:
    # LMDB resets its reader table when the first process opens it, so only a table kept
    # alive shows the slots that the workers leave behind.
    watcher = raw_env(path, readonly=True)
    try:
        procs = [worker("writer", path, 1, 3)] + [worker("reader", path, style, i) for i, style in enumerate(STYLES)]
        procs.append(worker("view_reader", path, 9))
        try:
            for p in procs:
                p.expect("ready")
            deadline = time.time() + seconds
            for p in procs:
                p.send(str(deadline))
            peak_slots = 0
            while time.time() < deadline:  # sample the reader table while everyone works
                peak_slots = max(peak_slots, len(_slots(watcher)))
                time.sleep(0.05)
            results = [p.result(timeout=120) for p in procs]
        finally:
            for p in procs:
                p.kill()
        left = _slots(watcher)
        stale = watcher.reader_check()
    finally:
        watcher.close()

    w, readers = results[0], results[1:]
    ops = sum(w["ops"].values())
    assert ops >= 10 and w["ops"]["delete"] > 0 and w["ops"]["replace"] > 0, w["ops"]
    assert w["map_sizes"] > 1, "the map never grew: the readers' resize path went untested"
    for r in readers:
        assert r["loads"] >= 5, r
        assert r["regressions"] == [], f"a reader saw a model go back to an older version: {r}"
        assert r["active_slots"] == 0, f"a {r['style']} reader holds a snapshot with no call running: {r}"
        assert r["slots"] <= 2, r
    assert sum(r["verifies"] for r in readers) >= 1
    views = readers[-1]
    assert views["views_held_max"] >= 2 and views["view_checks"] >= 10, views
    # Every process exited cleanly: nothing of theirs is left in the reader table.
    assert left == [], left
    assert stale == 0
    # Two slots per process at most, and the view reader's held snapshots (12 loads) besides.
    assert peak_slots <= 2 * len(results) + 12, peak_slots

    with ts.open(path, "r") as s:
        report = s.verify()
        assert report.ok, report.problems
        assert sorted(s) == sorted(w["present"])
        for name, version in w["present"].items():
            assert check_model(name, s.load_model(name)) == version

    counts("seconds", seconds)
    counts("writer commits (add/replace/delete/repack)", f"{ops} {w['ops']}")
    counts("map sizes seen by the writer", w["map_sizes"])
    counts("reader loads checked bit-exact", sum(r["loads"] for r in readers))
    counts("tensors checked", sum(r["tensors"] for r in readers))
    counts("loads of a model deleted since listing (ModelNotFoundError)", sum(r["vanished"] for r in readers))
    counts("verify() passes during the run", sum(r["verifies"] for r in readers))
    counts("reader() views held at once (peak) / checks of held views", f"{views['views_held_max']} / {views['view_checks']}")
    counts("peak reader-table slots", peak_slots)


def test_four_readers_and_a_writer(tmp_path, counts, monkeypatch):
    _soak(tmp_path / "store", 8.0, counts, monkeypatch)


@pytest.mark.slow
def test_four_readers_and_a_writer_soak(tmp_path, counts, monkeypatch):
    _soak(tmp_path / "store", float(env_int("TS_SOAK_SECONDS", 30)), counts, monkeypatch)


@pytest.fixture
def small_store(tmp_path):
    path = tmp_path / "store"
    with ts.open(path, "w", page_size=PAGE_SIZE, block_bytes=BLOCK_BYTES) as s:
        s.add_model("m0", expected_model("m0", 1))
    return path


def test_a_second_writer_waits_for_the_first(small_store, counts):
    # LMDB has one writer at a time: a second writer process blocks (no error, no timeout)
    # until the first commits, then goes ahead. It blocks already in ts.open(path, "a"),
    # which opens the store's databases in a write transaction. Readers are not blocked.
    # The first writer holds until told (at most two minutes), so a slow machine cannot
    # make the reader look unblocked only because the writer had finished.
    first = worker("hold_write", small_store, 120)
    first.expect("holding")
    second = worker("second_writer", small_store, "late")
    second.expect("trying")
    reader = worker("open_and_load_all", small_store, "r").outcome(timeout=100)
    assert reader == {"result": "opened", "verify_ok": True, "models": 1}, reader
    assert first.proc.poll() is None, "the reader was only quick because the writer had finished"
    time.sleep(0.5)  # the second writer has had time to get past the lock, were it free
    assert second.proc.poll() is None  # waiting, not failed
    first.send("release")
    released = first.result()["released"]
    times = second.result()
    assert times["tried"] < released <= times["opened"] <= times["done"], (times, released)
    counts("second writer waited (s)", round(times["done"] - times["tried"], 2))
    with ts.open(small_store, "r") as s:
        assert sorted(s) == ["late", "m0"] and s.verify().ok


def test_a_writer_killed_holding_the_lock_does_not_block_the_next(small_store):
    # LMDB's write lock is a robust mutex: a writer SIGKILLed inside its transaction
    # releases it, the transaction is lost, the waiting writer proceeds.
    first = worker("hold_write", small_store, 600)
    first.expect("holding")
    second = worker("second_writer", small_store, "after")
    second.expect("trying")
    time.sleep(0.5)
    assert second.proc.poll() is None  # still waiting for the lock
    first.kill()
    second.result(timeout=30)
    with ts.open(small_store, "r") as s:
        assert sorted(s) == ["after", "m0"] and s.verify().ok
        assert check_model("m0", s.load_model("m0")) == 1


def test_a_killed_readers_slot_is_reclaimed(small_store, counts):
    keeper = worker("keep_open", small_store)  # a long-lived process: the table is never reset
    keeper.expect("ready")
    try:
        victim = worker("hold_read", small_store)
        victim.expect("ready")
        victim.kill()
        sizes = []
        with ts.open(small_store, "a") as s:  # a new handle, then writes: the store's chances to clean up
            for v in range(2, 14):
                s.add_model("m0", expected_model("m0", v), replace=True)
                sizes.append(s.stats().file_bytes)
            dead = [line for line in s.env.env.readers().splitlines()[1:] if line.split()[:1] == [str(victim.pid)]]
        counts("data.mdb bytes over 12 replaces with a stale reader", f"{sizes[0]} -> {sizes[-1]}")
        assert dead == [], f"the dead reader {victim.pid} still holds a slot: {dead}"
    finally:
        keeper.close_stdin()
        keeper.result(timeout=30)


def test_the_consistency_check_catches_torn_and_damaged_models():
    # The soak is only as good as check_model: a model mixing two versions, or with one
    # byte changed, must fail it.
    from reliability_common import expected_tensor

    assert check_model("m3", expected_model("m3", 7)) == 7
    torn = expected_model("m3", 7) | {"fresh": expected_tensor("m3", 8, "fresh")}
    with pytest.raises(AssertionError, match="mixes versions"):
        check_model("m3", torn)
    damaged = expected_model("m3", 7)
    damaged["shared"] = damaged["shared"].copy()
    damaged["shared"].reshape(-1).view(np.uint8)[1000] ^= 1
    with pytest.raises(AssertionError, match="not bit-exact"):
        check_model("m3", damaged)
    with pytest.raises(AssertionError, match="tensors"):
        check_model("m3", {k: v for k, v in expected_model("m3", 7).items() if k != "tag"})
