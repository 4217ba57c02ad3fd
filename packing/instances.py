"""A deterministic generator of realistic packing instances with layered sharing.

A family of ``n_models`` transformer-like models (BERT layout: embeddings, ``layers``
encoder layers of 17 tensors each, a pooler and a classifier head) is fine-tuned from
one base the way teams actually do it:

* the embeddings and the lower half of the layers are frozen: shared by all models;
* the next quarter of the layers is tuned per *group* of models (``n_groups`` groups):
  shared within a group;
* the top quarter and the head are tuned per model: private;
* optionally (``changed_fraction``) each model also rewrites that fraction of the
  blocks of its group's MLP matrices (sparse fine-tuning), so one tensor's blocks have
  several sharing sets.

Every tensor is cut into ``block_bytes`` blocks plus a smaller tail; a tensor of each
model is a packing-problem tensor, so a frozen tensor's blocks appear in every model's
copy of it. Sizes vary as in real checkpoints: 1.5 KiB scales and kilobyte biases next
to multi-megabyte matrices and a ~100 MB-class embedding; MLP widths vary by layer so
that matrix tails differ. Model request rates follow a Zipf law.

With ``encoded`` (:class:`EncodedSizes`), blocks are stored encoded, as a deduplicating
store with a delta codec keeps them: the first model's copy of every tensor (the family's
root) is stored alone (``packed``), every other copy of a tensor is stored as the XOR of
the root's block at the same position (``delta``), and each block's stored size is its
raw size times a fraction drawn from the given samples (e.g. a real codec's output). A
delta cannot be read without its reference, so a tensor reads its blocks and their
references: both are in its block list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tensorstore_packing.errors import InvalidProblemError
from tensorstore_packing.problem import PackingProblem

KiB = 1024
MiB = 1024 * KiB

_VOCAB = 30522  # BERT's vocabulary: an embedding whose size is no multiple of a block
_POSITIONS = 512
_CLASSES = 4
_SCALE_FLOATS = 384  # a per-layer 1.5 KiB tensor of scales, whatever the width


@dataclass(frozen=True, slots=True, eq=False)
class EncodedSizes:
    """Stored size of an encoded block as a fraction of its raw size, to draw from.

    Attributes
    ----------
    packed : numpy.ndarray
        Fractions for a block stored alone (byte planes and zstd: about 0.75-0.95 for
        float32 weights).
    delta : numpy.ndarray
        Fractions for a block stored as the XOR with its reference (small where a
        fine-tune moved weights little, up to about the packed size for a full one).
    """

    packed: np.ndarray
    delta: np.ndarray

    def __post_init__(self) -> None:
        for name in ("packed", "delta"):
            values = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if values.size == 0 or not np.all((values > 0) & (values <= 1.5)):
                raise InvalidProblemError(f"{name} fractions must be a non-empty array of numbers in (0, 1.5]")
            object.__setattr__(self, name, values)

    @classmethod
    def typical(cls) -> "EncodedSizes":
        """Fractions measured on the MiniLM fine-tune family (256 KiB float32 blocks, the
        tensorstore codec, zstd level 1): 17 quantiles, min to max, of the base's blocks
        packed and of the changed blocks of a top-1, a top-2 and a full fine-tune as
        deltas of the base's (a block that would grow is kept raw: 1.0)."""
        return cls(
            packed=np.array([0.003, 0.786, 0.838, 0.839, 0.839, 0.839, 0.839, 0.84, 0.84, 0.84, 0.84,
                             0.841, 0.841, 0.842, 0.859, 0.863, 1.0]),
            delta=np.array([0.013, 0.137, 0.179, 0.235, 0.358, 0.591, 0.672, 0.681, 0.689, 0.698,
                            0.704, 0.717, 0.747, 0.757, 0.766, 0.815, 1.0]),
        )


@dataclass(frozen=True, slots=True, eq=False)
class GeneratedInstance:
    """A generated problem and how it was made.

    Attributes
    ----------
    problem : PackingProblem
        With models (``problem.model_names``) and per-tensor request rates.
    models : dict[str, list[str]]
        Model name -> its tensor names (the same as the problem's models).
    hidden : int
        Width of the models.
    layers : int
        Encoder layers per model.
    references : dict[int, int]
        Delta block id -> the block it is decoded against (empty unless ``encoded``).
    """

    problem: PackingProblem
    models: dict[str, list[str]]
    hidden: int
    layers: int
    references: dict[int, int] = field(default_factory=dict)


