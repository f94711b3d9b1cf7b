"""uot, knn_uniform and knn_kde against direct, unoptimized evaluations of their formulas."""

from __future__ import annotations

import heapq
import warnings

import numpy as np
import pytest

from tselect.select import knn_kde
from tselect.select.inputs import SelectInputs
from tselect.select.knn import KNNUniformParams, select_knn_uniform
from tselect.select.knn_kde import KNNKDEParams, select_knn_kde
from tselect.similarity import ArraySimilarity
from tselect.select.uot import UOTParams, select_uot, uot_scores
from tests.select.helpers import random_inputs


def rank(p: np.ndarray, sim: np.ndarray) -> list[int]:
    """p > 0 by p desc, then p = 0 by max similarity desc; ties to the lower index."""
    idx = np.arange(p.size)
    head = [j for j in np.lexsort((idx, -p)) if p[j] > 0]
    colmax = sim.max(axis=0)
    tail = [j for j in np.lexsort((idx, -colmax)) if p[j] == 0]
    return [int(j) for j in head + tail]


# ---- UOT -----------------------------------------------------------------------------------

def plain_unbalanced_sinkhorn(sim, eps, reg_m2, tol=1e-13, max_iter=20000):
    """Generalized Sinkhorn for KL(T‖a⊗b) with a hard row marginal, written out by hand."""
    cost = (1.0 - sim.astype(np.float64)) / 2.0
    m, n = cost.shape
    a, b = np.full(m, 1.0 / m), np.full(n, 1.0 / n)
    kern = np.exp(-cost / eps) * np.outer(a, b)
    f = reg_m2 / (reg_m2 + eps)
    u, v = np.ones(m), np.ones(n)
    for _ in range(max_iter):
        u_new = a / (kern @ v)  # λ₁ = ∞: exponent 1
        v_new = (b / (kern.T @ u_new)) ** f
        change = max(np.abs(u_new - u).max() / max(np.abs(u_new).max(), 1.0),
                     np.abs(v_new - v).max() / max(np.abs(v_new).max(), 1.0))
        u, v = u_new, v_new
        if change < tol:
            break
    return u[:, None] * kern * v[None, :]  # [M, N] plan


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("eps, reg_m2", [(0.01, 1e-4), (0.05, 1e-2)])
def test_uot_matches_hand_written_sinkhorn(seed, eps, reg_m2):
    sim = random_inputs(n=50, m=5, seed=seed).sim.sim
    plan = plain_unbalanced_sinkhorn(sim, eps, reg_m2)
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 5, rtol=1e-9)  # the hard query marginal
    params = UOTParams(eps=eps, reg_m2=reg_m2, tol=1e-12, num_iter=20000)
    got = uot_scores((1.0 - sim.astype(np.float64)) / 2.0, 1 / 50, params)
    np.testing.assert_allclose(got, plan.sum(axis=0), rtol=1e-6, atol=1e-15)
    order = select_uot(SelectInputs(n_pool=50, sim=ArraySimilarity(sim)), 50, params, 0)
    assert order.tolist() == np.lexsort((np.arange(50), -plan.sum(axis=0))).tolist()


def test_uot_warns_when_sinkhorn_stops_early():
    inp = random_inputs()
    with pytest.warns(UserWarning, match="did not converge in 1 iterations"):
        select_uot(inp, 5, UOTParams(num_iter=1), 0)


def test_uot_candidate_mode_keeps_the_head_and_orders_the_rest_by_max_similarity():
    inp = random_inputs(n=300, m=3, seed=4)
    dense = select_uot(inp, 300, UOTParams(), 0)
    with pytest.warns(UserWarning, match="kept the top 25 \\(not 50\\) candidates per query"):
        sparse = select_uot(inp, 300, UOTParams(candidates=50, max_cells=3 * 75), 0)
    assert sparse[:5].tolist() == dense[:5].tolist()  # the mass sits on the nearest rows
    union = np.unique(np.argsort(-inp.sim.sim, axis=1, kind="stable")[:, :25])
    assert sorted(sparse[:union.size].tolist()) == union.tolist()
    rest = sparse[union.size:]
    colmax = inp.sim.sim.max(axis=0)[rest]
    assert np.all(np.diff(colmax) <= 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no narrowing needed: no warning
        select_uot(inp, 10, UOTParams(candidates=50, max_cells=3 * 150), 0)


# ---- KNN-Uniform ---------------------------------------------------------------------------

def literal_knn_uniform(sim, alpha, c, max_k):
    """TSDS KNN-Uniform as written: sort, grow K with the while-loop, count, rank."""
    m, n = sim.shape
    dist = 1.0 - sim.astype(np.float64)
    width = min(max_k, n)
    order = np.argsort(dist, axis=1, kind="stable")[:, :width]
    d = np.take_along_axis(dist, order, axis=1)
    k = 1
    while k < width:
        gaps = sum(d[i, k] - d[i, j] for i in range(m) for j in range(k))
        if (alpha / c) * gaps < (1 - alpha) * m:
            k += 1
        else:
            break
    p = np.zeros(n)
    for i in range(m):
        for j in order[i, :k]:
            p[j] += 1.0 / (k * m)
    return rank(p, sim)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha, c, max_k", [(0.01, 5.0, 5000), (0.5, 1.0, 5000), (0.3, 0.5, 12),
                                             (0.9, 0.05, 30)])
