"""The command line: each command, its --json, and its exit status on user errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from support import random_model

from tensorstore.cli import main


@pytest.fixture
def files(tmp_path):
    base = random_model(0)
    tuned = dict(base, **{"layer.0.bias": base["layer.0.bias"] * 2})
    save_file(base, str(tmp_path / "base.safetensors"), metadata={"author": "tests"})
    np.savez(tmp_path / "tuned.npz", **tuned)
    return tmp_path, base, tuned


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_ls_stats_export_rm_verify(files, capsys):
    d, base, tuned = files
    store = d / "store"
    code, out, _ = run(capsys, "add", store, d / "base.safetensors", d / "tuned.npz", "--block-bytes", "4KiB")
    assert code == 0 and "added base" in out and "added tuned" in out

    code, out, _ = run(capsys, "ls", store, "--json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"base", "tuned"}
    assert rows["tuned"]["private_bytes"] == tuned["layer.0.bias"].nbytes

    code, out, _ = run(capsys, "stats", store, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["models"] == 2 and stats["block_bytes"] == 4096
    assert stats["logical_bytes"] == 2 * sum(v.nbytes for v in base.values())

    out_file = d / "out.safetensors"
    code, _, _ = run(capsys, "export", store, "base", out_file)
    back = load_file(str(out_file))
    assert code == 0 and set(back) == set(base)
    assert all(back[k].tobytes() == base[k].tobytes() and back[k].shape == base[k].shape for k in base)

    code, out, _ = run(capsys, "verify", store, "--json")
    assert code == 0 and json.loads(out)["ok"] is True

    code, out, _ = run(capsys, "rm", store, "tuned")
    assert code == 0 and "deleted tuned" in out
    code, out, _ = run(capsys, "ls", store, "--json")
    assert [r["model"] for r in json.loads(out)] == ["base"]


def test_add_with_name_and_replace(files, capsys):
    d, _, _ = files
    store = d / "store"
    assert run(capsys, "add", store, d / "base.safetensors", "--name", "prod")[0] == 0
    code, _, err = run(capsys, "add", store, d / "tuned.npz", "--name", "prod")
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert run(capsys, "add", store, d / "tuned.npz", "--name", "prod", "--replace")[0] == 0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["rm", "{store}", "nope"], "no model 'nope'"),
        (["export", "{store}", "nope", "{d}/x.safetensors"], "no model 'nope'"),
        (["add", "{store}", "{d}/missing.safetensors"], "no such file"),
        (["add", "{store}", "{d}/bad.safetensors"], "not a valid safetensors file"),
        (["stats", "{d}/nowhere"], "no store"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(files, capsys, argv, needle):
    d, _, _ = files
    (d / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    store = d / "store"
    run(capsys, "add", store, d / "base.safetensors")
    code, _, err = run(capsys, *[a.format(store=store, d=d) for a in argv])
    assert code == 1
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert run(capsys, "verify", store)[0] == 0


def test_bad_usage_exits_2(files, capsys):
    d, _, _ = files
    with pytest.raises(SystemExit) as e:
        main(["add"])
    assert e.value.code == 2
    code, _, err = run(capsys, "add", d / "s", d / "base.safetensors", d / "tuned.npz", "--name", "x")
    assert code == 2 and "exactly one FILE" in err
    assert not (d / "s").exists()


def test_the_console_entry_point_runs(files):
    d, _, _ = files
    proc = subprocess.run([sys.executable, "-m", "tensorstore", "stats", str(d / "nowhere")], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("tensorstore stats: error:")
    proc = subprocess.run([sys.executable, "-m", "tensorstore", "add", str(d / "s"), str(d / "base.safetensors")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""  # no progress bar when not on a terminal


def test_dedup_command(tmp_path, capsys):
    from tensorstore.corpora import digits
    from tensorstore.formats import write_safetensors

    fam = digits.build_family()
    for n, t in fam.items():
        write_safetensors(tmp_path / f"{n}.safetensors", t)
    store = tmp_path / "s"
    assert run(capsys, "add", store, *sorted(tmp_path.glob("*.safetensors")), "--block-bytes", "16KiB")[0] == 0
    code, out, _ = run(capsys, "dedup", store, "--tolerance", "0.05", "--dry-run")
    assert code == 0 and "accuracy was NOT checked" in out and "would save" in out
    code, out, _ = run(capsys, "dedup", store, "--evaluator", "tensorstore.corpora.digits:evaluate",
                       "--max-accuracy-drop", "0.01", "--tolerance", "0.05", "--json")
    report = json.loads(out)
    assert code == 0 and report["accuracy_checked"] and report["bytes_saved"] > 0
    assert all(m["accuracy_after"] >= m["accuracy_before"] - 0.01 for m in report["models"])
    code, _, err = run(capsys, "dedup", store, "--evaluator", "no_such_module:f")
    assert code == 1 and "cannot import evaluator module" in err
    code, _, err = run(capsys, "dedup", store, "--evaluator", "nocolon")
    assert code == 2 and "MODULE:FUNC" in err
    code, _, err = run(capsys, "dedup", store, "--max-accuracy-drop", "1.5", "--unchecked")
    assert code == 1 and "max_accuracy_drop" in err


def test_dedup_without_an_evaluator_changes_nothing_unless_unchecked(tmp_path, capsys):
    import tensorstore as ts
    from support import snapshot

    rng = np.random.default_rng(3)
    base = {"fc.weight": rng.standard_normal((256, 64)).astype(np.float32)}
    tuned = {"fc.weight": base["fc.weight"] + np.float32(1e-3) * rng.standard_normal((256, 64)).astype(np.float32)}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    store = tmp_path / "s"
    assert run(capsys, "add", store, tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", "--block-bytes", "4KiB")[0] == 0
    with ts.open(store, "r") as s:
        before = snapshot(s)
    code, out, err = run(capsys, "dedup", store, "--tolerance", "0.05")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "no weights were changed" in err and "--unchecked" in err and "--evaluator" in err
    with ts.open(store, "r") as s:
        assert snapshot(s) == before
    code, out, _ = run(capsys, "dedup", store, "--tolerance", "0.05", "--unchecked")
    assert code == 0 and "accuracy was NOT checked" in out
    with ts.open(store, "r") as s:
        got = s.load_model("base")["fc.weight"]
        np.testing.assert_array_equal(got, base["fc.weight"])  # the base stays exact
        np.testing.assert_array_equal(s.load_model("tuned")["fc.weight"], base["fc.weight"])  # the fine-tune moved
        assert s.stats().unique_bytes < before[0]["unique_bytes"]


def test_shared_cache_shows_and_clears_what_no_process_uses(files, capsys):
    import tensorstore as ts

    d, base, _ = files
    store, cache = d / "store", d / "cache"
    assert run(capsys, "add", store, d / "base.safetensors", "--block-bytes", "4KiB")[0] == 0
    with ts.open(store, "r", shared_cache=cache) as s, s.reader() as r:
        held = r.load_tensor("base", "embed.weight")  # in use while the command runs
        r.load_tensor("base", "layer.0.weight")  # dropped at once: unused
        code, out, _ = run(capsys, "shared-cache", store, "--cache", cache, "--json")
        assert code == 0 and json.loads(out)["tensors"] == 2
        code, out, _ = run(capsys, "shared-cache", store, "--cache", cache, "--clear", "--json")
        usage = json.loads(out)
        assert code == 0 and usage["removed"] == 1 and usage["tensors"] == 1  # the held one stays
        assert np.array_equal(held, base["embed.weight"])


def test_paths_the_store_cannot_live_at_are_one_line_errors(files, capsys):
    d, _, _ = files
    (d / "plain").write_bytes(b"a regular file")
    code, out, err = run(capsys, "add", d / "plain" / "store", d / "base.safetensors")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "Not a directory" in err and str(d / "plain") in err
    assert (d / "plain").read_bytes() == b"a regular file"


def test_a_new_store_on_a_read_only_file_system_is_a_one_line_error(files, capsys, tmp_path):
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only tmpfs needs root")
    d, _, _ = files
    target = tmp_path / "ro"
    target.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        with pytest.raises(OSError) as info:  # the file system is truly read-only
            (target / "probe").write_bytes(b"x")
        assert info.value.errno == 30
        code, out, err = run(capsys, "add", target / "store", d / "base.safetensors")
        assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "Read-only file system" in err
        assert list(target.iterdir()) == []
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_add_of_several_files_is_all_or_none(files, capsys):
    import tensorstore as ts
    from support import snapshot

    d, base, tuned = files
    (d / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    store = d / "s"
    assert run(capsys, "add", store, d / "tuned.npz")[0] == 0
    with ts.open(store, "r") as s:
        before = snapshot(s)
    code, out, err = run(capsys, "add", store, d / "base.safetensors", d / "broken.safetensors")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "broken.safetensors" in err
    with ts.open(store, "r") as s:
        assert snapshot(s) == before and "base" not in s  # the first file was not kept
    code, _, _ = run(capsys, "add", store, d / "base.safetensors", "--json")
    with ts.open(store, "r") as s:
        assert code == 0 and sorted(s) == ["base", "tuned"]


def test_a_failed_add_to_a_new_path_leaves_no_store(files, capsys):
    d, _, _ = files
    (d / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code, _, err = run(capsys, "add", d / "new", d / "base.safetensors", d / "broken.safetensors")
    assert code == 1 and "broken.safetensors" in err
    assert not (d / "new").exists()
    (d / "kept").mkdir()  # a directory the user made stays; only the store files go
    code, _, _ = run(capsys, "add", d / "kept", d / "broken.safetensors")
    assert code == 1 and (d / "kept").is_dir() and list((d / "kept").iterdir()) == []
