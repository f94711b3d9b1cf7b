"""Query–pool similarity, streamed over pool rows so memory never grows with N·M.

Every representation is stored as one or more checkpoints t of L2-normalized rows
(pool_t [N, d_t], query_t [M, d_t]) with weights w_t summing to 1. The similarity every
selector sees is S = Σ_t w_t · query_t @ pool_tᵀ, shape [M, N]: plain cosine for one
checkpoint, the LESS learning-rate-weighted sum for several.

At pool scale (1M × 1k × d=8192) a pass is dominated by the fp32 matmul, so everything
here is built to make one pass do all the work: the next pool chunk is read (and cast to
fp32) in a background thread while the current one is multiplied, top-k lists are merged
lazily in vectorized sorts, and a finished pass remembers max_i S[i, j] for `column_max`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

DEFAULT_CHUNK_ROWS = 16384
TORCH_MIN_FLOP = 2e9  # below this numpy is as fast and importing torch (~1 s) would dominate


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-normalize [n, d] to unit length in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def cosine(query: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Cosine similarity [M, d] × [N, d] → [M, N] (float32), for inputs of any norm."""
    return l2_normalize(query) @ l2_normalize(pool).T


class Similarity:
    """S [M, N] served in chunks of pool rows; subclasses implement `chunks`."""

    n_query: int
    n_pool: int
    records_column_max = False  # True: every finished pass leaves max_i S[i, :] cached

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, S[:, start:start+n]) float32 blocks covering the pool in order."""
        raise NotImplementedError

    def cached_column_max(self) -> np.ndarray | None:
        """max_i S[i, :] [N] if a finished pass recorded it, else None."""
        return None

    def dense(self) -> np.ndarray:
        """The whole [M, N] matrix; only for pools small enough to hold it."""
        out = np.empty((self.n_query, self.n_pool), dtype=np.float32)
        for start, block in self.chunks():
            out[:, start : start + block.shape[1]] = block
        return out


class ArraySimilarity(Similarity):
    """A precomputed dense matrix (tests, small pools)."""

    def __init__(self, sim: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.sim = np.asarray(sim, dtype=np.float32)
        assert self.sim.ndim == 2, "similarity must be [n_query, n_pool]"
        self.n_query, self.n_pool = self.sim.shape
        self.chunk_rows = chunk_rows

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n_pool, self.chunk_rows):
            yield start, self.sim[:, start : start + self.chunk_rows]


@dataclass
class FeatureSimilarity(Similarity):
    """Weighted sum over checkpoints of query_t @ pool_tᵀ, reading pool rows chunk by chunk.

    pools: per checkpoint, an array-like [N, d_t] sliceable by rows (numpy or zarr arrays).
    queries: per checkpoint, [M, d_t] (small, held in memory).
    Rows are expected to be unit-norm already (the store writes them normalized).
    chunk_rows is rounded up to whole storage chunks of a zarr pool (each read once).
    """

    pools: Sequence
    queries: Sequence[np.ndarray]
    weights: Sequence[float]
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    _colmax: np.ndarray | None = field(default=None, init=False, repr=False)
    records_column_max = True

    def __post_init__(self):
        assert len(self.pools) == len(self.queries) == len(self.weights) > 0
        self.n_pool = int(self.pools[0].shape[0])
        self.n_query = int(self.queries[0].shape[0])
        # w_t folded into the queries: Σ_t (w_t q_t) @ r_tᵀ, one product per checkpoint.
        self._q = [np.float32(w) * np.asarray(q, dtype=np.float32) for q, w in zip(self.queries, self.weights)]
        stored = getattr(self.pools[0], "chunks", None)  # zarr: (rows, d) of one storage chunk
        if stored and stored[0] > 0:
            self.chunk_rows = -(-self.chunk_rows // stored[0]) * stored[0]

    def cached_column_max(self) -> np.ndarray | None:
        return self._colmax

    def _read(self, start: int, stop: int) -> list[np.ndarray]:
        # Runs in the prefetch thread: file reads and the fp16→fp32 cast release the GIL.
        return [np.asarray(pool[start:stop], dtype=np.float32) for pool in self.pools]  # [n, d_t]

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        bounds = [(s, min(s + self.chunk_rows, self.n_pool)) for s in range(0, self.n_pool, self.chunk_rows)]
        flop = 2.0 * self.n_query * self.n_pool * sum(q.shape[1] for q in self._q)
        matmul = _matmul(self._q, flop)
        colmax = np.empty(self.n_pool, dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tselect-read") as io:
            ahead = io.submit(self._read, *bounds[0]) if bounds else None
            for c, (start, stop) in enumerate(bounds):
                rows = ahead.result()
                ahead = io.submit(self._read, *bounds[c + 1]) if c + 1 < len(bounds) else None
                block = matmul(rows)  # [M, n] float32
                colmax[start:stop] = block.max(axis=0) if self.n_query else -np.inf
                yield start, block
        self._colmax = colmax  # only a completed pass covers every column


def _matmul(queries: list[np.ndarray], flop: float) -> Callable[[list[np.ndarray]], np.ndarray]:
    """rows (per checkpoint [n, d_t] fp32) → Σ_t q_t @ rows_tᵀ [M, n], in torch (all cores) if
    available and the pass is big enough, else numpy. Chosen once per pass, so every chunk
    goes through the same kernels."""
    if flop >= TORCH_MIN_FLOP and importlib.util.find_spec("torch") is not None:
        import torch  # lazy: only big passes pay the import

        qt = [torch.from_numpy(q) for q in queries]

        def torch_mm(rows: list[np.ndarray]) -> np.ndarray:
            out = qt[0] @ torch.from_numpy(rows[0]).T
            for q, r in zip(qt[1:], rows[1:]):
                out.addmm_(q, torch.from_numpy(r).T)
            return out.numpy()

        return torch_mm

    def numpy_mm(rows: list[np.ndarray]) -> np.ndarray:
        out = queries[0] @ rows[0].T
        for q, r in zip(queries[1:], rows[1:]):
            out += q @ r.T
        return out

    return numpy_mm


def column_max(sim: Similarity) -> np.ndarray:
    """max_i S[i, j] for every pool row j → [N] float32 (free after any finished pass)."""
    if sim.records_column_max and sim.cached_column_max() is None:
        for _ in sim.chunks():  # the pass itself records the maxima
            pass
    cached = sim.cached_column_max()
    if cached is not None:
        return cached.copy()
    out = np.empty(sim.n_pool, dtype=np.float32)
    for start, block in sim.chunks():
        out[start : start + block.shape[1]] = block.max(axis=0)
    return out


def topk_per_query(sim: Similarity, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k most similar pool rows, streamed: (values [M, k], indices [M, k]).

    Rows are sorted by similarity descending, ties to the lower pool index, so results are
    deterministic and independent of the chunk size. `exclude` (bool [N]) masks pool rows out.
    """
    n_ok = sim.n_pool - (int(np.count_nonzero(exclude)) if exclude is not None else 0)
    top = RunningTopK(sim.n_query, min(k, n_ok))
    for start, block in sim.chunks():
        skip = None if exclude is None else exclude[start : start + block.shape[1]]
        top.push(start, block, skip)
    return top.result()


