"""The guide's "From PyTorch" and "From a Hugging Face directory" snippets run as written:
each code block is read from docs/guide.md (the block after its ``<!-- snippet: NAME -->``
marker) and run in a new process in a new, empty directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def snippet(name: str) -> tuple[str, str]:
    """(language, code) of the block marked ``<!-- snippet: name -->`` in the guide."""
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```(\w+)\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"docs/guide.md has no snippet {name!r}"
    return found.group(1), found.group(2)


def run(name: str, cwd: Path) -> subprocess.CompletedProcess:
    lang, code = snippet(name)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    argv = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"snippet {name} failed:\n{done.stderr}"
    return done


def test_from_pytorch(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (the test extra installs the CPU build)")
    done = run("from-pytorch", tmp_path)
    assert "torch.bfloat16" in done.stdout and "0.weight" in done.stdout
    assert (tmp_path / "models.ts" / "data.mdb").is_file()


def test_from_a_hugging_face_directory(tmp_path):
    run("hf-directory-make", tmp_path)
    made = sorted(p.name for p in (tmp_path / "my-model").iterdir())
    done = run("hf-directory", tmp_path)
    assert "added my-model" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == made
    small = {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert {p.name for p in (tmp_path / "out-1shard").iterdir()} == small | {"model.safetensors"}
    for name in made:
        if not name.endswith(".safetensors") or name in small:
            continue
        assert (tmp_path / "out" / name).stat().st_size == (tmp_path / "my-model" / name).stat().st_size
