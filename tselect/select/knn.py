"""KNN-Uniform (TSDS with the G∞ discrepancy): every query spreads its mass evenly over its K
nearest pool rows, with one K shared by all queries and chosen by the TSDS rule.

Distances are D = 1 − S. Each query keeps its L nearest rows (sorted, ties to the lower pool
index). K starts at 1 and grows while (α/C)·Σ_i Σ_{k≤K} (d_{i,K+1} − d_{i,k}) < (1 − α)·M,
so the cost of moving mass one neighbour further stays below the budget α/C allows. Then
p_j = #{i : j ∈ top-K(i)} / (K·M) and rows are ranked by p descending: a deterministic
ranking, not TSDS sampling.

Rows with p = 0 are ranked after, by their max similarity to any query (the reference
instead warns when fewer than 10k rows have p > 0; here the order simply continues).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tselect.select.basic import order_by_score
from tselect.select.inputs import SelectInputs, check_param
from tselect.similarity import Similarity, column_max, topk_per_query


@dataclass(frozen=True)
class KNNUniformParams:
    alpha: float = 0.01
    """TSDS α ∈ (0, 1): weight of the transport cost against the diversity term."""
    c: float = 5.0
    """TSDS C > 0: scale of the distances in the transport cost."""
    max_k: int = 5000
    """L: nearest pool rows kept per query (capped at the pool size); K never exceeds it."""

    def __post_init__(self):
        check_param(0 < self.alpha < 1, "alpha", self.alpha, "in (0, 1)", "0.01")
        check_param(self.c > 0, "c", self.c, "> 0", "5")
        check_param(self.max_k >= 1, "max_k", self.max_k, ">= 1", "5000")


def fill_by_max_similarity(head: np.ndarray, sim: Similarity, budget: int) -> np.ndarray:
    """`head` then every other pool row by max similarity to any query (ties to lower index).

    The extra pass over S runs only when the budget reaches past the head; the ordering is
    the same either way, so smaller budgets stay prefixes.
    """
    head = np.asarray(head, dtype=np.int64)
    if head.size >= budget:
        return head[:budget]
    score = column_max(sim).astype(np.float64)  # [N]
    score[head] = np.nan  # order_by_score drops NaN: the head is not repeated
    return np.concatenate([head, order_by_score(score)])[:budget]


def uniform_k(dist: np.ndarray, alpha: float, c: float) -> int:
    """The TSDS K for sorted distances [M, L] (ascending per row).

    g(K) = Σ_i Σ_{k≤K} (d_{i,K+1} − d_{i,k}) = K·Σ_i d_{i,K+1} − Σ_{k≤K} Σ_i d_{i,k}, so every
    g(K) comes from column sums in O(M·L) rather than the O(M·L²) of re-summing per K.
    K is the first value whose g crosses the bound (what the while-loop stops at), else L.
    """
    m, width = dist.shape
    if width < 2:
        return width
    col = dist.sum(axis=0)  # [L] Σ_i d_{i,k}
    ks = np.arange(1, width)  # K = 1..L-1 (needs d_{i,K+1})
    gaps = ks * col[1:] - np.cumsum(col)[:-1]  # [L-1] g(K)
    crossed = np.flatnonzero((alpha / c) * gaps >= (1.0 - alpha) * m)
    return int(ks[crossed[0]]) if crossed.size else width


def select_knn_uniform(inp: SelectInputs, budget: int, params: KNNUniformParams,
                       seed: int) -> np.ndarray:
    sim = inp.sim
    vals, idx = topk_per_query(sim, min(params.max_k, sim.n_pool))  # [M, L] S desc
    dist = 1.0 - vals.astype(np.float64)  # [M, L] ascending
    k = uniform_k(dist, params.alpha, params.c)
    # p_j = count_j / (K·M): ranking by the integer count avoids float ties.
    counts = np.bincount(idx[:, :k].ravel(), minlength=sim.n_pool).astype(np.float64)  # [N]
    counts[counts == 0] = np.nan  # p = 0: ranked afterwards by max similarity
    return fill_by_max_similarity(order_by_score(counts), sim, budget)