class RunningTopK:
    """Per row, the k largest of a stream of column blocks by (value desc, index asc).

    Blocks arrive in increasing column order, so once a row holds k entries a new column can
    only enter with a value strictly above the row's k-th (an equal value loses to the older,
    lower index). Such survivors are buffered, and merged in one vectorized sort once some
    row has buffered k of them: for unordered data about ln(N/k) merges of O(M·k) cells each,
    instead of a sort per chunk (or a python loop per row). Values must be finite.
    """

    def __init__(self, m: int, k: int):
        self.m, self.k = m, k
        self.val = np.empty((m, 0), dtype=np.float32)  # [M, ≤k] sorted
        self.idx = np.empty((m, 0), dtype=np.int64)
        self.thr = np.full(m, -np.inf, dtype=np.float32)  # k-th value once a row is full
        self.buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, value, column)
        self.buffered = np.zeros(m, dtype=np.int64)

    def push(self, start: int, block: np.ndarray, skip: np.ndarray | None = None) -> None:
        n = block.shape[1]
        if self.k == 0 or self.m == 0 or n == 0:
            return
        if self.val.shape[1] == self.k:  # full (rows fill together: all see the same columns)
            keep = block > self.thr[:, None]  # [M, n]
        elif n > self.k:  # a row's entries below its k-th in this block alone can never enter
            own = block if skip is None else np.where(skip[None, :], -np.inf, block)
            keep = own >= np.partition(own, n - self.k, axis=1)[:, n - self.k, None]
        else:
            keep = np.ones(block.shape, dtype=bool)
        if skip is not None:
            keep &= ~skip[None, :]
        rows, cols = np.divmod(np.flatnonzero(keep), n)  # row-major; 2-D nonzero is ~20× slower
        if rows.size == 0:
            return
        self.buf.append((rows, block[rows, cols], cols + start))
        self.buffered += np.bincount(rows, minlength=self.m)
        if self.buffered.max() >= self.k:
            self._merge()

    def _merge(self) -> None:
        rows, vals, cols = (np.concatenate(parts) for parts in zip(*self.buf))
        self.buf, counts = [], self.buffered
        self.buffered = np.zeros(self.m, dtype=np.int64)
        by_row = np.argsort(rows, kind="stable")
        rows, vals, cols = rows[by_row], vals[by_row], cols[by_row]
        have = self.val.shape[1]
        width = have + int(counts.max())  # [M, have + most buffered]; padding sorts last
        pad_v = np.full((self.m, width), -np.inf, dtype=np.float32)
        pad_i = np.full((self.m, width), np.iinfo(np.int64).max, dtype=np.int64)
        pad_v[:, :have], pad_i[:, :have] = self.val, self.idx
        pos = have + np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        pad_v[rows, pos], pad_i[rows, pos] = vals, cols
        keep = min(self.k, have + int(counts.min()))  # all rows have ≥ k, or equal counts < k
        # Within a row, position order is index order (best: sorted, ties by index; then the
        # buffer in arrival order, all later columns), so a stable sort on value alone is exact.
        order = np.argsort(-pad_v, axis=1, kind="stable")[:, :keep]  # [M, keep]
        self.val = np.take_along_axis(pad_v, order, axis=1)
        self.idx = np.take_along_axis(pad_i, order, axis=1)
        if keep == self.k:
            self.thr = self.val[:, -1].copy()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.buf:
            self._merge()
        return self.val, self.idx

    def truncated(self, k: int) -> "RunningTopK":
        """The same stream's top-k for a smaller k (k ≤ self.k), to go on pushing into."""
        out = RunningTopK(self.m, k)
        val, idx = self.result()
        out.val, out.idx = val[:, :k].copy(), idx[:, :k].copy()
        if out.val.shape[1] == k and k > 0:
            out.thr = out.val[:, -1].copy()
        return out


def feature_similarity(features, chunk_rows: int | None = None) -> FeatureSimilarity:
    """Streamed similarity over an opened feature store (store.Features): pools × queries, weighted."""
    from tselect.store import chunk_rows_for

    rows = chunk_rows or max(1024, chunk_rows_for(features.pools[0].shape[1], 4))
    return FeatureSimilarity(features.pools, features.queries, features.weights, chunk_rows=rows)
