"""Plain results the store hands back: frozen dataclasses with ``to_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class _AsDict:
    __slots__ = ()

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class CacheStats(_AsDict):
    """One process's caches, from ``store.cache_stats()``.

    ``pool`` holds the buffer pool's counters (None without ``cache_bytes``); ``shared``
    the shared tensor cache's (None without ``shared_cache``). ``private_bytes`` is the
    memory only this process holds (the pool's frames); ``shared_bytes`` the bytes it
    maps from the shared cache, which every process mapping them shares.
    """

    pool: object | None
    shared: object | None
    private_bytes: int
    shared_bytes: int


@dataclass(frozen=True, slots=True)
class StoreStats(_AsDict):
    """What the store holds and what it costs.

    ``logical_bytes`` is the sum of the tensors as added; ``unique_bytes`` the bytes of
    distinct blocks (decoded); ``encoded_bytes`` the same blocks as stored, after encoding
    (equal to ``unique_bytes`` in a raw store); ``stored_bytes`` pages × ``page_size``;
    ``file_bytes`` the data file. ``blocks`` counts block references, ``unique_blocks``
    distinct blocks, ``encodings`` distinct blocks per encoding (``raw``, ``packed``,
    ``delta``).
    """

    models: int
    tensors: int
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    file_bytes: int
    blocks: int
    unique_blocks: int
    pages: int
    page_size: int
    block_bytes: int
    encoded_bytes: int = 0
    encodings: dict[str, int] | None = None

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per stored byte (higher is better)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def padding_bytes(self) -> int:
        """Page bytes that hold no block: alignment gaps, free room and page tails."""
        return self.stored_bytes - self.encoded_bytes


@dataclass(frozen=True, slots=True)
class VerifyReport(_AsDict):
    """The outcome of ``Store.verify()``: ``ok`` when ``problems`` is empty."""

    ok: bool
    problems: list[str]
    models: int
    pages: int
    blocks: int


@dataclass(frozen=True, slots=True)
class PackReport(_AsDict):
    """What ``Store.repack()`` did: pages and pages read per model load, before and after."""

    algorithm: str
    status: str  # the packer's: "optimal", "feasible", "heuristic", "fallback", ...
    solve_seconds: float
    pages_before: int
    pages_after: int
    lower_bound_pages: int
    pages_read_before: dict[str, int]  # model -> distinct pages its load reads
    pages_read_after: dict[str, int]
    pages_read_lower_bound: dict[str, int]  # model -> ceil(its distinct block bytes / page)

    @property
    def mean_pages_read_before(self) -> float:
        return sum(self.pages_read_before.values()) / max(1, len(self.pages_read_before))

    @property
    def mean_pages_read_after(self) -> float:
        return sum(self.pages_read_after.values()) / max(1, len(self.pages_read_after))


@dataclass(frozen=True, slots=True)
class Replaced(_AsDict):
    """One lossy replacement: a block of a model now read from a representative block."""

    positions: list[tuple[str, int]]  # (tensor, block index) where the block was used
    block_id: int  # the block replaced (freed unless dry run)
    representative: int  # the block now used in its place
    nbytes: int
    error: float  # relative L2 error the replacement introduces in that block
    stored: int = -1  # bytes the block took as stored (encoded); what replacing it frees
    level: float = 0.0  # the pass's round (tolerance level) that accepted it


@dataclass(frozen=True, slots=True)
class ModelDedup(_AsDict):
    model: str
    candidates: int  # private blocks with a representative within tolerance
    replaced: list[Replaced]
    bytes_saved: int
    evaluations: int
    accuracy_before: float | None  # None when no evaluator was given
    accuracy_after: float | None
    # one entry per round the model took part in: {"level", "candidates", "accepted",
    # "accuracy", "evaluations"}: accuracy measured with every replacement accepted so far
    # (None unmeasured), evaluations made so far
    rounds: list[dict] = field(default_factory=list)

    @property
    def stored_bytes_saved(self) -> int:
        """Bytes as stored (encoded) that the replacements free."""
        return sum(r.stored for r in self.replaced)


@dataclass(frozen=True, slots=True)
class DedupReport(_AsDict):
    """What ``Store.dedup()`` changed (or, with ``dry_run``, would change)."""

    models: list[ModelDedup]
    tolerance: float
    max_accuracy_drop: float
    accuracy_checked: bool  # False: tolerance only, accuracy was not measured
    dry_run: bool

    @property
    def bytes_saved(self) -> int:
        return sum(m.bytes_saved for m in self.models)

    @property
    def evaluations(self) -> int:
        return sum(m.evaluations for m in self.models)

    @property
    def stored_bytes_saved(self) -> int:
        """Bytes as stored (encoded) that the replacements free: what ``encoded_bytes`` loses."""
        return sum(m.stored_bytes_saved for m in self.models)


@dataclass(frozen=True, slots=True)
class CompactReport(_AsDict):
    """What ``Store.compact()`` did: distinct bytes as stored before and after, how many
    blocks it re-encoded, blocks per encoding, and the repack that laid them out."""

    encoded_bytes_before: int
    encoded_bytes_after: int
    reencoded_blocks: int
    encodings_before: dict[str, int]
    encodings_after: dict[str, int]
    pack: PackReport
