"""The installed import names belong to the project: a user's own ``index.py``,
``packing.py`` or ``bufferpool.py`` cannot shadow the store's libraries, and the wheel puts
no generic top-level name into site-packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile

import pytest
from wheel_build import build_wheel

LIBRARIES = ("index", "packing", "bufferpool")


def test_user_modules_named_like_the_libraries_do_not_shadow_them(tmp_path):
    for name in LIBRARIES:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user\\'s own {name}.py was imported')\n")
    (tmp_path / "script.py").write_text(textwrap.dedent("""
        import numpy as np
        import tensorstore as ts

        rng = np.random.default_rng(0)
        w = rng.standard_normal((300, 70)).astype(np.float32)
        with ts.open("store", "w-", block_bytes=4096) as store:
            store.add_model("m", {"w": w, "b": np.arange(5, dtype=np.int16)})
            store.repack()              # reaches packing
        with ts.open("store", "r", cache_bytes="4MiB") as store:  # reaches bufferpool
            got = store.load_model("m")
        assert got["w"].tobytes() == w.tobytes() and got["b"].tolist() == list(range(5))
        print("ok")
    """))
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_each_library_imports_alone_under_its_installed_name():
    code = "import sys, tensorstore_index, tensorstore_packing, tensorstore_bufferpool; print('tensorstore' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # none of them pulls in the store


def test_wheel_has_no_generic_top_level_names(tmp_path):
    pytest.importorskip("setuptools", minversion="68")
    wheel = build_wheel(tmp_path)
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert not tops & set(LIBRARIES), sorted(tops)
    assert {"tensorstore", "tensorstore_index", "tensorstore_packing", "tensorstore_bufferpool", "tensorstore_dedup"} <= tops
