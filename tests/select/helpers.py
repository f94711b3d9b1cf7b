"""Small random selector inputs shared by the selector tests."""

from __future__ import annotations

import numpy as np

from tselect.select.inputs import SelectInputs
from tselect.similarity import ArraySimilarity, l2_normalize


def order_of(out) -> np.ndarray:
    """A selector's ordering, whether it returned the order or (order, scores)."""
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def clustered(rng, n: int, d: int, centers: np.ndarray, noise: float) -> np.ndarray:
    """n unit rows [n, d] scattered around random rows of `centers` (so some are near-duplicates)."""
    pick = rng.integers(0, centers.shape[0], size=n)
    return l2_normalize(centers[pick] + noise * rng.standard_normal((n, d)))


def random_inputs(n: int = 40, m: int = 6, seed: int = 0, chunk_rows: int = 16384) -> SelectInputs:
    """Two checkpoints (d = 8, 5) with weights .6/.4, S consistent with the features, scores with
    NaN, three query subtasks and three excluded rows."""
    rng = np.random.default_rng(seed)
    pools, queries = [], []
    for d in (8, 5):
        centers = rng.standard_normal((6, d))
        pools.append(clustered(rng, n, d, centers, 0.3))
        queries.append(clustered(rng, m, d, centers, 0.3))
    w = [0.6, 0.4]
    sim = sum(wt * q @ p.T for wt, q, p in zip(w, queries, pools))  # [M, N]
    scores = rng.standard_normal(n)
    scores[[2, 11, 30]] = np.nan
    subtasks = [["a", "b", "c"][i % 3] for i in range(m)]
    return SelectInputs(n_pool=n, sim=ArraySimilarity(sim, chunk_rows=chunk_rows),
                        pool_features=pools, query_features=queries, weights=w, scores=scores,
                        query_subtasks=subtasks, exclude=np.array([0, 7, 13]))


def unit_circle(degrees) -> np.ndarray:
    """Unit rows [n, 2] at the given angles."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)
