"""Near-duplicate search over blocks: a FAISS sign-random-projection LSH plus exact checks.

How it works
------------
Every vector is projected onto ``nbits`` random orthonormal directions (FAISS's
``RandomRotationMatrix``) and each projection's sign becomes one bit (SimHash, an LSH for
the angle between vectors). Two blocks within relative L2 error ``t`` are within angle
``asin(t)``, so their codes differ in few bits, while unrelated weight blocks (nearly
orthogonal) differ in about half. The projection also takes a 16K-dimensional block down to
``nbits`` numbers before any search work, so the cost of hashing is one thin matrix product.

Candidates are the ``k`` stored codes nearest in Hamming distance, found by an exhaustive
scan of the codes (``IndexBinaryFlat``: a popcount per stored block, fast up to hundreds of
thousands of blocks) or, with ``mode="buckets"``, by hash-table lookups
(``IndexBinaryMultiHash``: 16-bit tables probed within one bit flip) for very large indexes
of small blocks. Blocks of at most ``EXACT_MAX_DIM`` elements are searched exactly instead
(``IndexFlatL2``): a sign hash of a 1-D block is just its sign. The LSH only proposes:
:meth:`LSHIndex.match` computes the exact error of every candidate and accepts only those
within the tolerance.

Keep one index per block class (dtype and block length): :class:`LSHIndexes` does that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

# OpenMP threads that spin while waiting make FAISS searches up to 100x slower when other
# processes share the cores (measured on 2 cores, see docs/index.md). Effective only if no
# OpenMP runtime is loaded yet; an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402  (must follow the setting above)
import numpy as np

from index.checks import as_count, as_ids, as_vectors
from index.errors import InvalidArgumentError
from index.tolerance import Tolerance, as_tolerance

Fetch = Callable[[np.ndarray], np.ndarray]
"""Given int64 ids, return their vectors as an ``(len(ids), dim)`` array, in that order."""

MODES = ("auto", "scan", "buckets", "exact")
EXACT_MAX_DIM = 16  # "auto" searches exactly up to this dim (a few floats cost as much as a code)
_BUCKET_BITS = 16  # bits per hash table in "buckets" mode
_VERIFY_CHUNK_BYTES = 32 << 20  # bound on the memory gathered at once for exact checks


@dataclass(frozen=True, slots=True)
class Candidates:
    """What the LSH proposes for each query, nearest code first.

    Attributes
    ----------
    ids : np.ndarray
        ``(n, k)`` int64 ids of stored vectors; ``-1`` pads rows with fewer than ``k``.
    distances : np.ndarray
        ``(n, k)`` Hamming distances between codes (int32), or squared L2 distances
        (float32) in ``"exact"`` mode; meaningless where ``ids == -1``.
    """

    ids: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True, slots=True)
class Matches:
    """The best verified candidate for each query.

    Attributes
    ----------
    ids : np.ndarray
        ``(n,)`` int64 id of the accepted candidate with the lowest exact error, ``-1`` if none.
    errors : np.ndarray
        ``(n,)`` float64 exact error of that candidate, ``inf`` where none was accepted.
    checked : int
        Exact errors computed (candidates that survived the cheap norm filter).
    """

    ids: np.ndarray
    errors: np.ndarray
    checked: int

    @property
    def found(self) -> np.ndarray:
        """Boolean mask of the queries that have a match."""
        return self.ids >= 0


class LSHIndex:
    """Near-duplicate index over float32 vectors of one dimension.

    Parameters
    ----------
    dim : int
        Length of every vector (a block's element count).
    nbits : int
        Bits per code, a multiple of 8. 64 measured best: see ``docs/index.md``.
    seed : int
        Seed of the random projection; equal seeds give equal codes.
    mode : {"auto", "scan", "buckets", "exact"}
        ``"scan"``: exhaustive Hamming scan of the codes (best recall). ``"buckets"``:
        multi-table hash lookup (faster for hundreds of thousands of small blocks, slightly
        lower recall; needs ``nbits >= 16``). ``"exact"``: exact L2 search (FAISS
        ``IndexFlatL2``), for tiny blocks where a sign hash says too little (in 1-D it is
        only the sign) and a few floats cost as much as a code. ``"auto"`` (default):
        ``"exact"`` up to ``EXACT_MAX_DIM`` elements, else ``"scan"``.
    keep_vectors : bool
        Keep a copy of every added vector for exact verification. With ``False`` the index
        holds only codes and norms, and :meth:`match` needs a ``fetch`` callback.
    """

    def __init__(
        self,
        dim: int,
        *,
        nbits: int = 64,
        seed: int = 0,
        mode: str = "auto",
        keep_vectors: bool = True,
    ) -> None:
        self.dim = as_count(dim, "dim", minimum=1)
        self.nbits = as_count(nbits, "nbits", minimum=8)
        if self.nbits % 8:
            raise InvalidArgumentError(f"nbits must be a multiple of 8, got {self.nbits}")
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "buckets" and self.nbits < _BUCKET_BITS:
            raise InvalidArgumentError(f"mode='buckets' needs nbits >= {_BUCKET_BITS}")
        if mode == "auto":
            mode = "exact" if self.dim <= EXACT_MAX_DIM else "scan"
        self.mode = mode
        self.keep_vectors = bool(keep_vectors)
        self._projection = faiss.RandomRotationMatrix(self.dim, self.nbits)
        self._projection.init(as_count(seed, "seed"))
        if mode == "exact":
            self._codes = faiss.IndexFlatL2(self.dim)
        elif mode == "scan":
            self._codes = faiss.IndexBinaryFlat(self.nbits)
        else:
            self._codes = faiss.IndexBinaryMultiHash(
                self.nbits, self.nbits // _BUCKET_BITS, _BUCKET_BITS
            )
            self._codes.nflip = 1  # also probe buckets one bit away: recall 0.99 -> 1.0
        # Row i of the FAISS index is the i-th vector added; these map rows to our data.
        self._ids = np.empty(0, dtype=np.int64)
        self._norms = np.empty(0, dtype=np.float64)
        self._vector_chunks: list[np.ndarray] = []

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        return (
            f"LSHIndex(dim={self.dim}, nbits={self.nbits}, mode={self.mode!r}, "
            f"size={len(self)})"
        )

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored vectors in the order they were added (a copy)."""
        return self._ids.copy()

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Return the ``(n, nbits // 8)`` uint8 LSH codes of ``vectors``."""
        x = as_vectors(vectors, dim=self.dim)
        if x.shape[0] == 0:
            return np.empty((0, self.nbits // 8), dtype=np.uint8)
        return np.packbits(self._projection.apply(x) > 0, axis=1)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` under ``ids`` (non-negative, unique, not yet in the index).

        Raises
        ------
        InvalidArgumentError
            On a shape mismatch, a negative or repeated id, or an id already present.
        InvalidTypeError
            On non-integer ids or non-numeric vectors.
        """
        x = as_vectors(vectors, dim=self.dim)
        new_ids = as_ids(ids, x.shape[0])
        if np.unique(new_ids).shape[0] != new_ids.shape[0]:
            raise InvalidArgumentError("ids must be unique within one add() call")
        present = np.isin(new_ids, self._ids)
        if present.any():
            raise InvalidArgumentError(
                f"ids already in the index: {new_ids[present][:5].tolist()}"
            )
        if x.shape[0] == 0:
            return
        self._codes.add(self._keys(x))
        self._ids = np.concatenate([self._ids, new_ids])
        self._norms = np.concatenate([self._norms, _norms(x)])
        if self.keep_vectors:
            # as_vectors may hand back the caller's own buffer: keep a private copy.
            shared = isinstance(vectors, np.ndarray) and np.may_share_memory(x, vectors)
            self._vector_chunks.append(x.copy() if shared else x)

    def search(
        self, vectors: np.ndarray, k: int = 8, *, exclude_ids: np.ndarray | None = None
    ) -> Candidates:
        """Propose up to ``k`` stored vectors per query, nearest LSH code first.

        Parameters
        ----------
        vectors : array, shape (n, dim)
            Queries.
        k : int
            Candidates per query.
        exclude_ids : array of n ints, optional
            Id of each query itself; a stored vector with that id is never proposed for it.
        """
        x = as_vectors(vectors, dim=self.dim)
        rows, distances = self._search_rows(x, as_count(k, "k", minimum=1), exclude_ids)
        ids = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1) if len(self) else rows
        return Candidates(ids=ids, distances=distances)

    def match(
        self,
        vectors: np.ndarray,
        tolerance: Tolerance | float,
        *,
        k: int = 8,
        query_ids: np.ndarray | None = None,
        fetch: Fetch | None = None,
    ) -> Matches:
        """For each query, the candidate with the lowest exact error within ``tolerance``.

        Parameters
        ----------
        vectors : array, shape (n, dim)
            Query blocks.
        tolerance : Tolerance or float
            A :class:`~index.tolerance.RelativeL2` or :class:`~index.tolerance.ElementShare`;
            a bare float ``t`` means ``RelativeL2(t)``.
        k : int
            LSH candidates verified per query.
        query_ids : array of n ints, optional
            Each query's own id, so a block is never matched with itself.
        fetch : callable, optional
            ``fetch(ids) -> vectors``; required when the index was built with
            ``keep_vectors=False``, ignored otherwise.

        Returns
        -------
        Matches
            Ids (``-1`` for no match), exact errors (``inf`` for no match) and the number of
            exact checks made.
        """
        tol = as_tolerance(tolerance)
        x = as_vectors(vectors, dim=self.dim)
        if not self.keep_vectors and fetch is None:
            raise InvalidArgumentError(
                "this index was built with keep_vectors=False: pass fetch=callable(ids) -> vectors"
            )
        k = as_count(k, "k", minimum=1)
        n = x.shape[0]
        if query_ids is not None:
            as_ids(query_ids, n, "query_ids")
        if n == 0 or len(self) == 0:
            return Matches(
                ids=np.full(n, -1, dtype=np.int64), errors=np.full(n, np.inf), checked=0
            )
        rows, _ = self._search_rows(x, k, query_ids)
        # Exact error of every (query, candidate) pair the norm filter cannot rule out,
        # computed in chunks so memory stays bounded for 64 KiB blocks.
        errors = np.full(rows.shape, np.inf)
        q_at, c_at = np.nonzero(rows >= 0)
        stored = rows[q_at, c_at]
        plausible = tol.may_accept(_norms(x)[q_at], self._norms[stored])
        q_at, c_at, stored = q_at[plausible], c_at[plausible], stored[plausible]
        chunk = max(1, _VERIFY_CHUNK_BYTES // (8 * self.dim))
        for start in range(0, q_at.shape[0], chunk):
            part = slice(start, start + chunk)
            reps = self._stored_vectors(stored[part], fetch)
            errors[q_at[part], c_at[part]] = tol.errors(x[q_at[part]], reps)
        accepted = errors <= tol.limit  # NaN (non-finite blocks) is never accepted
        ranked = np.where(accepted, errors, np.inf)
        best = (np.arange(n), np.argmin(ranked, axis=1))  # ties: nearest code wins
        found = accepted[best]
        return Matches(
            ids=np.where(found, self._ids[np.maximum(rows[best], 0)], -1),
            errors=np.where(found, ranked[best], np.inf),
            checked=int(q_at.shape[0]),
        )

    def _keys(self, x: np.ndarray) -> np.ndarray:
        """What the FAISS index stores and searches: the vectors themselves or their codes."""
        return x if self.mode == "exact" else self.encode(x)

    def _search_rows(
        self, x: np.ndarray, k: int, exclude_ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows (insertion positions) of the ``k`` nearest codes, ``-1`` padded, and distances."""
        n = x.shape[0]
        exclude = None if exclude_ids is None else as_ids(exclude_ids, n, "exclude_ids")
        if n == 0 or len(self) == 0:
            return np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), dtype=np.int32)
        # Ids are unique, so at most one proposal per query is the query itself.
        wanted = k + (exclude is not None)
        distances, rows = self._codes.search(self._keys(x), wanted)
        rows = rows.astype(np.int64, copy=False)
        if exclude is not None:
            is_self = (rows >= 0) & (self._ids[np.maximum(rows, 0)] == exclude[:, None])
            rows = np.where(is_self, -1, rows)
        # Move padding (-1) to the end of each row, keeping the nearest-first order.
        order = np.argsort(rows < 0, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(rows, order, 1), np.take_along_axis(distances, order, 1)

    def _stored_vectors(self, rows: np.ndarray, fetch: Fetch | None) -> np.ndarray:
        """The vectors at ``rows`` (insertion positions), from memory or via ``fetch``."""
        if self.keep_vectors:
            if len(self._vector_chunks) > 1:  # join once, after a run of add() calls
                self._vector_chunks = [np.concatenate(self._vector_chunks)]
            return self._vector_chunks[0][rows]
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        wanted = self._ids[unique_rows]
        fetched = as_vectors(fetch(wanted.copy()), "fetched vectors", dim=self.dim)
        if fetched.shape[0] != wanted.shape[0]:
            raise InvalidArgumentError(
                f"fetch returned {fetched.shape[0]} vectors for {wanted.shape[0]} ids"
            )
        return fetched[inverse]


class LSHIndexes:
    """One :class:`LSHIndex` per block class, created on first use.

    A block class is any hashable key that says which blocks are comparable, typically
    ``(dtype name, elements per block)``. Blocks of different classes are never compared.

    Parameters
    ----------
    **options
        Passed to every :class:`LSHIndex` created (``nbits``, ``seed``, ``mode``,
        ``keep_vectors``).
    """

    def __init__(self, **options: object) -> None:
        LSHIndex(1, **options)  # fail now, not at the first add, on a bad option
        self._options = options
        self._indexes: dict[Hashable, LSHIndex] = {}

    def __len__(self) -> int:
        return len(self._indexes)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._indexes)

    def __contains__(self, block_class: object) -> bool:
        return block_class in self._indexes

    def __getitem__(self, block_class: Hashable) -> LSHIndex:
        return self._indexes[block_class]

    def add(self, block_class: Hashable, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors to the index of ``block_class`` (created with their dimension)."""
        x = as_vectors(vectors)
        if block_class not in self._indexes:
            self._indexes[block_class] = LSHIndex(x.shape[1], **self._options)
        self._indexes[block_class].add(ids, x)

    def match(
        self,
        block_class: Hashable,
        vectors: np.ndarray,
        tolerance: Tolerance | float,
        **kwargs: object,
    ) -> Matches:
        """:meth:`LSHIndex.match` in the index of ``block_class``; no matches if it has none."""
        index = self._indexes.get(block_class)
        if index is None:
            x = as_vectors(vectors)
            as_tolerance(tolerance)
            return Matches(
                ids=np.full(x.shape[0], -1, dtype=np.int64),
                errors=np.full(x.shape[0], np.inf),
                checked=0,
            )
        return index.match(vectors, tolerance, **kwargs)


def _norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, accumulated in float64."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
