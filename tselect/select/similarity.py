"""Query–pool similarity, streamed over pool rows so memory never grows with N·M.

Every representation is stored as one or more checkpoints t of L2-normalized rows
(pool_t [N, d_t], query_t [M, d_t]) with weights w_t summing to 1. The similarity every
selector sees is S = Σ_t w_t · query_t @ pool_tᵀ, shape [M, N]: plain cosine for one
checkpoint, the LESS learning-rate-weighted sum for several.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_CHUNK_ROWS = 16384


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

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, S[:, start:start+n]) float32 blocks covering the pool in order."""
        raise NotImplementedError

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
    """

    pools: Sequence
    queries: Sequence[np.ndarray]
    weights: Sequence[float]
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __post_init__(self):
        assert len(self.pools) == len(self.queries) == len(self.weights) > 0
        self.n_pool = int(self.pools[0].shape[0])
        self.n_query = int(self.queries[0].shape[0])
        self._q = [np.asarray(q, dtype=np.float32) for q in self.queries]

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n_pool, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.n_pool)
            block = np.zeros((self.n_query, stop - start), dtype=np.float32)
            for pool, q, w in zip(self.pools, self._q, self.weights):
                rows = np.asarray(pool[start:stop], dtype=np.float32)  # [n, d_t]
                block += np.float32(w) * (q @ rows.T)
            yield start, block


def column_max(sim: Similarity) -> np.ndarray:
    """max_i S[i, j] for every pool row j → [N] float32."""
    out = np.empty(sim.n_pool, dtype=np.float32)
    for start, block in sim.chunks():
        out[start : start + block.shape[1]] = block.max(axis=0)
    return out


def topk_per_query(sim: Similarity, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k most similar pool rows, streamed: (values [M, k], indices [M, k]).

    Rows are sorted by similarity descending, ties to the lower pool index, so results are
    deterministic and independent of the chunk size.
    """
    k = min(k, sim.n_pool)
    best_v = np.empty((sim.n_query, 0), dtype=np.float32)
    best_i = np.empty((sim.n_query, 0), dtype=np.int64)
    for start, block in sim.chunks():
        idx = np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)
        vals = np.concatenate([best_v, block], axis=1)
        inds = np.concatenate([best_i, idx], axis=1)
        if vals.shape[1] > k:
            # Keep a superset by partition, then exact-sort only the survivors below.
            part = np.argpartition(-vals, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(vals, part, axis=1).min(axis=1, keepdims=True)
            keep = vals >= kth  # ties at the k-th value all survive, so index order decides
            vals, inds = _sorted_rows(vals, inds, keep, k)
        best_v, best_i = vals, inds
    return _sort_rows(best_v, best_i)


def _sorted_rows(vals, inds, keep, k):
    out_v = np.empty((vals.shape[0], k), dtype=np.float32)
    out_i = np.empty((vals.shape[0], k), dtype=np.int64)
    for r in range(vals.shape[0]):
        v, i = vals[r, keep[r]], inds[r, keep[r]]
        order = np.lexsort((i, -v))[:k]
        out_v[r], out_i[r] = v[order], i[order]
    return out_v, out_i


def _sort_rows(vals, inds):
    order = np.lexsort((inds, -vals), axis=1) if vals.size else np.zeros(vals.shape, dtype=np.int64)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(inds, order, axis=1)
