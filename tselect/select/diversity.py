"""Score- and feature-space selectors: `score`, `score_diverse` (DEITA) and `kcenter`.

Pool–pool distances use the features of every checkpoint t (unit rows) with weights w_t:
dist(x, y) = 1 − Σ_t w_t ⟨x_t, y_t⟩, the same weighted cosine the query similarity uses.
Nothing here builds an [N, N] matrix: pool rows are streamed or gathered in blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tselect.select.basic import order_by_score
from tselect.select.inputs import SelectInputs

CHUNK_ROWS = 8192  # pool rows per streamed block
WALK_BATCH = 512  # score_diverse candidates gathered and compared at once


def take_rows(arr, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of an [n, d] array-like (numpy or zarr) in the given order → float32."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, arr.shape[1]), dtype=np.float32)
    order = np.argsort(idx, kind="stable")  # read in increasing row order (zarr-friendly)
    rows = np.asarray(arr[idx[order]], dtype=np.float32)
    out = np.empty_like(rows)
    out[order] = rows
    return out


def feature_weights(inp: SelectInputs) -> tuple[Sequence, np.ndarray]:
    """The pool features and checkpoint weights (uniform when none are given)."""
    if inp.pool_features is None or len(inp.pool_features) == 0:
        raise ValueError("this selector needs pool features (a feature store), but none were given")
    t = len(inp.pool_features)
    w = np.full(t, 1.0 / t) if inp.weights is None else np.asarray(inp.weights, dtype=np.float64)
    assert w.shape == (t,), "one weight per checkpoint"
    return inp.pool_features, w


def weighted_dot(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], w: np.ndarray) -> np.ndarray:
    """Σ_t w_t · xs_t @ ys_tᵀ: [a, d_t] × [b, d_t] → [a, b] float32."""
    out = np.zeros((xs[0].shape[0], ys[0].shape[0]), dtype=np.float32)
    for x, y, wt in zip(xs, ys, w):
        out += np.float32(wt) * (x @ y.T)
    return out


def pool_blocks(feats: Sequence, n: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (start, [rows_t [b, d_t] per checkpoint]) covering the pool in order."""
    for start in range(0, n, CHUNK_ROWS):
        yield start, [np.asarray(f[start:start + CHUNK_ROWS], dtype=np.float32) for f in feats]


# ---- score ---------------------------------------------------------------------------------