def generate(
    n_blocks: int = 100_000,
    *,
    seed: int = 0,
    n_models: int = 12,
    n_groups: int = 3,
    block_bytes: int = 64 * KiB,
    page_bytes: int = 1 * MiB,
    changed_fraction: float = 0.0,
    zipf: float = 1.0,
    hidden: int | None = None,
    encoded: EncodedSizes | None = None,
) -> GeneratedInstance:
    """Generate an instance with about `n_blocks` distinct blocks.

    The model width is chosen from `n_blocks` (about 24 layers), then layers are added
    until there are at least `n_blocks` blocks, so the count overshoots by less than
    one layer's worth: a few percent from 10k blocks up, up to ~20% below that.

    Parameters
    ----------
    n_blocks : int, default 100_000
        Target number of distinct blocks.
    seed : int, default 0
        Same seed, same instance.
    n_models, n_groups : int
        Models in the family, and groups that share their middle layers.
    block_bytes, page_bytes : int
        Block size (tensors are cut into blocks of this size plus a tail) and page
        capacity.
    changed_fraction : float, default 0.0
        Fraction of the blocks of each group-shared MLP matrix that every model
        rewrites for itself (0 disables partial sharing).
    zipf : float, default 1.0
        Model request rates are proportional to ``1 / rank ** zipf`` (0: uniform),
        scaled to average 1.
    hidden : int, optional
        Force the model width instead of deriving it from `n_blocks`.
    encoded : EncodedSizes, optional
        Store blocks encoded (see the module docstring): the root's blocks packed, every
        other copy a delta of the root's block at its position, read with it.

    Returns
    -------
    GeneratedInstance
    """
    if n_blocks <= 0 or n_models <= 0 or not 1 <= n_groups <= n_models:
        raise InvalidProblemError("need n_blocks > 0 and 1 <= n_groups <= n_models")
    if not 0.0 <= changed_fraction <= 1.0:
        raise InvalidProblemError(f"changed_fraction must be in [0, 1], got {changed_fraction}")
    rng = np.random.default_rng(seed)
    if hidden is None:
        # about 24 layers: blocks ~ 12 * d^2 * 4 bytes per layer * (sharing multiplicity)
        units = 24 * (0.5 + 0.25 * n_groups + 0.25 * n_models)
        hidden = max(32, 32 * round(math.sqrt(n_blocks * block_bytes / (48 * units)) / 32))
    mlp_widths = (4 * hidden * rng.uniform(0.75, 1.25, size=4096)).astype(np.int64) // 8 * 8
    layers = 1
    while _distinct_blocks(layers, hidden, mlp_widths, n_models, n_groups, block_bytes, changed_fraction) < n_blocks:
        layers += 1
        if layers >= mlp_widths.size:
            raise InvalidProblemError(f"n_blocks={n_blocks} needs more than {mlp_widths.size} layers")
    builder = _Builder(block_bytes)
    root_of: dict[int, int] = {}  # block of a tuned copy -> the root's block at its position
    spec = _model_spec(layers, hidden, mlp_widths)
    group_of_model = np.arange(n_models) * n_groups // n_models
    shared: dict[tuple[str, int], np.ndarray] = {}  # (tensor, owner) -> blocks
    models: dict[str, list[str]] = {}
    tensors: list[tuple[str, np.ndarray]] = []
    for m in range(n_models):
        model = f"m{m:02d}"
        models[model] = []
        for name, nbytes, scope in spec:
            owner = {"base": 0, "group": int(group_of_model[m]), "private": m}[scope]
            if (name, owner) not in shared:  # names differ by scope, so no clashes
                shared[name, owner] = builder.tensor(nbytes)
                if m:  # a tuned copy of the root's tensor (model 0 holds every root)
                    root_of.update(zip(shared[name, owner].tolist(), shared[name, 0].tolist()))
            blocks = shared[name, owner]
            if scope == "group" and changed_fraction and ".mlp." in name and name.endswith("weight"):
                rewritten = builder.rewrite(blocks, changed_fraction, rng)
                for new, old in zip(rewritten.tolist(), blocks.tolist()):
                    if new != old:
                        root_of[new] = root_of.get(old, old)
                blocks = rewritten
            if encoded is not None:  # a delta is read with its reference
                blocks = np.asarray(list(dict.fromkeys(
                    j for i in blocks.tolist() for j in ((i, root_of[i]) if i in root_of else (i,))
                )), dtype=np.int64)
            full = f"{model}/{name}"
            models[model].append(full)
            tensors.append((full, blocks))
    rates = 1.0 / np.arange(1, n_models + 1, dtype=np.float64) ** zipf
    rates = rates / rates.mean()
    rng.shuffle(rates)  # popularity unrelated to model order
    per_tensor = np.repeat(rates, [len(v) for v in models.values()])
    lengths = np.array([b.size for _, b in tensors], dtype=np.int64)
    sizes = builder.sizes()
    if encoded is not None:
        is_delta = np.zeros(sizes.size, dtype=bool)
        is_delta[list(root_of)] = True
        fraction = np.where(
            is_delta,
            rng.choice(encoded.delta, size=sizes.size),
            rng.choice(encoded.packed, size=sizes.size),
        )
        sizes = np.maximum(1, np.rint(sizes * fraction)).astype(np.int64)
    problem = PackingProblem.from_arrays(
        sizes,
        np.concatenate(([0], np.cumsum(lengths))),
        np.concatenate([b for _, b in tensors]),
        page_bytes,
        tensor_names=[n for n, _ in tensors],
        weights=per_tensor,
        models=models,
    )
    references = root_of if encoded is not None else {}
    return GeneratedInstance(problem=problem, models=models, hidden=hidden, layers=layers, references=references)


