"""The command line speaks of its own flags, names the file that failed, and says which
``tensorstore`` it runs when another package of that import name is on the path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tensorstore.cli import main
from tensorstore.units import format_size

API_WORDS = re.compile(r"mode '|=True|=False|replace=|page_size|block_bytes")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def models(tmp_path):
    save_file({"w": np.ones((64, 64), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.zeros((64, 64), np.float32)}, str(tmp_path / "b.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    return tmp_path


def test_errors_name_flags_not_python_arguments(models, capsys):
    store = models / "store"
    assert run(capsys, "add", store, models / "a.safetensors")[0] == 0
    code, _, err = run(capsys, "add", store, models / "a.safetensors")
    assert code == 1 and "--replace" in err and not API_WORDS.search(err)
    code, _, err = run(capsys, "stats", models / "nowhere")
    assert code == 1 and "tensorstore add" in err and not API_WORDS.search(err)
    code, _, err = run(capsys, "add", store, models / "b.safetensors", "--block-bytes", "8KiB")
    assert code == 1 and "--block-bytes is fixed at creation" in err and not API_WORDS.search(err)
    code, _, err = run(capsys, "add", models / "s2", models / "a.safetensors", "--page-size", "4XB")
    assert code == 1 and "--page-size '4XB' is not a size" in err


def test_a_failing_file_is_named_and_nothing_is_added(models, capsys):
    # One transaction for every FILE|DIR: the one that fails is named, the others stay out.
    store = models / "store"
    assert run(capsys, "add", store, models / "b.safetensors")[0] == 0
    code, out, err = run(capsys, "add", store, models / "a.safetensors", models / "bad.safetensors")
    assert code == 1 and len(err.splitlines()) == 1
    assert str(models / "bad.safetensors") in err and "nothing was added" in err
    assert "added a" not in out
    code, out, _ = run(capsys, "ls", store, "--json")
    assert [r["model"] for r in json.loads(out)] == ["b"]


def test_an_empty_name_is_an_error_not_a_fallback(models, capsys):
    for name in ("", "  "):
        code, _, err = run(capsys, "add", models / "store", models / "a.safetensors", "--name", name)
        assert code == 2 and "--name must not be empty" in err
    assert not (models / "store").exists()


def test_stats_of_a_tiny_store_does_not_count_page_room_as_data(models, capsys):
    store = models / "store"
    assert run(capsys, "add", store, models / "a.safetensors", "--page-size", "1MiB")[0] == 0
    s = json.loads(run(capsys, "stats", store, "--json")[1])
    assert s["logical_bytes"] < s["stored_bytes"] == 1 << 20  # 16 KiB of tensors, one 1 MiB page
    code, out, _ = run(capsys, "stats", store)
    assert code == 0
    # The page's free room is shown as such, and the ratio is of the data as stored, so it
    # is not below 1 (it would be 16 KiB / 1 MiB = 0.02 counted in page bytes).
    room = format_size(s["stored_bytes"] - s["encoded_bytes"])
    assert f"{format_size(s['encoded_bytes'])} of blocks, {room} room not yet filled" in out
    ratio = float(re.search(r"dedup ratio\s+([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(s["logical_bytes"] / s["encoded_bytes"], abs=0.01) and ratio >= 1.0


# -- the import name --------------------------------------------------------------------

FOREIGN_INIT = '''"""A stand-in for Google's TensorStore: same import name, nothing of ours."""
__version__ = "0.1.99"
class TensorStore: pass
class Spec: pass
def open(spec): raise RuntimeError("Google's open")
'''


def _env_with(path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _console_script() -> str:
    found = Path(sys.executable).with_name("tensorstore")
    if not found.exists():
        pytest.skip("the tensorstore console script is not installed next to this Python")
    return str(found)


def test_version_names_the_distribution_and_where_it_is_imported_from():
    done = subprocess.run([_console_script(), "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("tensorstore-dedup ") and "import name tensorstore" in done.stdout
    here = Path(__file__).resolve().parents[2] / "tensorstore"
    assert str(here) in done.stdout or "site-packages" in done.stdout


def test_a_foreign_tensorstore_on_the_path_is_named_not_a_traceback(tmp_path):
    fake = tmp_path / "fake" / "tensorstore"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FOREIGN_INIT)
    env = _env_with(tmp_path / "fake")
    for argv in ([_console_script(), "--version"], [_console_script(), "ls", str(tmp_path)],
                 [sys.executable, "-m", "tensorstore_dedup", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert "Google's TensorStore" in done.stderr and str(fake) in done.stderr
        assert "cannot share one environment" in done.stderr and "virtual environment" in done.stderr


def test_python_m_tensorstore_detects_another_package_installed_over_this_one(tmp_path):
    # pip installing Google's TensorStore into the same site-packages replaces our
    # __init__.py and leaves our other files: `python -m tensorstore` then runs our
    # __main__.py under their package, and must say so.
    merged = tmp_path / "site" / "tensorstore"
    shutil.copytree(Path(__file__).resolve().parents[2] / "tensorstore", merged,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (merged / "__init__.py").write_text(FOREIGN_INIT)
    done = subprocess.run([sys.executable, "-m", "tensorstore", "--version"], capture_output=True, text=True,
                          env=_env_with(tmp_path / "site"), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Google's TensorStore (pip package `tensorstore`) 0.1.99" in done.stderr and str(merged) in done.stderr
