"""The foundation selectors: random, top-k (doubly greedy) and greedy round-robin.

Each returns a full ordering truncated to `budget`, so every smaller budget is a prefix.
Ties always go to the lower pool index, so orderings are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tselect.select.inputs import SelectInputs
from tselect.similarity import Similarity, column_max, topk_per_query


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


RR_MAX_CELLS = 8_000_000  # candidate cells M·L held at once (~100 MB with their indices)


def round_robin(sim: Similarity, budget: int, max_cells: int = RR_MAX_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """Queries take turns (file order) picking their most similar unused pool row.

    Each query walks its own candidate list sorted by similarity (ties to lower index) with
    a pointer that skips rows already taken, so the cost is O(k + M·L) after one streaming
    top-L pass, not an O(k·N) rescan. L = 4·⌈k/M⌉ (≥ 32) leaves room for rows other queries
    take first. If a list still runs out, the walk does not restart: one more pass gives every
    query its top rows among those still unused, as many as max_cells allows (the pass costs
    the same however long the lists), and the walk resumes at the stuck turn. That is exact:
    rows only ever get used, so a list's first unused entry is still the query's best unused
    row. Ordering most of a large pool (budget near N) takes a few such passes.
    """
    m, n = sim.n_query, sim.n_pool
    budget = min(budget, n)
    width = min(n, max(32, 4 * -(-budget // max(m, 1))), max(1, max_cells // max(m, 1)))
    vals, cand = topk_per_query(sim, width)  # [M, L] sorted
    walk = _RoundRobinWalk(list(cand), list(vals), budget, n)
    while not walk.run():  # a query ran dry: refill every list from the rows still unused
        unused = n - int(np.count_nonzero(walk.used))
        vals, cand = topk_per_query(sim, min(unused, max(1, max_cells // max(m, 1))), exclude=walk.used)
        walk.cand, walk.vals, walk.ptr[:] = list(cand), list(vals), 0
    return walk.out, walk.sims


class _RoundRobinWalk:
    """The round-robin state: per-query candidate lists and pointers, picks so far."""

    def __init__(self, cand: list[np.ndarray], vals: list[np.ndarray], budget: int, n_pool: int):
        self.cand, self.vals = cand, vals  # per query: pool rows [L_i] and their similarity
        self.ptr = np.zeros(len(cand), dtype=np.int64)
        self.used = np.zeros(n_pool, dtype=bool)
        self.out = np.empty(budget, dtype=np.int64)
        self.sims = np.empty(budget, dtype=np.float32)
        self.t = 0  # next turn

    def run(self) -> bool:
        """Pick until the budget is filled (True) or the query on turn runs out of candidates."""
        used, ptr, cand, m = self.used, self.ptr, self.cand, len(self.cand)
        for t in range(self.t, self.out.size):
            i = t % m
            c, p = cand[i], ptr[i]
            while p < c.size and used[c[p]]:
                p += 1
            ptr[i] = p
            if p == c.size:
                self.t = t
                return False
            used[c[p]] = True
            ptr[i] = p + 1
            self.out[t], self.sims[t] = c[p], self.vals[i][p]
        self.t = self.out.size
        return True

def select_round_robin(inp: SelectInputs, budget: int, params: NoParams, seed: int) -> np.ndarray:
    return round_robin(inp.sim, budget)


__all__ = ["NoParams", "select_random", "select_topk", "select_round_robin", "order_by_score",
           "random_order", "round_robin"]
