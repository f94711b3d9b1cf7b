"""KNN-KDE (TSDS with a kernel-density correction): queries water-fill their nearest pool rows,
giving less mass to rows in dense regions so near-duplicates do not crowd the selection.

1. Each query keeps its L nearest rows under D = max(1 − S, 0) (sorted, ties to lower index).
2. For every row u of the union U of those lists: kde(u) = Σ over its KDE_K nearest rows in U
   (itself included) of max(0, 1 − 2·dist/σ²), dist = max(1 − Σ_t w_t⟨x_t, y_t⟩, 0) on the
   checkpoint features (2·dist is the squared L2 distance of unit vectors). σ = 0 → kde ≡ 1.
3. Water-filling (TSDS Alg. 2): a heap of (level s, k, query) raises one level s for all
   queries; query j gives 1/(M·s·kde) to each of its first lastK_j + 1 rows while
   (α/C)·total_cost < (1 − α)·M, and the rest of its 1/M to row lastK_j + 1.
4. Rank rows by p descending (p equal up to float noise, 12 decimals of M·p, tie to the
   lower index); rows with p = 0 follow by max similarity to any query (the reference raises
   when fewer than 10k rows have p > 0, an artefact of its 200k pools; here the order simply
   continues).

L and KDE_K are capped at N // pool_divisor like TSDS (N // 10), and L is at least 2.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from tselect.select.basic import order_by_score
from tselect.select.diversity import feature_weights, take_rows, weighted_dot
from tselect.select.inputs import SelectInputs, check_param
from tselect.select.knn import fill_by_max_similarity
from tselect.similarity import topk_per_query

BLOCK_FLOATS = 1 << 24  # feature floats per gathered block of U (64 MB float32)


@dataclass(frozen=True)
class KNNKDEParams:
    alpha: float = 0.01
    """TSDS α ∈ (0, 1): weight of the transport cost against the diversity term."""
    c: float = 5.0
    """TSDS C > 0: scale of the distances in the transport cost."""
    max_k: int = 5000
    """L: nearest pool rows kept per query (then capped at N // pool_divisor, at least 2)."""
    kde_k: int = 1000
    """KDE_K: neighbours within the candidate union summed into each density (self included)."""
    sigma: float = 0.75
    """Kernel bandwidth σ: rows closer than σ²/2 in cosine distance add density; 0 = no KDE."""
    pool_divisor: int = 10
    """Cap L and KDE_K at N // pool_divisor (TSDS uses 10); 1 = cap at the pool size."""

    def __post_init__(self):
        check_param(0 < self.alpha < 1, "alpha", self.alpha, "in (0, 1)", "0.01")
        check_param(self.c > 0, "c", self.c, "> 0", "5")
        check_param(self.max_k >= 2, "max_k", self.max_k, ">= 2", "5000")
        check_param(self.kde_k >= 1, "kde_k", self.kde_k, ">= 1", "1000")
        check_param(self.sigma >= 0, "sigma", self.sigma, ">= 0 (0 = no KDE)", "0.75")
        check_param(self.pool_divisor >= 1, "pool_divisor", self.pool_divisor, ">= 1", "10")


def kde_values(feats, w: np.ndarray, rows: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """kde(u) for u in `rows` [U] against the other `rows` only → [U] float64.

    U×U similarities are computed in blocks of gathered rows, keeping a running top-k per
    row, so memory is O(block·(U + d)) and never U².
    """
    n = rows.size
    k = min(k, n)
    block = max(1, min(n, BLOCK_FLOATS // max(1, sum(f.shape[1] for f in feats))))
    out = np.empty(n, dtype=np.float64)
    for r0 in range(0, n, block):
        xr = [take_rows(f, rows[r0:r0 + block]) for f in feats]  # [b, d_t]
        best = np.empty((xr[0].shape[0], 0), dtype=np.float32)  # running top-k similarities
        for c0 in range(0, n, block):
            xc = xr if c0 == r0 else [take_rows(f, rows[c0:c0 + block]) for f in feats]
            cand = np.concatenate([best, weighted_dot(xr, xc, w)], axis=1)  # [b, ≤ k + b]
            best = cand if cand.shape[1] <= k else -np.partition(-cand, k - 1, axis=1)[:, :k]
        dist = np.maximum(1.0 - best.astype(np.float64), 0.0)  # [b, k]
        out[r0:r0 + xr[0].shape[0]] = np.maximum(1.0 - 2.0 * dist / sigma**2, 0.0).sum(axis=1)
    # A unit row's own term is ≈1, so kde > 0; an all-zero row (self-similarity 0) gets 1.
    return np.where(out > 0, out, 1.0)


def water_fill(dist: np.ndarray, kde: np.ndarray, alpha: float, c: float):
    """TSDS water-filling on sorted distances and densities [M, L] → (s, lastK [M]).

    Heap entries (level, k, query) raise the common level s one step at a time; ties pop in
    (k, query) order, so the result is deterministic.
    """
    m, width = dist.shape
    d, inv = dist.tolist(), (1.0 / kde).tolist()  # python floats: this loop is scalar-bound
    heap = [(inv[j][0], 0, j) for j in range(m)]
    heapq.heapify(heap)
    wsum = [d[j][0] * inv[j][0] for j in range(m)]  # Σ_{k≤lastK} d_k / kde_k per query
    cost = [0.0] * m
    last = [0] * m
    total, level, limit = 0.0, 0.0, (1.0 - alpha) * m
    while heap:
        level, k, j = heapq.heappop(heap)
        total -= cost[j]
        cost[j] = d[j][k + 1] * level - wsum[j]  # moving mass on to neighbour k + 1
        total += cost[j]
        if alpha / c * total >= limit:
            break
        last[j] = k
        if k < width - 2:
            heapq.heappush(heap, (level + inv[j][k + 1], k + 1, j))
            wsum[j] += d[j][k + 1] * inv[j][k + 1]
    return level, np.asarray(last, dtype=np.int64)


def kde_probabilities(idx: np.ndarray, kde: np.ndarray, level: float, last: np.ndarray,
                      n: int) -> np.ndarray:
    """p over the pool [N] from the water-filling result (idx, kde: [M, L])."""
    m = idx.shape[0]
    p = np.zeros(n, dtype=np.float64)
    for j in range(m):
        k1 = int(last[j]) + 1
        mass = 1.0 / (m * level * kde[j, :k1])  # [k1]
        np.add.at(p, idx[j, :k1], mass)
        p[idx[j, k1]] += max(1.0 / m - float(mass.sum()), 0.0)  # the partly filled row
    return p


def select_knn_kde(inp: SelectInputs, budget: int, params: KNNKDEParams, seed: int) -> np.ndarray:
    sim, n = inp.sim, inp.n_pool
    if n < 2:  # water-filling needs a next neighbour
        return np.arange(n, dtype=np.int64)[:budget]
    cap = max(1, n // params.pool_divisor)
    vals, idx = topk_per_query(sim, min(max(min(params.max_k, cap), 2), n))  # [M, L]
    dist = np.maximum(1.0 - vals.astype(np.float64), 0.0)  # [M, L] ascending
    if params.sigma == 0:
        kde = np.ones(idx.shape, dtype=np.float64)
    else:
        feats, w = feature_weights(inp)
        union = np.unique(idx)  # [U] sorted
        per_row = kde_values(feats, w, union, min(params.kde_k, cap), params.sigma)  # [U]
        kde = per_row[np.searchsorted(union, idx)]  # [M, L]
    level, last = water_fill(dist, kde, params.alpha, params.c)
    # Quantize M·p to 12 decimals: rows whose p agree up to float noise (e.g. a remainder of
    # 1/M − Σ that is 0 up to rounding) tie exactly, so the lower index wins as documented.
    p = np.round(kde_probabilities(idx, kde, level, last, n) * idx.shape[0], 12)
    p[p == 0] = np.nan  # unreached rows: ranked afterwards by max similarity
    return fill_by_max_similarity(order_by_score(p), sim, budget)
