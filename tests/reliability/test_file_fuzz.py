"""Random damage anywhere in data.mdb, met by the command line (issue 14, item 7).

Each run copies a small store, then flips a random byte (a quarter of the runs within
LMDB's two meta pages, the rest anywhere: catalog, index and data pages alike) or cuts
the file at a random length, and runs ``tensorstore verify`` and ``tensorstore export``
of every model on it. Every run must end with a report or a one-line error and exit 1
(no traceback, no crash), and an export that exits 0 must hold the model's exact bytes.

The runs happen in one worker process, so that a crash is seen as one (and named by the
run it happened in). ``TS_FILE_FUZZ`` runs (default 100; the slow test 3000).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from support import random_model

import tensorstore as ts
from reliability_common import env_int

_WORKER = textwrap.dedent(
    """
    import contextlib, io, json, os, random, shutil, sys
    import numpy as np
    from safetensors.numpy import load_file
    from tensorstore.cli import main

    pristine, work, runs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    expected = json.loads(sys.stdin.read())  # model -> tensor -> hex of its bytes
    data = open(os.path.join(pristine, "data.mdb"), "rb").read()
    rng = random.Random(seed)

    def cli(*argv):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([str(a) for a in argv])
            except BaseException as exc:
                return "raised", f"{type(exc).__name__}: {exc}", ""
        return code, err.getvalue(), out.getvalue()

    failures, outcomes = [], {"verify ok": 0, "verify problems": 0, "error": 0, "exports exact": 0, "exports refused": 0}
    for run in range(runs):
        print(f"run {run}", file=sys.stderr, flush=True)  # the last one names a crash
        path = os.path.join(work, f"r{run}")
        os.mkdir(path)
        damaged = bytearray(data)
        kind = rng.random()
        if kind < 0.2:
            what = ("cut", rng.randrange(len(data)))
            damaged = damaged[: what[1]]
        else:
            at = rng.randrange(8192) if kind < 0.4 else rng.randrange(len(data))
            what = ("flip", at)
            damaged[at] ^= rng.randrange(1, 256)
        with open(os.path.join(path, "data.mdb"), "wb") as f:
            f.write(damaged)
        code, err, out = cli("verify", path)
        report = code == 1 and not err and "problem(s) found" in out
        one_line = code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        if code == 0:
            outcomes["verify ok"] += 1
        elif report:
            outcomes["verify problems"] += 1
        elif one_line:
            outcomes["error"] += 1
        else:
            failures.append([run, what, "verify", code, err[-500:]])
        for model, tensors in expected.items():
            out = os.path.join(path, f"{model}.safetensors")
            code, err, _ = cli("export", path, model, out)
            if code == 0:
                got = load_file(out)
                if sorted(got) != sorted(tensors) or any(got[k].tobytes().hex() != v for k, v in tensors.items()):
                    failures.append([run, what, "export returned wrong bytes with exit 0", model])
                else:
                    outcomes["exports exact"] += 1
            elif code != 1 or len(err.strip().splitlines()) != 1:
                failures.append([run, what, "export", code, err[-500:]])
            else:
                outcomes["exports refused"] += 1
        shutil.rmtree(path)
    print(json.dumps({"failures": failures, "outcomes": outcomes}), flush=True)
    """
)


def _fuzz(tmp_path, runs: int, seed: int, counts) -> None:
    pristine = tmp_path / "pristine"
    models = {"a": random_model(0), "b": random_model(1)}
    with ts.open(pristine, "w", page_size="16KiB", block_bytes="4KiB") as s:
        for name, tensors in models.items():
            s.add_model(name, tensors)
    expected = {m: {k: v.tobytes().hex() for k, v in t.items()} for m, t in models.items()}
    work = tmp_path / "runs"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(pristine), str(work), str(runs), str(seed)],
        input=json.dumps(expected), capture_output=True, text=True, timeout=1800,
    )
    last = [line for line in proc.stderr.splitlines() if line.startswith("run ")][-1:]
    assert proc.returncode == 0, f"the worker died (exit {proc.returncode}) in {last}: {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failures"] == [], result["failures"][:5]
    o = result["outcomes"]
    assert o["verify problems"] + o["error"] > runs // 3, o  # much of the damage lands in free space; the rest is seen
    counts("runs (byte flips and cuts of data.mdb)", runs)
    counts("outcomes", o)


def test_random_damage_anywhere_in_data_mdb(tmp_path, counts):
    _fuzz(tmp_path, env_int("TS_FILE_FUZZ", 100), 14, counts)


@pytest.mark.slow
def test_random_damage_anywhere_in_data_mdb_long(tmp_path, counts):
    _fuzz(tmp_path, env_int("TS_FILE_FUZZ", 3000), 15, counts)


@pytest.mark.parametrize("db, key, value", [
    ("blocks", b"\x01\x02\x03", b"x"),  # a key of the wrong length
    ("blocks", (7).to_bytes(8, "big"), b"\x00" * 3),  # a record cut short
    ("pagemeta", b"\xff", b"\x00"),
    ("models", b"ghost", b"\x01\x02"),
])
def test_verify_reports_damaged_catalog_records(tmp_path, capsys, db, key, value):
    from tensorstore.cli import main
    from reliability_common import raw_env

    path = tmp_path / "s"
    with ts.open(path, "w", page_size="16KiB", block_bytes="4KiB") as s:
        s.add_model("a", random_model(0))
    env = raw_env(path)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db.encode(), txn=txn))
    env.close()
    code = main(["verify", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and err == "" and "problem(s) found" in out, (out, err)
    code = main(["verify", "--json", str(path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["ok"] and report["problems"]


def test_damaged_meta_pages_read_as_damage_not_as_a_version(tmp_path, capsys):
    from tensorstore.cli import main

    path = tmp_path / "s"
    with ts.open(path, "w") as s:
        s.add_model("a", random_model(0))
    data = bytearray((path / "data.mdb").read_bytes())
    for meta in (0, 4096):  # both meta pages: the version word after LMDB's magic
        data[meta + 20] ^= 0xFF
    (path / "data.mdb").write_bytes(data)
    code = main(["ls", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "damaged" in err and "restore it from a copy" in err and "not supported" not in err.split("(")[0]
