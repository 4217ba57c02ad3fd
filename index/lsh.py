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

For a pass that looks up many sets of queries among a slowly changing population (a store
dedup pass: every block is both a possible representative and, for its own model, a query),
build the index once: :meth:`LSHIndex.remove` drops vectors for good, ``exclude=`` hides ids
from one call's proposals (a FAISS ``IDSelectorBitmap``, so the ``k`` proposals are the
nearest *allowed* codes), and :meth:`LSHIndex.match_stored` looks up vectors already in the
index by id, reusing their codes and norms instead of hashing them again.
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

from tensorstore_index.checks import as_count, as_ids, as_vectors
from tensorstore_index.errors import InvalidArgumentError
from tensorstore_index.tolerance import Tolerance, as_tolerance

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
        # A removed row keeps its place in FAISS (removing would renumber the rows) but its
        # id becomes -1 and every search skips it.
        self._ids = np.empty(0, dtype=np.int64)
        self._norms = np.empty(0, dtype=np.float64)
        self._vector_chunks: list[np.ndarray] = []
        self._key_chunks: list[np.ndarray] = []  # codes (or exact-mode vectors) per row
        self._removed = 0
        self._id_order: np.ndarray | None = None  # argsort of _ids, for id -> row lookups

    def __len__(self) -> int:
        return int(self._ids.shape[0]) - self._removed

    def __repr__(self) -> str:
        return (
            f"LSHIndex(dim={self.dim}, nbits={self.nbits}, mode={self.mode!r}, "
            f"size={len(self)})"
        )

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored (not removed) vectors in the order they were added (a copy)."""
        return self._ids[self._ids >= 0] if self._removed else self._ids.copy()

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Return the ``(n, nbits // 8)`` uint8 LSH codes of ``vectors``."""
        x = as_vectors(vectors, dim=self.dim)
        if x.shape[0] == 0:
            return np.empty((0, self.nbits // 8), dtype=np.uint8)
        return np.packbits(self._projection.apply(x) > 0, axis=1)

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, copy: bool = True) -> None:
        """Add ``vectors`` under ``ids`` (non-negative, unique, not yet in the index).

        Parameters
        ----------
        ids : array of n ints
            Ids of the vectors.
        vectors : array, shape (n, dim)
            The vectors.
        copy : bool
            With ``keep_vectors``, keep a private copy of ``vectors`` (default). ``False``
            keeps a C-contiguous float32 ``vectors`` itself (no second copy of a large
            block set); the caller must then never modify it.

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
        keys = self._keys(x)
        self._codes.add(keys)
        self._key_chunks.append(keys.copy() if keys is x else keys)
        self._id_order = None
        self._ids = np.concatenate([self._ids, new_ids])
        self._norms = np.concatenate([self._norms, _norms(x)])
        if self.keep_vectors:
            # as_vectors may hand back the caller's own buffer: keep a private copy.
            shared = isinstance(vectors, np.ndarray) and np.may_share_memory(x, vectors)
            self._vector_chunks.append(x.copy() if shared and copy else x)

    def remove(self, ids: np.ndarray) -> None:
        """Remove the vectors stored under ``ids``: never proposed again; an id may be re-added.

        Removal only hides the rows (renumbering FAISS rows would cost a full copy); their
        codes, norms and kept vectors stay in memory until the index is dropped, so rebuild
        an index whose population has mostly been removed.

        Raises
        ------
        InvalidArgumentError
            If an id is not in the index (nothing is removed then).
        """
        rows = self._rows_of(ids)
        if rows.size:
            rows = np.unique(rows)
            self._ids[rows] = -1
            self._removed += int(rows.shape[0])
            self._id_order = None

    def search(
        self,
        vectors: np.ndarray,
        k: int = 8,
        *,
        exclude_ids: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
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
        exclude : array of ints, optional
            Ids never proposed to any query of this call (ids not in the index are ignored).
        """
        x = as_vectors(vectors, dim=self.dim)
        k = as_count(k, "k", minimum=1)
        rows, distances = self._search_rows(self._keys(x), k, exclude_ids, exclude)
        ids = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1) if self._ids.size else rows
        return Candidates(ids=ids, distances=distances)

    def match(
        self,
        vectors: np.ndarray,
        tolerance: Tolerance | float,
        *,
        k: int = 8,
        query_ids: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
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
        exclude : array of ints, optional
            Ids that are no candidate for any query of this call: the ``k`` proposals are
            the nearest codes among the others.
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
        self._check_fetch(fetch)
        k = as_count(k, "k", minimum=1)
        n = x.shape[0]
        if query_ids is not None:
            as_ids(query_ids, n, "query_ids")
        if n == 0 or len(self) == 0:
            return _no_matches(n)
        rows, _ = self._search_rows(self._keys(x), k, query_ids, exclude)
        return self._verify(rows, _norms(x), tol, fetch, queries=x)

    def match_stored(
        self,
        ids: np.ndarray,
        tolerance: Tolerance | float,
        *,
        k: int = 8,
        exclude: np.ndarray | None = None,
        fetch: Fetch | None = None,
    ) -> Matches:
        """:meth:`match` for vectors already in the index, named by their ids.

        The same result as ``match(vectors_of(ids), tolerance, query_ids=ids, ...)``, but
        the stored codes and norms are reused (no hashing, no norms) and the query vectors
        come from the index (or ``fetch``) only for the pairs that need an exact check.

        Parameters
        ----------
        ids : array of n ints
            Ids of stored vectors to look up; each is never matched with itself.
        tolerance, k, exclude, fetch
            As in :meth:`match`.

        Raises
        ------
        InvalidArgumentError
            If an id is not in the index.
        """
        tol = as_tolerance(tolerance)
        self._check_fetch(fetch)
        k = as_count(k, "k", minimum=1)
        query_ids = _id_list(ids, "ids")
        query_rows = self._rows_of(query_ids)
        if query_rows.shape[0] == 0:
            return _no_matches(0)
        rows, _ = self._search_rows(self._stored_keys(query_rows), k, query_ids, exclude)
        return self._verify(rows, self._norms[query_rows], tol, fetch, query_rows=query_rows)

    def _check_fetch(self, fetch: Fetch | None) -> None:
        if not self.keep_vectors and fetch is None:
            raise InvalidArgumentError(
                "this index was built with keep_vectors=False: pass fetch=callable(ids) -> vectors"
            )

    def _verify(
        self,
        rows: np.ndarray,
        query_norms: np.ndarray,
        tol: Tolerance,
        fetch: Fetch | None,
        *,
        queries: np.ndarray | None = None,
        query_rows: np.ndarray | None = None,
    ) -> Matches:
        """Exact check of the proposed ``rows`` (one row of candidates per query).

        The query vectors are ``queries``, or the stored vectors at ``query_rows``.
        """
        n, k = rows.shape
        # Exact error of every (query, candidate) pair the norm filter cannot rule out,
        # computed in chunks so memory stays bounded for 64 KiB blocks.
        errors = np.full(rows.shape, np.inf)
        q_at, c_at = np.nonzero(rows >= 0)  # row-major: each query's pairs are adjacent
        stored = rows[q_at, c_at]
        plausible = tol.may_accept(query_norms[q_at], self._norms[stored])
        q_at, c_at, stored = q_at[plausible], c_at[plausible], stored[plausible]
        chunk = max(k, _VERIFY_CHUNK_BYTES // (8 * self.dim))
        for start in range(0, q_at.shape[0], chunk):
            pq, pc, ps = q_at[start : start + chunk], c_at[start : start + chunk], stored[start : start + chunk]
            qs, first, counts = np.unique(pq, return_index=True, return_counts=True)
            needed = ps if query_rows is None else np.concatenate([ps, query_rows[qs]])
            take = self._vector_source(needed, fetch)
            # Queries with equal candidate counts form an (nq, m) grid: each query vector
            # is read once and broadcast against its m candidates, never copied per pair.
            for m in np.unique(counts).tolist():
                grid = first[counts == m][:, None] + np.arange(m)
                at = qs[counts == m]
                q = queries[at] if query_rows is None else take(query_rows[at])
                candidates = take(ps[grid.ravel()]).reshape(-1, m, self.dim)
                errors[pq[grid], pc[grid]] = tol.errors(q[:, None, :], candidates)
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
        self,
        keys: np.ndarray,
        k: int,
        exclude_ids: np.ndarray | None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows (insertion positions) of the ``k`` nearest allowed codes, ``-1`` padded, and
        their distances. Removed rows and ``exclude``'s ids are never proposed; ``exclude_ids``
        (one per query) is never proposed to its own query."""
        n = keys.shape[0]
        own = None if exclude_ids is None else as_ids(exclude_ids, n, "exclude_ids")
        allowed = self._allowed_rows(exclude)
        if n == 0 or len(self) == 0 or (allowed is not None and not allowed.any()):
            return np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), dtype=np.int32)
        # Ids are unique, so at most one proposal per query is the query itself.
        wanted = k + (own is not None)
        if allowed is None:
            distances, rows = self._codes.search(keys, wanted)
        elif self.mode != "buckets":
            # The selector reads the bitmap during the search only; keep it referenced.
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(allowed.shape[0], faiss.swig_ptr(bitmap))
            params = faiss.SearchParameters(sel=selector)
            distances, rows = self._codes.search(keys, wanted, params=params)
        else:
            distances, rows = self._search_buckets_allowed(keys, wanted, allowed)
        rows = rows.astype(np.int64, copy=False)
        if own is not None:
            is_self = (rows >= 0) & (self._ids[np.maximum(rows, 0)] == own[:, None])
            rows = np.where(is_self, -1, rows)
        # Move padding (-1) to the end of each row, keeping the nearest-first order.
        order = np.argsort(rows < 0, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(rows, order, 1), np.take_along_axis(distances, order, 1)

    def _allowed_rows(self, exclude: np.ndarray | None) -> np.ndarray | None:
        """Boolean mask of the rows a search may propose, or ``None`` when all may be."""
        if exclude is not None:
            exclude = _id_list(exclude, "exclude")
        if not self._removed and (exclude is None or exclude.size == 0):
            return None
        allowed = self._ids >= 0
        if exclude is not None and exclude.size:
            allowed &= ~np.isin(self._ids, exclude)
        return allowed

    def _search_buckets_allowed(
        self, keys: np.ndarray, wanted: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hash-table search with a row mask (FAISS's multi-hash index takes no selector):
        ask for more proposals until every query has ``wanted`` allowed ones or all there are."""
        total = allowed.shape[0]
        ask = min(total, 2 * wanted)
        while True:
            distances, rows = self._codes.search(keys, ask)
            rows = rows.astype(np.int64, copy=False)
            ok = (rows >= 0) & allowed[np.maximum(rows, 0)]
            # A query got fewer than `ask` proposals only when its buckets ran dry.
            exhausted = (rows < 0).any(axis=1)
            if ask >= total or ((ok.sum(axis=1) >= wanted) | exhausted).all():
                break
            ask = min(total, 2 * ask)
        rows = np.where(ok, rows, -1)
        order = np.argsort(rows < 0, axis=1, kind="stable")[:, :wanted]
        return np.take_along_axis(distances, order, 1), np.take_along_axis(rows, order, 1)

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the stored (not removed) vectors with these ids."""
        wanted = _id_list(ids, "ids")
        if self._id_order is None:
            self._id_order = np.argsort(self._ids, kind="stable")
        sorted_ids = self._ids[self._id_order]
        at = np.minimum(np.searchsorted(sorted_ids, wanted), max(sorted_ids.shape[0] - 1, 0))
        rows = self._id_order[at] if sorted_ids.shape[0] else np.zeros_like(wanted)
        missing = (sorted_ids[at] != wanted) if sorted_ids.shape[0] else np.ones(wanted.shape, bool)
        if missing.any():
            raise InvalidArgumentError(f"ids not in the index: {wanted[missing][:5].tolist()}")
        return rows

    def _stored_keys(self, rows: np.ndarray) -> np.ndarray:
        """The keys (codes, or vectors in exact mode) stored at ``rows``."""
        if len(self._key_chunks) > 1:
            self._key_chunks = [np.concatenate(self._key_chunks)]
        return self._key_chunks[0][rows]

    def _vector_source(
        self, rows: np.ndarray, fetch: Fetch | None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``take(r)``: the stored vectors at rows ``r`` (a subset of ``rows``), from memory
        or, with ``keep_vectors=False``, from one ``fetch`` of every distinct row's id."""
        if self.keep_vectors:
            if len(self._vector_chunks) > 1:  # join once, after a run of add() calls
                self._vector_chunks = [np.concatenate(self._vector_chunks)]
            stored = self._vector_chunks[0]
            return lambda r: stored[r]
        unique_rows = np.unique(rows)
        wanted = self._ids[unique_rows]
        fetched = as_vectors(fetch(wanted.copy()), "fetched vectors", dim=self.dim)
        if fetched.shape[0] != wanted.shape[0]:
            raise InvalidArgumentError(
                f"fetch returned {fetched.shape[0]} vectors for {wanted.shape[0]} ids"
            )
        return lambda r: fetched[np.searchsorted(unique_rows, r)]


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

    def add(
        self, block_class: Hashable, ids: np.ndarray, vectors: np.ndarray, *, copy: bool = True
    ) -> None:
        """Add vectors to the index of ``block_class`` (created with their dimension).

        ``copy`` as in :meth:`LSHIndex.add`.
        """
        x = as_vectors(vectors)
        if block_class not in self._indexes:
            self._indexes[block_class] = LSHIndex(x.shape[1], **self._options)
        self._indexes[block_class].add(ids, x if copy else vectors, copy=copy)

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

    def match_stored(
        self, block_class: Hashable, ids: np.ndarray, tolerance: Tolerance | float, **kwargs: object
    ) -> Matches:
        """:meth:`LSHIndex.match_stored` in the index of ``block_class``."""
        index = self._indexes.get(block_class)
        if index is None:
            raise InvalidArgumentError(f"no index for block class {block_class!r}")
        return index.match_stored(ids, tolerance, **kwargs)

    def remove(self, block_class: Hashable, ids: np.ndarray) -> None:
        """:meth:`LSHIndex.remove` in the index of ``block_class``."""
        index = self._indexes.get(block_class)
        if index is None:
            raise InvalidArgumentError(f"no index for block class {block_class!r}")
        index.remove(ids)


def _id_list(ids: object, name: str) -> np.ndarray:
    """``ids`` as a 1-D int64 array of non-negative ids, of any length."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a 1-D array of ids, got shape {array.shape}")
    return as_ids(array, array.shape[0], name)


def _no_matches(n: int) -> Matches:
    return Matches(ids=np.full(n, -1, dtype=np.int64), errors=np.full(n, np.inf), checked=0)


def _norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, accumulated in float64."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