class _Builder:
    """Hands out block ids for new tensor contents and remembers block sizes."""

    def __init__(self, block_bytes: int) -> None:
        self.block_bytes = block_bytes
        self._sizes: list[np.ndarray] = []
        self._next = 0

    def tensor(self, nbytes: int) -> np.ndarray:
        """Blocks of a new tensor of `nbytes`: full blocks and a smaller tail."""
        full, tail = divmod(nbytes, self.block_bytes)
        sizes = np.full(full + (tail > 0), self.block_bytes, dtype=np.int64)
        if tail:
            sizes[-1] = tail
        return self._new(sizes)

    def rewrite(self, blocks: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
        """A copy of `blocks` with `fraction` of them replaced by new blocks."""
        k = round(fraction * blocks.size)
        if k == 0:
            return blocks
        where = rng.choice(blocks.size, size=k, replace=False)
        out = blocks.copy()
        out[where] = self._new(self.sizes()[blocks[where]])
        return out

    def sizes(self) -> np.ndarray:
        """Size of every block handed out so far."""
        return np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)

    def _new(self, sizes: np.ndarray) -> np.ndarray:
        ids = np.arange(self._next, self._next + sizes.size, dtype=np.int64)
        self._next += sizes.size
        self._sizes.append(sizes)
        return ids


def _model_spec(layers: int, d: int, mlp_widths: np.ndarray) -> list[tuple[str, int, str]]:
    """(tensor name, bytes, scope) for one model; scope is base, group or private."""
    f32 = 4
    n_base, n_group = layers // 2, layers // 4
    spec = [
        ("embeddings.word.weight", _VOCAB * d * f32, "base"),
        ("embeddings.position.weight", _POSITIONS * d * f32, "base"),
        ("embeddings.token_type.weight", 2 * d * f32, "base"),
        ("embeddings.norm.weight", d * f32, "base"),
        ("embeddings.norm.bias", d * f32, "base"),
    ]
    for layer in range(layers):
        scope = "base" if layer < n_base else "group" if layer < n_base + n_group else "private"
        w = int(mlp_widths[layer])
        p = f"layer{layer:03d}."
        for proj in "qkvo":
            spec.append((p + f"attention.{proj}.weight", d * d * f32, scope))
            spec.append((p + f"attention.{proj}.bias", d * f32, scope))
        spec += [
            (p + "attention.scale", _SCALE_FLOATS * f32, scope),
            (p + "attention.norm.weight", d * f32, scope),
            (p + "attention.norm.bias", d * f32, scope),
            (p + "mlp.up.weight", d * w * f32, scope),
            (p + "mlp.up.bias", w * f32, scope),
            (p + "mlp.down.weight", w * d * f32, scope),
            (p + "mlp.down.bias", d * f32, scope),
            (p + "mlp.norm.weight", d * f32, scope),
            (p + "mlp.norm.bias", d * f32, scope),
        ]
    spec += [
        ("pooler.weight", d * d * f32, "private"),
        ("pooler.bias", d * f32, "private"),
        ("classifier.weight", d * _CLASSES * f32, "private"),
        ("classifier.bias", _CLASSES * f32, "private"),
    ]
    return spec


def _distinct_blocks(
    layers: int,
    d: int,
    mlp_widths: np.ndarray,
    n_models: int,
    n_groups: int,
    block_bytes: int,
    changed_fraction: float,
) -> int:
    """Distinct blocks the family would have (without building it)."""
    copies = {"base": 1, "group": n_groups, "private": n_models}
    total = 0
    for name, nbytes, scope in _model_spec(layers, d, mlp_widths):
        blocks = -(-nbytes // block_bytes)
        total += copies[scope] * blocks
        if scope == "group" and ".mlp." in name and name.endswith("weight"):
            total += n_models * round(changed_fraction * blocks)
    return total
