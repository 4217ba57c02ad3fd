"""The map grows while zero-copy views are alive, and no process crashes (issue 14, item 1).

LMDB's map is address space; growing it remaps the file, and every buffer handed out
before then (a ``store.reader()`` view, a page read inside a snapshot) would point into
unmapped memory: the next read kills the process with SIGBUS or SIGSEGV. Each scenario
runs in a process of its own, so that a crash is an exit status here, not the end of the
test run. Stores are raw (``codec="raw"``): views are of raw blocks, and the ramps that
grow the map would pack to almost nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap



_PRELUDE = """
import sys
import numpy as np
import tensorstore as ts
import tensorstore.environment as environment

path = sys.argv[1]
small = {"w": np.arange(1 << 14, dtype=np.float32)}  # one block: a zero-copy view


def grow(s, name, mib):
    # distinct blocks: every one of them is written
    s.add_model(name, {"x": grown(name, mib)})


def grown(name, mib):
    return np.arange(mib << 18, dtype=np.float32) + len(name)
"""


def _run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    code = _PRELUDE + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def _crashed(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode} (negative: killed by a signal)\nstdout: {proc.stdout}\nstderr: {proc.stderr[-3000:]}"


def _serve_while_another_process_grows(script: str, path, rows: int) -> None:
    """Run ``script`` (after the prelude) as a serving process: once it prints "ready",
    another process adds a model of ``rows`` rows; then the server is told to go on, and
    must end printing "ok"."""
    serving = subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + script, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serving.stdout.readline().strip() == "ready", serving.stderr.read()
        grower = _run(f'with ts.open(path, "a", codec="raw") as s:\n    grow(s, "big", {rows})\nprint("ok")', str(path))
        assert grower.returncode == 0, _crashed(grower)
        out, err = serving.communicate("go\n", timeout=300)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()
    assert serving.returncode == 0 and out.strip() == "ok", f"exit {serving.returncode}\n{out}\n{err[-3000:]}"


def test_adding_hundreds_of_mb_through_the_handle_that_holds_views(tmp_path):
    proc = _run(
        """
        with ts.open(path, "w", codec="raw") as s:
            s.add_model("a", small)
            r = s.reader()
            views = r.load_model("a")
            assert r.is_view(views["w"])
            grow(s, "big", 100)  # past the smallest map a store reserves (64 MiB)
            assert np.array_equal(views["w"], small["w"]), "a held view changed"
            with s.reader() as r2:
                again = r2.load_model("big")["x"]
                assert np.array_equal(again, grown("big", 100))
                del again
            assert np.array_equal(s.load_model("a")["w"], small["w"])
            del views
            r.close()
        print("ok")
        """,
        str(tmp_path / "store"),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", _crashed(proc)


def test_a_serving_process_holding_views_loads_again_after_another_grows_the_store(tmp_path):
    path = tmp_path / "store"
    setup = _run('with ts.open(path, "w", codec="raw") as s:\n    s.add_model("a", small)\nprint("ok")', str(path))
    assert setup.returncode == 0, _crashed(setup)
    _serve_while_another_process_grows(textwrap.dedent(
            """
            with ts.open(path, "r") as s:
                r = s.reader()
                views = r.load_model("a")
                assert r.is_view(views["w"])
                print("ready", flush=True)
                sys.stdin.readline()  # the store has grown meanwhile
                with s.reader() as r2:
                    big = r2.load_model("big")["x"]
                    assert np.array_equal(big, grown("big", 100))
                    del big
                assert s.load_model("big")["x"][0] == 3
                assert np.array_equal(views["w"], small["w"]), "a held view changed"
                assert np.array_equal(s.load_model("a")["w"], small["w"])
                del views
                r.close()
            print("ok", flush=True)
            """), path, 100)


def test_past_its_reservation_the_map_grows_only_when_no_view_is_alive(tmp_path):
    # A process with little address space (here: a 16 MiB reservation) cannot grow the map
    # without remapping: while views live it refuses with a clear error and changes nothing.
    proc = _run(
        """
        environment._MIN_MAP = 16 << 20
        with ts.open(path, "w", codec="raw") as s:
            s.add_model("a", small)
            r = s.reader()
            views = r.load_model("a")
            before = s.stats()
            try:
                grow(s, "big", 24)
            except ts.StoreFullError as exc:
                msg = str(exc)
                assert "zero-copy view" in msg and "left as it was" in msg, msg
            else:
                raise AssertionError("grew the map under live views")
            assert s.stats() == before and "big" not in s
            assert np.array_equal(views["w"], small["w"])
            del views
            r.close()
            grow(s, "big", 24)  # nothing points into the map now: it grows
            assert s.env.env.info()["map_size"] > 16 << 20
            assert np.array_equal(s.load_model("big")["x"], grown("big", 24)) and s.verify().ok
        print("ok")
        """,
        str(tmp_path / "store"),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", _crashed(proc)


def test_a_reader_past_its_reservation_refuses_while_views_live_then_recovers(tmp_path):
    # Another process grows the store past this process's map: adopting the new size
    # remaps, so it waits until this process's views are gone (a clear error meanwhile).
    path = tmp_path / "store"
    setup = _run('with ts.open(path, "w", codec="raw") as s:\n    s.add_model("a", small)\nprint("ok")', str(path))
    assert setup.returncode == 0, _crashed(setup)
    _serve_while_another_process_grows(textwrap.dedent(
            """
            environment._MIN_MAP = 16 << 20
            with ts.open(path, "r") as s:
                r = s.reader()
                views = r.load_model("a")
                print("ready", flush=True)
                sys.stdin.readline()
                try:
                    s.load_model("big")
                except ts.StoreFullError as exc:
                    assert "zero-copy view" in str(exc), exc
                else:
                    raise AssertionError("remapped under live views")
                assert np.array_equal(views["w"], small["w"])
                del views
                r.close()
                assert np.array_equal(s.load_model("big")["x"], grown("big", 24))
            print("ok", flush=True)
            """), path, 24)
