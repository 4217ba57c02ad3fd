"""Several processes on one remote: no lost update; SIGKILL at any request leaves both sides valid."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from remote_support import family, same

import tensorstore as ts
from tensorstore import remote

WORKER = Path(__file__).parents[1] / "helpers" / "remote_worker.py"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)


def concurrent_rounds(tmp_path, url, rounds, env=None):
    procs = [subprocess.Popen([sys.executable, str(WORKER), "rounds", str(tmp_path / f"s{p}"), url, f"p{p}", str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for p in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    names = {m["model"] for m in remote.remote_ls(url)["models"]}
    assert names == {f"p{p}-{i}" for p in range(2) for i in range(rounds)}  # no lost update
    assert remote.verify_remote(url) == []


def test_two_processes_pushing_at_once_lose_nothing(tmp_path):
    concurrent_rounds(tmp_path, (tmp_path / "remote").as_uri(), 8)


@pytest.mark.slow
def test_two_processes_pushing_at_once_lose_nothing_20_rounds(tmp_path):
    concurrent_rounds(tmp_path, (tmp_path / "remote").as_uri(), 20)


def source(tmp_path) -> Path:
    path = tmp_path / "src"
    with ts.open(path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        for name, t in family().items():
            s.add_model(name, t)
    return path



def check_push_kill(tmp_path, k, pack_bytes=4 << 10):
    src = source(tmp_path)
    url = (tmp_path / f"remote{k}").as_uri()
    first = run("push", src, url, k, pack_bytes)
    if first.returncode == 0:
        return False  # the push made fewer requests than k: nothing was killed
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    # The remote is as before (empty) or as after, and verifies either way.
    if (tmp_path / f"remote{k}" / "heads").exists():
        assert remote.verify_remote(url) == []
    with ts.open(src, "r") as s:
        assert s.verify().ok
    rerun = run("push", src, url, -1)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert remote.verify_remote(url) == []
    assert {m["model"] for m in remote.remote_ls(url)["models"]} == set(family())
    return True


def check_pull_kill(tmp_path, url, k):
    dst = tmp_path / f"dst{k}"
    first = run("pull", url, dst, k)
    if first.returncode == 0:
        return False
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    if (dst / "data.mdb").exists():
        with ts.open(dst, "r") as s:
            assert s.verify().ok
            fam = family()
            for name in s:  # every model there is whole
                assert same(s.load_model(name), fam[name])
    rerun = run("pull", url, dst, -1)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with ts.open(dst, "r") as s:
        assert s.verify().ok and sorted(s) == sorted(family())
    assert remote.verify_remote(url) == []
    return True


@pytest.mark.parametrize("k", [1, 4, 9, 16, 25])
def test_sigkill_during_push(tmp_path, k):
    assert check_push_kill(tmp_path, k)


@pytest.mark.parametrize("k", [1, 2, 5, 8, 13])
def test_sigkill_during_pull(tmp_path, k):
    src = source(tmp_path)
    url = (tmp_path / "remote").as_uri()
    with ts.open(src, "r") as s:
        remote.push(s, url, pack_bytes=4 << 10)
    assert check_pull_kill(tmp_path, url, k)


# One block per pack (pack_bytes=1): the family's 4 models then take about 30 requests to
# push and as many to pull, so every point before and after each request can be killed.
@pytest.mark.slow
def test_sigkill_during_push_at_50_points(tmp_path):
    killed = sum(check_push_kill(tmp_path / str(k), k, 1) for k in range(1, 61) if not (tmp_path / str(k)).mkdir())
    print(f"push killed at {killed} of 60 points, each verified and rerun")  # docs/reliability.md
    assert killed >= 50


@pytest.mark.slow
def test_sigkill_during_pull_at_50_points(tmp_path):
    src = source(tmp_path)
    url = (tmp_path / "remote").as_uri()
    with ts.open(src, "r") as s:
        remote.push(s, url, pack_bytes=1)
    killed = sum(check_pull_kill(tmp_path, url, k) for k in range(1, 61))
    print(f"pull killed at {killed} of 60 points, each verified and rerun")  # docs/reliability.md
    assert killed >= 50
