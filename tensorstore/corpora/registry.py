"""The benchmark corpora by name (``tensorstore bench --corpus NAME``).

A corpus is a model family, an evaluator, each model's base (what a name-based delta such
as ZipLLM's must be told; the store finds its references itself) and the store geometry
its benchmarks use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAMES = ("digits", "minilm", "embedding", "embedding-quick", "minilm-renamed", "minilm-vocab", "minilm-vocab-rows")


@dataclass(frozen=True, slots=True)
class Corpus:
    """A family ready for the benchmarks; ``root`` is the model every other one descends from
    (None when unknown)."""

    name: str
    family: dict[str, dict[str, np.ndarray]]
    evaluate: Callable[[str, dict[str, np.ndarray]], float]
    parents: dict[str, str | None]
    root: str | None
    page_size: str
    block_bytes: str


def _no_accuracy(name: str, tensors: dict[str, np.ndarray]) -> float:
    return 0.0  # a folder of files comes with no task to measure


def load(corpus: str) -> Corpus:
    """The corpus ``corpus``: one of :data:`NAMES` or a folder of ``.safetensors`` files.

    Raises ``FileNotFoundError`` when a cached corpus was never built or the folder has no
    model files.
    """
    if corpus == "digits":
        from . import digits

        family = digits.build_family()
        root = digits.FAMILY[0].name
        return Corpus(corpus, family, digits.evaluate, {n: (None if n == root else root) for n in family}, root,
                      "256KiB", "16KiB")
    if corpus == "minilm":
        from . import minilm_family

        family = minilm_family.load_family()
        root = next(iter(family))  # every member is fine-tuned from the base encoder, which the first one keeps
        return Corpus(corpus, family, minilm_family.evaluate, {n: (None if n == root else root) for n in family}, root,
                      "1MiB", "64KiB")
    if corpus in ("minilm-renamed", "minilm-vocab", "minilm-vocab-rows"):
        from ..units import parse_size
        from . import derived

        c = load("minilm")
        if corpus == "minilm-renamed":
            kind, family = "renamed", derived.renamed(c.family, c.root)
        else:
            kind = "vocab_insert"
            whole_blocks = parse_size(c.block_bytes, "block_bytes") if corpus == "minilm-vocab" else None
            family = derived.vocab_insert(c.family, c.root, whole_blocks)
        evaluate = derived.evaluator(kind, c.evaluate, c.family[c.root])
        return Corpus(corpus, family, evaluate, c.parents, c.root, c.page_size, c.block_bytes)
    if corpus == "embedding":
        from . import embedding_family

        family = embedding_family.load_family()
        parents = embedding_family.parents()
        return Corpus(corpus, family, embedding_family.evaluate, parents, next(iter(family)), "1MiB", "64KiB")
    if corpus == "embedding-quick":
        from . import embedding_family

        fam = embedding_family.quick_family()
        return Corpus(corpus, fam.models, fam.evaluate, fam.parents, next(iter(fam.models)), "64KiB", "4KiB")
    from ..formats import read_model_file

    folder = Path(corpus)
    if not folder.is_dir():
        raise FileNotFoundError(f"unknown corpus {corpus!r}: use one of {', '.join(NAMES)} or a folder of .safetensors files")
    family = {p.stem: read_model_file(p)[0] for p in sorted(folder.glob("*.safetensors"))}
    if not family:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    return Corpus(corpus, family, _no_accuracy, {n: None for n in family}, None, "1MiB", "64KiB")
