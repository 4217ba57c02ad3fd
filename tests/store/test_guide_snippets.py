"""The guide's "From PyTorch" and "From a Hugging Face directory" snippets run as written:
each code block is read from docs/guide.md (the block after its ``<!-- snippet: NAME -->``
marker) and run in a new process in a new, empty directory.

The default tests run them with this environment's interpreter. The slow one runs them as
a new user would: in a fresh virtual environment holding only the project's wheel and the
test extra's torch, installed by pip from the package index (pip's cache makes it quick).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wheel_build import REPO, build_wheel

GUIDE = REPO / "docs" / "guide.md"
SMALL = {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}


def snippet(name: str) -> tuple[str, str]:
    """(language, code) of the block marked ``<!-- snippet: name -->`` in the guide."""
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```(\w+)\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"docs/guide.md has no snippet {name!r}"
    return found.group(1), found.group(2)


def run(name: str, cwd: Path, python: Path = Path(sys.executable)) -> subprocess.CompletedProcess:
    """Run snippet ``name`` in ``cwd`` with ``python``, its scripts first on PATH."""
    lang, code = snippet(name)
    env = dict(os.environ, PATH=os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]))
    env.pop("PYTHONPATH", None)
    argv = [str(python), "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"snippet {name} failed:\n{done.stderr}"
    return done


def check_from_pytorch(cwd: Path, python: Path = Path(sys.executable)) -> None:
    done = run("from-pytorch", cwd, python)
    assert "torch.bfloat16" in done.stdout and "0.weight" in done.stdout
    assert (cwd / "models.ts" / "data.mdb").is_file()


def check_from_a_hugging_face_directory(cwd: Path, python: Path = Path(sys.executable)) -> None:
    run("hf-directory-make", cwd, python)
    made = sorted(p.name for p in (cwd / "my-model").iterdir())
    done = run("hf-directory", cwd, python)
    assert "added my-model" in done.stdout
    assert sorted(p.name for p in (cwd / "out").iterdir()) == made
    assert {p.name for p in (cwd / "out-1shard").iterdir()} == SMALL | {"model.safetensors"}
    for name in made:  # the index is written anew (its JSON laid out as export lays it out)
        if name.endswith(".safetensors"):
            assert (cwd / "out" / name).stat().st_size == (cwd / "my-model" / name).stat().st_size
        elif name in SMALL:
            assert (cwd / "out" / name).read_bytes() == (cwd / "my-model" / name).read_bytes()


def test_from_pytorch(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (the test extra installs the CPU build)")
    check_from_pytorch(tmp_path)


def test_from_a_hugging_face_directory(tmp_path):
    check_from_a_hugging_face_directory(tmp_path)


def _test_extra(name: str) -> str:
    """The test extra's requirement for ``name`` (so this test installs what CI installs)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    (spec,) = [r for r in extra if re.match(rf"{re.escape(name)}\b", r)]
    return spec


@pytest.mark.slow
def test_the_snippets_in_a_fresh_virtual_environment(tmp_path):
    pytest.importorskip("setuptools", minversion="68")
    wheel = build_wheel(tmp_path / "build")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel), _test_extra("torch")],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    # The snippets must run against the installed wheel, not this work tree.
    where = subprocess.run([str(python), "-c", "import tensorstore; print(tensorstore.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where.stdout + where.stderr
    for name, check in [("torch", check_from_pytorch), ("hf", check_from_a_hugging_face_directory)]:
        (tmp_path / name).mkdir()
        check(tmp_path / name, python)
