"""uot's candidate path (one pass, POT on the top-w union) against the exact dense solve.

On N rows small enough for the dense [M, N] solve, with the select bench's synthetic rows
(fp16-rounded, as stored): for budgets k, the overlap of the two top-k sets, the dense plan's
mass that the candidate top-k captures relative to the dense top-k's (1 = as much), and the
subset-to-query OT distance (`tselect.select.distance`) of both. Also checks that the one-pass
path returns the same bytes as the two-pass path (column cache disabled).
"""

from __future__ import annotations

import time
import warnings

import numpy as np


def rows(n: int, m: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool [n, d], query [m, d]) float32, fp16-rounded, from the select bench's generator."""
    from bench.select_bench import _rows

    centers = np.random.default_rng([seed, 7]).standard_normal((64, dim), dtype=np.float32)
    pool = _rows(seed, 0, 0, n, centers).astype(np.float16).astype(np.float32)
    query = _rows(seed, 1, 0, m, centers).astype(np.float16).astype(np.float32)
    return pool, query


def agreement(n: int, m: int, dim: int, seed: int, fractions=(0.01, 0.05), shrink=(2, 10)) -> dict:
    """Dense solve once; candidate path with max_cells = M·N / s for each s in `shrink`."""
    from tselect.select import uot
    from tselect.select.distance import subset_query_distances
    from tselect.select.inputs import SelectInputs
    from tselect.similarity import ArraySimilarity

    pool, query = rows(n, m, dim, seed)
    sim = query @ pool.T  # [M, N] float32
    t0 = time.perf_counter()
    dense_p = uot.uot_scores((1.0 - sim.astype(np.float64)) / 2.0, 1.0 / n, uot.UOTParams())  # [N]
    dense_s = time.perf_counter() - t0
    dense = uot.order_by_score(dense_p)
    out = {"n_pool": n, "n_query": m, "dim": dim, "dense_solve_s": round(dense_s, 1), "runs": []}
    for s in shrink:
        params = uot.UOTParams(max_cells=m * n // s)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            got = uot.select_uot(SelectInputs(n_pool=n, sim=ArraySimilarity(sim)), n, params, 0)
            cand_s = time.perf_counter() - t0
        factor, uot.CACHE_FACTOR = uot.CACHE_FACTOR, 0  # the two-pass path, for the identity check
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                two = uot.select_uot(SelectInputs(n_pool=n, sim=ArraySimilarity(sim)), n, params, 0)
        finally:
            uot.CACHE_FACTOR = factor
        run = {"max_cells": params.max_cells, "candidate_s": round(cand_s, 1),
               "one_pass_equals_two_pass": got.tobytes() == two.tobytes(),
               "warnings": [str(w.message) for w in caught], "budgets": []}
        for f in fractions:
            k = max(1, int(n * f))
            a, b = got[:k], dense[:k]
            da, db = (subset_query_distances(sim[:, x])["ot"] for x in (a, b))
            run["budgets"].append({
                "budget": k, "overlap": round(np.intersect1d(a, b).size / k, 4),
                "dense_mass_ratio": round(float(dense_p[a].sum() / dense_p[b].sum()), 6),
                "ot_candidate": round(da, 6), "ot_dense": round(db, 6), "ot_gap": round(da - db, 6)})
        out["runs"].append(run)
    return out


def markdown(agree: dict) -> list[str]:
    lines = ["", f"uot candidate path against the dense solve (N={agree['n_pool']:,} × M={agree['n_query']:,} "
             f"× d={agree['dim']} in memory, same generator; dense solve {agree['dense_solve_s']} s):", "",
             "| max_cells | budget | overlap | dense-mass ratio | OT cand | OT dense | OT gap | one pass = two |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in agree["runs"]:
        for b in run["budgets"]:
            lines.append(f"| {run['max_cells']:,} | {b['budget']:,} | {b['overlap']:.3f} | {b['dense_mass_ratio']:.4f} | "
                         f"{b['ot_candidate']:.4f} | {b['ot_dense']:.4f} | {b['ot_gap']:+.4f} | "
                         f"{run['one_pass_equals_two_pass']} |")
    return lines
