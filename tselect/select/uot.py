"""UOT (TIS): rank pool rows by the mass an unbalanced transport plan sends them from the queries.

Cost C = (1 − S)/2 ∈ [0, 1], query marginal a = 1/M (hard, λ₁ = ∞), pool marginal b = 1/N
(almost free, λ₂ = 1e-4), entropic regularization ε on KL(T ‖ a⊗b). POT's generalized
Sinkhorn solves it in float64; score_j = Σ_i T_ij and the order is score descending.

Large pools: the plan needs dense [M, n] matrices (POT holds about six of them), so when
M·N exceeds `max_cells` the problem is solved on the union U of every query's top-L columns
(same a, same b_j = 1/N per column: the full problem with the far columns dropped; with
ε = 0.01 a column 0.1 below a query's L-th neighbour would get e^-5 of its mass). Rows
outside U follow, ordered by max similarity to any query.

One pass: the stream that finds the top-L lists also keeps S[:, j] for every row j that can
still be in some query's top-w (`ColumnCache`), and records max_i S[i, j]; the solve and the
fill then read no pool row again. Only when the final width exceeds what the cache could hold
is S[:, U] gathered in a second pass, with the same result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from tselect.select.basic import order_by_score
from tselect.select.distance import subset_similarity
from tselect.select.inputs import SelectInputs, check_param
from tselect.select.knn import fill_by_max_similarity
from tselect.similarity import RunningTopK, Similarity

CACHE_FACTOR = 4  # the one-pass column cache holds ≤ 4·max_cells float32 cells (320 MB by default)


@dataclass(frozen=True)
class UOTParams:
    eps: float = 0.01
    """Entropic regularization ε (TIS: 0.01); smaller is sharper but converges more slowly."""
    reg_m1: float = math.inf
    """KL penalty λ₁ on the query marginal; inf makes every query ship exactly 1/M."""
    reg_m2: float = 1e-4
    """KL penalty λ₂ on the pool marginal; small leaves pool rows free to absorb any mass."""
    num_iter: int = 1000
    """Maximum Sinkhorn iterations (a warning is shown when they run out)."""
    tol: float = 1e-6
    """Stop when the relative change of the scaling vectors falls below this."""
    candidates: int = 1000
    """Per-query top-L columns kept when M·N > max_cells (see module doc); 0 = always dense."""
    max_cells: int = 20_000_000
    """Largest M·n solved densely (≈160 MB per float64 matrix); above it candidates are used."""

    def __post_init__(self):
        check_param(self.eps > 0, "eps", self.eps, "> 0", "0.01")
        check_param(self.reg_m1 > 0, "reg_m1", self.reg_m1, "> 0 (inf = hard marginal)", "inf")
        check_param(self.reg_m2 > 0, "reg_m2", self.reg_m2, "> 0", "0.0001")
        check_param(self.num_iter >= 1, "num_iter", self.num_iter, ">= 1", "1000")
        check_param(self.tol > 0, "tol", self.tol, "> 0", "1e-6")
        check_param(self.candidates >= 0, "candidates", self.candidates, ">= 0 (0 = dense)", "1000")
        check_param(self.max_cells >= 1, "max_cells", self.max_cells, ">= 1", "20000000")


def uot_scores(cost: np.ndarray, col_mass: float, params: UOTParams) -> np.ndarray:
    """Column sums of the unbalanced plan for cost [M, n], a = 1/M, b_j = col_mass → [n]."""
    import ot  # lazy: POT is heavy and only selectors need it

    cost = np.asarray(cost, dtype=np.float64)
    m, n = cost.shape
    a = np.full(m, 1.0 / m)
    b = np.full(n, col_mass)
    plan, log = ot.unbalanced.sinkhorn_unbalanced(
        a, b, cost, reg=params.eps, reg_m=(params.reg_m1, params.reg_m2), reg_type="kl",
        numItermax=params.num_iter, stopThr=params.tol, log=True)
    _warn_unless_converged(log["err"], params)
    return plan.sum(axis=0)  # [n]


def _warn_unless_converged(errs: list, params: UOTParams) -> None:
    # POT's Sinkhorn-Knopp stops silently at numItermax; its log holds one error per iteration.
    last = float(errs[-1]) if len(errs) else math.inf
    if not last < params.tol:
        warnings.warn(
            f"uot: Sinkhorn did not converge in {len(errs)} iterations (last change {last:.2e} "
            f"> tol {params.tol:g}); the ranking may be approximate. Raise --param num_iter or "
            "--param eps", stacklevel=3)


def candidate_width(idx: np.ndarray, n_query: int, max_cells: int) -> tuple[int, np.ndarray]:
    """(w, U): halve w from idx.shape[1] until M·|U| ≤ max_cells, U = sorted union of idx[:, :w].

    idx [M, L]: each query's pool rows by similarity descending. Deterministic and
    budget-independent, so orderings stay nested.
    """
    start = width = idx.shape[1]
    while True:
        cols = np.unique(idx[:, :width])
        if n_query * cols.size <= max_cells or width <= 1:
            break
        width //= 2
    if width < start:
        warnings.warn(f"uot: kept the top {width} (not {start}) candidates per query so that "
                      f"{n_query}×{cols.size} fits --param max_cells={max_cells}", stacklevel=4)
    return width, cols


class ColumnCache:
    """S[:, j] [M] for each pool row j that may still be in some query's top-`width`, kept
    while streaming so that the candidate block needs no second pass over the pool.

    Rows must arrive in increasing order. A row is kept while some query's S[i, j] ≥ that
    query's running width-th value; RunningTopK's threshold lags between merges (never above
    the true one), so the kept rows are a superset of the final top-width union. Once the
    cache, pruned, still holds more than cells/2 cells, width halves; width 0 means it gave up.
    """

    def __init__(self, m: int, width: int, cells: int):
        self.top, self.cells = RunningTopK(m, width), cells
        self.idx = [np.empty(0, dtype=np.int64)]  # blocks of pool rows [c], increasing
        self.cols = [np.empty((m, 0), dtype=np.float32)]  # blocks [M, c] of S[:, rows]
        self.size, self.compacted = 0, 0

    @property
    def width(self) -> int:
        return self.top.k

    def push(self, start: int, block: np.ndarray) -> None:
        """block [M, n] = S[:, start:start+n]."""
        if self.width == 0:
            return
        self.top.push(start, block)
        keep = np.flatnonzero((block >= self.top.thr[:, None]).any(axis=0))  # [c]
        self.idx.append(keep + start)
        self.cols.append(block[:, keep])  # a copy: blocks may be views of a reused buffer
        self.size += keep.size
        if self.size > 2 * max(self.compacted, 1024) or self.top.m * self.size > self.cells:
            self._compact()  # amortized: prune once the cache doubled
            while self.width and 2 * self.top.m * self.size > self.cells:  # room to double again
                self.top = self.top.truncated(self.width // 2)
                self._compact()
        if self.width == 0:
            self.idx, self.cols, self.size = [], [], 0

    def _compact(self) -> None:
        idx, cols = np.concatenate(self.idx), np.concatenate(self.cols, axis=1)
        keep = (cols >= self.top.thr[:, None]).any(axis=0)  # [c]
        self.idx, self.cols = [idx[keep]], [cols[:, keep]]
        self.size = self.compacted = int(keep.sum())

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """S[:, rows] [M, len(rows)] for sorted rows of the final top-w union, w ≤ width."""
        self._compact()
        pos = np.searchsorted(self.idx[0], rows)
        assert np.array_equal(self.idx[0][np.minimum(pos, self.size - 1)], rows), "row not cached"
        return self.cols[0][:, pos]


def candidate_block(sim: Similarity, width: int, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, S[:, U] [M, |U|]) for U = `candidate_width`'s union, from one pass when the cache holds it."""
    m = sim.n_query
    top = RunningTopK(m, min(width, sim.n_pool))
    cache = ColumnCache(m, min(width, sim.n_pool, max_cells // max(m, 1)), CACHE_FACTOR * max_cells)
    for start, block in sim.chunks():
        top.push(start, block)
        cache.push(start, block)
    final, cols = candidate_width(top.result()[1], m, max_cells)
    if final <= cache.width:
        return cols, cache.gather(cols)
    return cols, subset_similarity(sim, cols)  # the cache gave up: one more pass, same block


def select_uot(inp: SelectInputs, budget: int, params: UOTParams, seed: int) -> np.ndarray:
    sim = inp.sim
    m, n = sim.n_query, sim.n_pool
    if params.candidates == 0 or m * n <= params.max_cells:
        cost = (1.0 - sim.dense().astype(np.float64)) / 2.0  # [M, N]
        return order_by_score(uot_scores(cost, 1.0 / n, params))[:budget]
    cols, block = candidate_block(sim, params.candidates, params.max_cells)  # [|U|], [M, |U|]
    cost = (1.0 - block.astype(np.float64)) / 2.0  # [M, |U|]
    head = cols[order_by_score(uot_scores(cost, 1.0 / n, params))]
    return fill_by_max_similarity(head, sim, budget)
