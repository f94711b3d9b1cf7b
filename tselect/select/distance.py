"""How close a selected subset is to the queries, from their similarity block S_sub [M, k].

- coverage: mean over queries of the max similarity to the subset (is every query served?);
- chamfer: mean over subset rows of the max similarity to the queries (is every row on-target?);
- ot: optimal-transport cost between the uniform measures on queries and subset with cost
  (1 − S)/2 ∈ [0, 1], a Wasserstein-1-like distance (0 = the subset sits on the queries).
  Exact (`ot.emd2`) up to `exact_max_cells` = M·k; beyond it the entropic `ot.sinkhorn2`
  (log-domain, reg 0.01 by default), whose value is ⟨T_ε, C⟩ and slightly above the exact cost.

`selection_distances` measures every requested prefix of a selection in one pass over the pool.
"""

from __future__ import annotations

import numpy as np

from tselect.similarity import Similarity, feature_similarity

EXACT_MAX_CELLS = 4_000_000  # network simplex stays within seconds to about a minute here
SINKHORN_REG = 0.01


def subset_similarity(sim: Similarity, indices: np.ndarray) -> np.ndarray:
    """S[:, indices] [M, k] in the order given, gathered while streaming pool chunks."""
    indices = np.asarray(indices, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    ranked = indices[order]  # sorted pool rows, so each chunk owns one contiguous run
    out = np.empty((sim.n_query, indices.size), dtype=np.float32)
    for start, block in sim.chunks():
        lo, hi = np.searchsorted(ranked, [start, start + block.shape[1]])
        if hi > lo:
            out[:, order[lo:hi]] = block[:, ranked[lo:hi] - start]
    return out


def subset_query_distances(sim_sub: np.ndarray, exact_max_cells: int = EXACT_MAX_CELLS,
                           reg: float = SINKHORN_REG) -> dict:
    """{coverage, chamfer, ot, ot_solver} for a subset's similarity block [M, k]."""
    import ot  # lazy: POT is heavy

    sim_sub = np.asarray(sim_sub, dtype=np.float64)
    m, k = sim_sub.shape
    if m == 0 or k == 0:
        raise ValueError(f"subset–query distances need queries and a non-empty subset, got {m}×{k}")
    cost = (1.0 - sim_sub) / 2.0  # [M, k]
    a, b = np.full(m, 1.0 / m), np.full(k, 1.0 / k)
    if m * k <= exact_max_cells:
        dist, solver = ot.emd2(a, b, cost, numItermax=10_000_000), "emd"
    else:
        dist, solver = ot.sinkhorn2(a, b, cost, reg, method="sinkhorn_log"), "sinkhorn"
    return {
        "coverage": float(sim_sub.max(axis=1).mean()),
        "chamfer": float(sim_sub.max(axis=0).mean()),
        "ot": float(dist),
        "ot_solver": solver,
    }


def selection_distances(features, indices: np.ndarray, budgets=()) -> list[dict]:
    """[{budget, coverage, chamfer, ot, ot_solver}] for each prefix indices[:b], b in budgets
    (sorted, distinct; empty = the whole selection).

    features: an opened feature store (`tselect.store.Features`) or any `Similarity`; the
    indices must be rows of its pool. S[:, indices[:max b]] is gathered in one streamed pass
    and every prefix is measured on a slice of it.
    """
    sim = features if isinstance(features, Similarity) else feature_similarity(features)
    indices = np.asarray(indices, dtype=np.int64)
    budgets = sorted({int(b) for b in budgets}) or [int(indices.size)]
    if budgets[0] < 1 or budgets[-1] > indices.size:
        raise ValueError(f"budgets {budgets} must lie in 1..{indices.size} (the selection's length)")
    if indices.size and (indices.min() < 0 or indices.max() >= sim.n_pool):
        raise ValueError(f"selection indices must be pool rows 0..{sim.n_pool - 1}")
    block = subset_similarity(sim, indices[: budgets[-1]])  # [M, max b]
    return [{"budget": b, **subset_query_distances(block[:, :b])} for b in budgets]
