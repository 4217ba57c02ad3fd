"""Families derived from a cached one, where a reference by tensor name and position fails.

Two ways real model families defeat a name-based delta (ZipLLM's, or the store's
reference by position), built from a family already cached (no download, no training):

``renamed``
    Every member but the root re-exported under other tensor names (a framework prefix and
    ``/`` for ``.``, as a checkpoint converted between libraries is): the weights are those
    of the fine-tune, bit for bit, but no tensor name matches its base's.
``vocab_insert``
    Every member but the root with a vocabulary extension: new rows *inserted* into its
    largest 2-D table (the word embeddings) at a few fixed places, not appended, so every
    row after the first insertion moves and no block of the table lies where its base's did.
    New rows are drawn like a resized embedding's (the table's mean, plus noise of its
    standard deviation), seeded by the member's position in the family.

Used by ``tensorstore bench --suite contentrefs`` and the corpora ``minilm-renamed`` and
``minilm-vocab`` (:mod:`tensorstore.corpora.registry`).
"""

from __future__ import annotations

import numpy as np

Family = dict[str, dict[str, np.ndarray]]

#: The prefix a renamed member's tensor names get (and ``.`` becomes ``/``).
RENAME_PREFIX = "model/"
#: Where rows are inserted (fractions of the table's rows) and how many at each place: not
#: multiples of a block's rows, so blocks after each place straddle two of the base's.
INSERTS = ((0.1, 13), (0.45, 29), (0.8, 7))


def renamed_name(name: str) -> str:
    """The name a tensor ``name`` gets in a renamed member."""
    return RENAME_PREFIX + name.replace(".", "/")


def renamed(family: Family, root: str) -> Family:
    """``family`` with every member but ``root`` under renamed tensors (same arrays)."""
    return {model: tensors if model == root else {renamed_name(k): v for k, v in tensors.items()}
            for model, tensors in family.items()}


def table_name(tensors: dict[str, np.ndarray]) -> str:
    """The largest 2-D tensor of a model (the word embeddings of a language model)."""
    return max((k for k, v in tensors.items() if v.ndim == 2), key=lambda k: tensors[k].nbytes)


def insert_rows(table: np.ndarray, seed: int) -> np.ndarray:
    """``table`` with :data:`INSERTS` new rows inserted (a new array)."""
    rng = np.random.default_rng(seed)
    mean = table.mean(axis=0, dtype=np.float64)
    std = float(table.std(dtype=np.float64))
    rows = table.shape[0]
    out, at = [], 0
    for fraction, count in INSERTS:
        where = int(fraction * rows)
        out.append(table[at:where])
        out.append((mean + rng.normal(0.0, std, size=(count, table.shape[1]))).astype(table.dtype))
        at = where
    out.append(table[at:])
    return np.concatenate(out)


def vocab_insert(family: Family, root: str) -> Family:
    """``family`` with every member but ``root`` extended by :func:`insert_rows`."""
    out: Family = {}
    for i, (model, tensors) in enumerate(family.items()):
        if model == root:
            out[model] = tensors
            continue
        name = table_name(tensors)
        out[model] = {k: insert_rows(v, seed=i) if k == name else v for k, v in tensors.items()}
    return out


def original_name(name: str) -> str:
    """The name a renamed tensor had (names without the prefix are kept)."""
    return name[len(RENAME_PREFIX):].replace("/", ".") if name.startswith(RENAME_PREFIX) else name


def remove_rows(table: np.ndarray) -> np.ndarray:
    """The table :func:`insert_rows` was given (the inserted rows dropped)."""
    rows = table.shape[0] - sum(count for _, count in INSERTS)
    keep = np.ones(table.shape[0], dtype=bool)
    shift = 0
    for fraction, count in INSERTS:
        where = int(fraction * rows) + shift
        keep[where : where + count] = False
        shift += count
    return table[keep]


def evaluator(kind: str, evaluate, root_tensors: dict[str, np.ndarray]):
    """``evaluate`` of the original family, for members of a derived one (``kind``:
    ``"renamed"`` or ``"vocab_insert"``): the transform is undone first (new tokens have
    no use in the original task)."""
    table = table_name(root_tensors)
    rows = root_tensors[table].shape[0]

    def undo(name: str, tensors: dict[str, np.ndarray]) -> float:
        if kind == "renamed":
            tensors = {original_name(k): v for k, v in tensors.items()}
        elif table in tensors and tensors[table].shape[0] != rows:
            tensors = dict(tensors, **{table: remove_rows(tensors[table])})
        return evaluate(name, tensors)

    return undo
