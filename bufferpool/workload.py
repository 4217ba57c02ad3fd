"""Deterministic, skewed multi-model request streams over a deduplicated model family.

The family: ``n_models`` fine-tunes of one base. Every model reads the base's pages (shared
by all), then its group's pages (layers shared within a group, e.g. one fine-tuning recipe),
then its own private pages (the layers it fine-tuned). Requests pick models with Zipf or
Pareto popularity; with ``shift_every`` the popular set is reshuffled every that many
requests. Everything is plain data and a function of the arguments and ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._checks import as_int, positive_float, positive_int
from .errors import InvalidArgumentError

Popularity = Literal["zipf", "pareto"]


@dataclass(frozen=True, slots=True)
class Workload:
    """A model family and a request trace over it.

    Attributes
    ----------
    model_pages
        ``{model: [page_id, ...]}`` in reading order (base, group, private).
    sharing
        ``{page_id: [model, ...]}``: the models that need each page.
    trace
        Model names, one per request.
    page_bytes
        Size of one page, for callers that think in bytes.
    popularity
        The true request probabilities, one ``{model: p}`` per phase of ``phase_length``
        requests (one phase when popularity does not shift).
    phase_length
        Requests per phase.
    params
        The arguments that generated it.
    """

    model_pages: dict[str, list[int]]
    sharing: dict[int, list[str]]
    trace: list[str]
    page_bytes: int
    popularity: list[dict[str, float]]
    phase_length: int
    params: dict[str, object] = field(default_factory=dict)

    @property
    def distinct_pages(self) -> int:
        """Number of distinct pages in the family (its deduplicated size in pages)."""
        return len(self.sharing)

    @property
    def model_size(self) -> int:
        """Pages read by one request for the largest model."""
        return max(len(pages) for pages in self.model_pages.values())


def generate(
    n_models: int = 30,
    *,
    base_pages: int = 8,
    groups: int = 6,
    group_pages: int = 4,
    private_pages: int = 8,
    n_requests: int = 3000,
    popularity: Popularity = "zipf",
    skew: float | None = None,
    shift_every: int | None = None,
    page_bytes: int = 1 << 20,
    seed: int = 0,
) -> Workload:
    """Generate a family and a request trace.

    Parameters
    ----------
    n_models
        Models in the family.
    base_pages, group_pages, private_pages
        Pages shared by all models, by the models of one group, and owned by one model.
    groups
        Number of groups; models are split into contiguous groups of near-equal size.
    n_requests
        Length of the trace.
    popularity
        ``"zipf"``: the model of popularity rank ``k`` has weight ``k**-skew`` (default
        skew 1.0). ``"pareto"``: weights are drawn from a Pareto distribution with shape
        ``skew`` (default 1.2; smaller is more skewed).
    shift_every
        If given, a new random assignment of weights to models every that many requests.
    page_bytes
        Recorded in the result.
    seed
        Seed of the random generator; same arguments and seed, same workload.
    """
    n_models = positive_int(n_models, "n_models")
    groups = positive_int(groups, "groups")
    if groups > n_models:
        raise InvalidArgumentError(f"groups ({groups}) must not exceed n_models ({n_models})")
    sizes = {"base_pages": base_pages, "group_pages": group_pages, "private_pages": private_pages}
    for name, value in sizes.items():
        if as_int(value, name) < 0:
            raise InvalidArgumentError(f"{name} must be >= 0, got {value}")
    if base_pages + group_pages + private_pages == 0:
        raise InvalidArgumentError("a model needs at least one page")
    n_requests = positive_int(n_requests, "n_requests")
    if popularity not in ("zipf", "pareto"):
        raise InvalidArgumentError(f"popularity must be 'zipf' or 'pareto', got {popularity!r}")
    skew = positive_float(skew if skew is not None else (1.0 if popularity == "zipf" else 1.2), "skew")
    if shift_every is not None:
        shift_every = positive_int(shift_every, "shift_every")

    names = [f"m{i:02d}" for i in range(n_models)]
    next_page = iter(range(1 << 62))
    base = [next(next_page) for _ in range(base_pages)]
    group_of = [i * groups // n_models for i in range(n_models)]
    group_layers = [[next(next_page) for _ in range(group_pages)] for _ in range(groups)]
    model_pages = {
        name: base + group_layers[group_of[i]] + [next(next_page) for _ in range(private_pages)]
        for i, name in enumerate(names)
    }
    sharing: dict[int, list[str]] = {}
    for name, pages in model_pages.items():
        for page in pages:
            sharing.setdefault(page, []).append(name)

    rng = np.random.default_rng(seed)
    if popularity == "zipf":
        weights = np.arange(1, n_models + 1, dtype=float) ** -skew
    else:
        weights = rng.pareto(skew, n_models) + 1.0
    weights /= weights.sum()
    trace: list[str] = []
    phases: list[dict[str, float]] = []
    phase = shift_every or n_requests
    while len(trace) < n_requests:
        chosen = rng.permutation(n_models)  # which model gets which weight in this phase
        picks = rng.choice(n_models, size=min(phase, n_requests - len(trace)), p=weights)
        trace.extend(names[chosen[k]] for k in picks)
        phases.append({names[chosen[k]]: float(weights[k]) for k in range(n_models)})

    params = {"n_models": n_models, **sizes, "groups": groups, "n_requests": n_requests,
              "popularity": popularity, "skew": skew, "shift_every": shift_every, "seed": seed}
    return Workload(model_pages, sharing, trace, page_bytes, phases, phase, params)
