"""Families derived from a cached one, where a reference by tensor name and position fails.

Two ways real model families defeat a name-based delta (ZipLLM's, or the store's
reference by position), built from a family already cached (no download, no training):

``renamed``
    Every member but the root re-exported under other tensor names, each member under its
    own (its name as a prefix, and ``/`` for ``.``, as checkpoints converted between
    libraries by different publishers are): the weights are those of the fine-tune, bit for
    bit, but no tensor name matches its base's or a sibling's.
``vocab_insert``
    Every member but the root with a vocabulary extension of its own: new rows *inserted*
    into its largest 2-D table (the word embeddings) at the places of :data:`PLACES`, not
    appended, so every row after the first place moves. With ``block_rows`` (the rows of a
    store block), member ``i`` inserts ``i`` blocks' worth of rows at each place: later
    blocks hold the same rows as the base's blocks ``i``, ``2i``, ... further back, so
    only a reference found by content lines up. Without it, member ``i`` inserts
    ``count + i`` rows (:data:`ROW_COUNTS`): blocks straddle two of the base's and no
    block-wise XOR lines up at all. New rows are drawn like a resized embedding's (the
    table's mean, plus noise of its standard deviation), seeded by ``i``.

Used by ``tensorstore bench --suite contentrefs`` and the corpora ``minilm-renamed`` and
``minilm-vocab`` (whole blocks of rows) and ``minilm-vocab-rows`` (rows)
(:mod:`tensorstore.corpora.registry`).
"""

from __future__ import annotations

import numpy as np

Family = dict[str, dict[str, np.ndarray]]

#: Where rows are inserted, as fractions of the table's rows.
PLACES = (0.1, 0.45, 0.8)
#: Rows inserted at each place (plus the member's index) when not whole blocks: not
#: multiples of a 64 KiB block's 42 rows of 384 float32.
ROW_COUNTS = (13, 29, 7)


def renamed_name(model: str, name: str) -> str:
    """The name tensor ``name`` gets in renamed member ``model``."""
    return f"{model}/" + name.replace(".", "/")


def renamed(family: Family, root: str) -> Family:
    """``family`` with every member but ``root`` under renamed tensors (same arrays)."""
    return {model: tensors if model == root else {renamed_name(model, k): v for k, v in tensors.items()}
            for model, tensors in family.items()}


def table_name(tensors: dict[str, np.ndarray]) -> str:
    """The largest 2-D tensor of a model (the word embeddings of a language model)."""
    return max((k for k, v in tensors.items() if v.ndim == 2), key=lambda k: tensors[k].nbytes)


def insert_rows(table: np.ndarray, counts: tuple[int, ...], seed: int) -> np.ndarray:
    """``table`` with ``counts[j]`` new rows inserted at each place ``PLACES[j]`` (a new array)."""
    rng = np.random.default_rng(seed)
    mean = table.mean(axis=0, dtype=np.float64)
    std = float(table.std(dtype=np.float64))
    rows = table.shape[0]
    out, at = [], 0
    for fraction, count in zip(PLACES, counts):
        where = int(fraction * rows)
        out.append(table[at:where])
        out.append((mean + rng.normal(0.0, std, size=(count, table.shape[1]))).astype(table.dtype))
        at = where
    out.append(table[at:])
    return np.concatenate(out)


def member_counts(i: int, block_rows: int | None) -> tuple[int, ...]:
    """Rows member ``i`` inserts at each place (see ``vocab_insert``)."""
    if block_rows is not None:
        return tuple(i * block_rows for _ in PLACES)
    return tuple(count + i for count in ROW_COUNTS)


def vocab_insert(family: Family, root: str, block_bytes: int | None = None) -> Family:
    """``family`` with every member but ``root`` extended by :func:`insert_rows`; with
    ``block_bytes``, by whole blocks of rows of that many bytes."""
    out: Family = {}
    for i, (model, tensors) in enumerate(family.items()):
        if model == root:
            out[model] = tensors
            continue
        name = table_name(tensors)
        table = tensors[name]
        block_rows = None if block_bytes is None else max(1, block_bytes // (table.nbytes // table.shape[0]))
        counts = member_counts(i, block_rows)
        out[model] = {k: insert_rows(v, counts, seed=i) if k == name else v for k, v in tensors.items()}
    return out


def original_name(name: str) -> str:
    """The name a renamed tensor had (names without a ``/`` are kept)."""
    return name.split("/", 1)[1].replace("/", ".") if "/" in name else name


def remove_rows(table: np.ndarray, rows: int) -> np.ndarray:
    """The ``rows``-row table that :func:`vocab_insert` extended (the inserted rows dropped)."""
    extra = table.shape[0] - rows
    # sum(ROW_COUNTS) + 3i is never a multiple of 3: equal counts are whole blocks.
    if extra % len(PLACES) == 0:
        counts = (extra // len(PLACES),) * len(PLACES)
    else:
        counts = tuple(c + (extra - sum(ROW_COUNTS)) // len(PLACES) for c in ROW_COUNTS)
    keep = np.ones(table.shape[0], dtype=bool)
    shift = 0
    for fraction, count in zip(PLACES, counts):
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
            tensors = dict(tensors, **{table: remove_rows(tensors[table], rows)})
        return evaluate(name, tensors)

    return undo
