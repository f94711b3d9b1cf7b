"""The foundation selectors: random, top-k (doubly greedy) and greedy round-robin.

Each returns a full ordering truncated to `budget`, so every smaller budget is a prefix.
Ties always go to the lower pool index, so orderings are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tselect.select.inputs import SelectInputs
from tselect.select.similarity import Similarity, column_max, topk_per_query


@dataclass(frozen=True)
class NoParams:
    """This selector takes no parameters."""


def random_order(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n) (numpy PCG64, so identical on every platform)."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def select_random(inp: SelectInputs, budget: int, params: NoParams, seed: int) -> np.ndarray:
    return random_order(inp.n_pool, seed)[:budget]


def order_by_score(score: np.ndarray) -> np.ndarray:
    """Indices by score descending, ties to the lower index; NaN scores are dropped."""
    score = np.asarray(score, dtype=np.float64)
    keep = np.flatnonzero(~np.isnan(score))
    order = np.lexsort((keep, -score[keep]))
    return keep[order].astype(np.int64)


def select_topk(inp: SelectInputs, budget: int, params: NoParams, seed: int) -> np.ndarray:
    """Doubly greedy: score_j = max_i S[i, j]; order by score descending. Returns (order, scores)."""
    score = column_max(inp.sim)
    order = order_by_score(score)[:budget]
    return order, score[order]


def round_robin(sim: Similarity, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries take turns (file order) picking their most similar unused pool row.

    Each query walks its own candidate list sorted by similarity (ties to lower index) with
    a pointer that skips rows already taken, so the cost is O(k + M·L) after a streaming
    top-L, not an O(k·N) rescan. L starts at ~2k/M and doubles if some query exhausts its
    list before the budget is filled (rare: it needs many conflicts among queries).
    """
    m, n = sim.n_query, sim.n_pool
    budget = min(budget, n)
    width = min(n, max(16, 2 * (budget // max(m, 1) + 1)))
    while True:
        vals, cand = topk_per_query(sim, width)  # [M, L] sorted
        picked = _round_robin_from_candidates(cand, vals, budget, exhaustive=width >= n)
        if picked is not None:
            return picked
        width = min(n, width * 4)


def _round_robin_from_candidates(cand: np.ndarray, vals: np.ndarray, budget: int, exhaustive: bool):
    """(order, similarity of each pick to the query that took it), or None if a list ran out."""
    m, width = cand.shape
    used = np.zeros(int(cand.max()) + 1 if cand.size else 0, dtype=bool)
    ptr = np.zeros(m, dtype=np.int64)
    out = np.empty(budget, dtype=np.int64)
    sims = np.empty(budget, dtype=np.float32)
    for t in range(budget):
        i = t % m
        p = ptr[i]
        while p < width and used[cand[i, p]]:
            p += 1
        if p == width:
            if exhaustive:  # cannot happen: an exhaustive list always has an unused row
                raise AssertionError("round-robin ran out of candidates with a full list")
            return None  # this query's list is exhausted: widen and retry
        j = cand[i, p]
        used[j] = True
        ptr[i] = p + 1
        out[t] = j
        sims[t] = vals[i, p]
    return out, sims


def select_round_robin(inp: SelectInputs, budget: int, params: NoParams, seed: int) -> np.ndarray:
    return round_robin(inp.sim, budget)


__all__ = ["NoParams", "select_random", "select_topk", "select_round_robin", "order_by_score",
           "random_order", "round_robin"]
