"""UOT (TIS): rank pool rows by the mass an unbalanced transport plan sends them from the queries.

Cost C = (1 − S)/2 ∈ [0, 1], query marginal a = 1/M (hard, λ₁ = ∞), pool marginal b = 1/N
(almost free, λ₂ = 1e-4), entropic regularization ε on KL(T ‖ a⊗b). POT's generalized
Sinkhorn solves it in float64; score_j = Σ_i T_ij and the order is score descending.

Large pools: the plan needs dense [M, n] matrices (POT holds about six of them), so when
M·N exceeds `max_cells` the problem is solved on the union U of every query's top-L columns
(same a, same b_j = 1/N per column: the full problem with the far columns dropped; with
ε = 0.01 a column 0.1 below a query's L-th neighbour would get e^-5 of its mass). Rows
outside U follow, ordered by max similarity to any query.
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
from tselect.similarity import Similarity, topk_per_query


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


def candidate_columns(sim: Similarity, width: int, max_cells: int) -> np.ndarray:
    """Sorted union of each query's top-`width` pool rows, narrowed until M·|U| ≤ max_cells."""
    _, idx = topk_per_query(sim, width)  # [M, L] sorted by similarity
    start = idx.shape[1]
    while True:
        cols = np.unique(idx[:, :width])
        if sim.n_query * cols.size <= max_cells or width == 1:
            break
        width //= 2  # deterministic and budget-independent, so orderings stay nested
    if width < start:
        warnings.warn(f"uot: kept the top {width} (not {start}) candidates per query so that "
                      f"{sim.n_query}×{cols.size} fits --param max_cells={max_cells}", stacklevel=3)
    return cols


def select_uot(inp: SelectInputs, budget: int, params: UOTParams, seed: int) -> np.ndarray:
    sim = inp.sim
    m, n = sim.n_query, sim.n_pool
    if params.candidates == 0 or m * n <= params.max_cells:
        cost = (1.0 - sim.dense().astype(np.float64)) / 2.0  # [M, N]
        return order_by_score(uot_scores(cost, 1.0 / n, params))[:budget]
    cols = candidate_columns(sim, params.candidates, params.max_cells)  # [|U|]
    cost = (1.0 - subset_similarity(sim, cols).astype(np.float64)) / 2.0  # [M, |U|]
    head = cols[order_by_score(uot_scores(cost, 1.0 / n, params))]
    return fill_by_max_similarity(head, sim, budget)