def score_order(scores: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(scored rows by score desc with ties to the lower index, NaN rows in index order)."""
    if scores is None:
        raise ValueError("this selector needs a score artifact (--scores), but none was given")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"scores have shape {scores.shape}, expected ({n},): one per pool row")
    return order_by_score(scores), np.flatnonzero(np.isnan(scores)).astype(np.int64)


def select_score(inp: SelectInputs, budget: int, params, seed: int) -> np.ndarray:
    """Order by score descending; NaN (filtered out when the scores were made) come last."""
    head, dropped = score_order(inp.scores, inp.n_pool)
    return np.concatenate([head, dropped])[:budget]


# ---- score_diverse (DEITA) -----------------------------------------------------------------

@dataclass(frozen=True)
class ScoreDiverseParams:
    tau: float = 0.1
    """Keep a row only if its distance 1 − Σ_t w_t⟨x_t, y_t⟩ to every kept row is > tau."""

    def __post_init__(self):
        if not 0 <= self.tau < 2:
            raise ValueError(f"tau must be in [0, 2), got {self.tau}; pass --param tau=0.1")


def select_score_diverse(inp: SelectInputs, budget: int, params: ScoreDiverseParams,
                         seed: int) -> np.ndarray:
    """Walk rows by score descending, keeping those farther than tau from all kept rows.

    If the walk ends before the budget, the skipped rows follow in score order and then the
    NaN-score rows in index order, so the result is one nested ordering of the whole pool.
    """
    head, dropped = score_order(inp.scores, inp.n_pool)
    feats, w = feature_weights(inp)
    kept, skipped = _diverse_walk(feats, w, head, budget, 1.0 - params.tau)
    if kept.size >= budget:
        return kept[:budget]
    return np.concatenate([kept, skipped, dropped])[:budget]


def _diverse_walk(feats, w, walk: np.ndarray, budget: int, max_sim: float):
    """(kept rows in walk order, up to budget; rows skipped on the way)."""
    bank = [np.empty((0, f.shape[1]), dtype=np.float32) for f in feats]  # kept rows [k, d_t]
    kept: list[int] = []
    skipped: list[int] = []
    for b0 in range(0, walk.size, WALK_BATCH):
        if len(kept) >= budget:
            break
        batch = walk[b0:b0 + WALK_BATCH]
        x = [take_rows(f, batch) for f in feats]  # [b, d_t]
        to_kept = _max_similarity(x, bank, len(kept), w)  # [b]
        within = weighted_dot(x, x, w)  # [b, b]: this batch against itself, for in-batch picks
        taken: list[int] = []
        for i in range(batch.size):
            if len(kept) + len(taken) >= budget:
                break
            near = max(to_kept[i], within[i, taken].max(initial=-np.inf))
            if near < max_sim:  # distance > tau ⇔ similarity < 1 − tau
                taken.append(i)
            else:
                skipped.append(int(batch[i]))
        bank = [_append_rows(k, len(kept), xt[taken]) for k, xt in zip(bank, x)]
        kept.extend(int(batch[i]) for i in taken)
    return np.asarray(kept, dtype=np.int64), np.asarray(skipped, dtype=np.int64)


def _max_similarity(x, bank, used: int, w) -> np.ndarray:
    """max over the first `used` bank rows of Σ_t w_t⟨x_t, k_t⟩ → [b], in blocks of bank rows."""
    best = np.full(x[0].shape[0], -np.inf, dtype=np.float32)
    for k0 in range(0, used, CHUNK_ROWS):
        block = weighted_dot(x, [k[k0:min(used, k0 + CHUNK_ROWS)] for k in bank], w)  # [b, c]
        np.maximum(best, block.max(axis=1), out=best)
    return best


def _append_rows(bank: np.ndarray, used: int, rows: np.ndarray) -> np.ndarray:
    """Write rows after the first `used`, doubling the capacity when full (amortized O(1))."""
    need = used + rows.shape[0]
    if need > bank.shape[0]:
        grown = np.empty((max(need, 2 * bank.shape[0]), bank.shape[1]), dtype=np.float32)
        grown[:used] = bank[:used]
        bank = grown
    bank[used:need] = rows
    return bank


# ---- kcenter -------------------------------------------------------------------------------

def select_kcenter(inp: SelectInputs, budget: int, params, seed: int) -> np.ndarray:
    """k-center greedy: each next row is the one farthest from all rows chosen so far.

    The first center is the row most similar on average to the queries (see `_first_center`).
    Memory is O(N) (the running distance to the nearest center); each step streams the pool
    once, so the cost is O(budget·N·d): meant for budgets well below the pool size.
    """
    feats, w = feature_weights(inp)
    n = inp.n_pool
    budget = min(budget, n)
    nearest = np.full(n, np.inf, dtype=np.float32)  # [N] distance to the closest center
    out = np.empty(budget, dtype=np.int64)
    center = _first_center(inp, feats, w)
    for t in range(budget):
        out[t] = center
        c = [take_rows(f, np.array([center])) for f in feats]  # [1, d_t]
        for start, rows in pool_blocks(feats, n):
            dist = 1.0 - weighted_dot(rows, c, w)[:, 0]  # [b]
            block = nearest[start:start + dist.size]
            np.minimum(block, dist, out=block)
        nearest[center] = -np.inf  # never again: min(−inf, ·) keeps every chosen row at −inf
        center = int(np.argmax(nearest))  # ties → lower index
    return out


def _first_center(inp: SelectInputs, feats, w) -> int:
    """The row with the highest mean similarity to the queries, ties to the lower index.

    mean_i S[i, j] = Σ_t w_t ⟨q̄_t, x_{j,t}⟩ with q̄_t the mean query row, so one pass over the
    pool suffices. Without query features the mean of S is streamed from `inp.sim`; with
    neither, the row closest to the pool mean (a medoid proxy) is used. No seed is involved.
    """
    n = inp.n_pool
    if inp.query_features is None and inp.sim is not None:
        score = np.empty(n, dtype=np.float64)
        for start, block in inp.sim.chunks():
            score[start:start + block.shape[1]] = block.mean(axis=0)
        return int(np.argmax(score))
    if inp.query_features is not None:
        centre = [np.asarray(q, dtype=np.float32).mean(axis=0, keepdims=True)
                  for q in inp.query_features]  # [1, d_t]
    else:
        sums = [np.zeros((1, f.shape[1]), dtype=np.float64) for f in feats]
        for _, rows in pool_blocks(feats, n):
            for s, r in zip(sums, rows):
                s += r.sum(axis=0, keepdims=True)
        centre = [(s / n).astype(np.float32) for s in sums]
    score = np.empty(n, dtype=np.float32)
    for start, rows in pool_blocks(feats, n):
        score[start:start + rows[0].shape[0]] = weighted_dot(rows, centre, w)[:, 0]
    return int(np.argmax(score))