def test_knn_uniform_matches_literal_procedure(seed, alpha, c, max_k):
    inp = random_inputs(n=80, m=5, seed=seed, chunk_rows=13)
    got = select_knn_uniform(inp, 80, KNNUniformParams(alpha=alpha, c=c, max_k=max_k), 0)
    assert got.tolist() == literal_knn_uniform(inp.sim.sim, alpha, c, max_k)


# ---- KNN-KDE -------------------------------------------------------------------------------

def literal_knn_kde(inp: SelectInputs, p: KNNKDEParams):
    """TSDS KNN-KDE as written: dense distances, dense U×U KDE, heap water-filling, ranking."""
    sim = inp.sim.sim
    m, n = sim.shape
    cap = max(1, n // p.pool_divisor)
    width = min(max(min(p.max_k, cap), 2), n)
    dist = np.maximum(1.0 - sim.astype(np.float64), 0.0)
    order = np.argsort(dist, axis=1, kind="mergesort")[:, :width]
    d = np.take_along_axis(dist, order, axis=1)
    union = sorted(set(order.ravel().tolist()))
    gram = sum(np.float32(w) * (f[union] @ f[union].T) for w, f in zip(inp.weights, inp.pool_features))
    kde = {}
    for r, u in enumerate(union):
        top = np.sort(gram[r])[::-1][:min(p.kde_k, cap, len(union))]
        if p.sigma == 0:
            kde[u] = 1.0
            continue
        kde[u] = sum(max(0.0, 1.0 - 2.0 * max(1.0 - float(s), 0.0) / p.sigma**2) for s in top)
    kd = [[kde[j] for j in row] for row in order]
    heap = [(1.0 / kd[j][0], 0, j) for j in range(m)]
    heapq.heapify(heap)
    wsum = [d[j][0] / kd[j][0] for j in range(m)]
    cost, total, s, last = [0.0] * m, 0.0, 0.0, [0] * m
    while heap:
        count, k, j = heapq.heappop(heap)
        s = count
        total -= cost[j]
        cost[j] = d[j][k + 1] * count - wsum[j]
        total += cost[j]
        if p.alpha / p.c * total >= (1 - p.alpha) * m:
            break
        last[j] = k
        if k < width - 2:
            heapq.heappush(heap, (count + 1.0 / kd[j][k + 1], k + 1, j))
            wsum[j] += d[j][k + 1] / kd[j][k + 1]
    probs = np.zeros(n)
    for j in range(m):
        acc = 0.0
        for k in range(last[j] + 1):
            probs[order[j][k]] += 1.0 / m / s / kd[j][k]
            acc += 1.0 / m / s / kd[j][k]
        probs[order[j][last[j] + 1]] += max(1.0 / m - acc, 0.0)
    # ties: p equal up to float noise (12 decimals of M·p) go to the lower index, as documented
    return rank(np.round(probs * m, 12), sim)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("params", [
    KNNKDEParams(),  # TSDS defaults: caps of N // 10
    KNNKDEParams(alpha=0.5, c=1.0, pool_divisor=2, sigma=1.2),
    KNNKDEParams(alpha=0.9, c=0.2, pool_divisor=1, kde_k=7),
    KNNKDEParams(alpha=0.5, c=1.0, sigma=0.0, pool_divisor=3),
])
def test_knn_kde_matches_literal_procedure(seed, params):
    inp = random_inputs(n=90, m=4, seed=seed, chunk_rows=11)
    assert select_knn_kde(inp, 90, params, 0).tolist() == literal_knn_kde(inp, params)


def test_knn_kde_density_is_blocked_not_dense(monkeypatch):
    inp = random_inputs(n=70, seed=5)
    rows = np.arange(3, 70, 2)
    full = knn_kde.kde_values(inp.pool_features, np.array(inp.weights), rows, 9, 0.9)
    monkeypatch.setattr(knn_kde, "BLOCK_FLOATS", 13 * 4)  # 4 rows per block (d = 8 + 5)
    np.testing.assert_allclose(knn_kde.kde_values(inp.pool_features, np.array(inp.weights),
                                                  rows, 9, 0.9), full, rtol=1e-6)


def test_knn_kde_all_zero_feature_row_stays_finite():
    x = np.array([[1, 0], [0, 0], [0.6, 0.8]], dtype=np.float32)
    kde = knn_kde.kde_values([x], np.array([1.0]), np.arange(3), 3, 0.75)
    assert kde[1] == 1.0 and np.all(np.isfinite(kde))


def test_registry_import_does_not_load_pot():
    import subprocess
    import sys

    code = "import sys, tselect.select.registry; print('ot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "POT must be imported inside the selectors only"
