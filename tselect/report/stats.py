"""Confidence intervals for the report: bootstrap over eval items and training seeds, Spearman CIs.

Every method is evaluated on the same eval items, so comparisons are **paired by item**: a
method's per-item value (averaged over its training seeds) minus random's (averaged over
random's seeds). The bootstrap resamples both sources of noise at once — in each replicate the
items are drawn with replacement (the same draw for both sides, which keeps the pairing) and each
side's training seeds are drawn with replacement — so random's subset-to-subset spread widens the
interval instead of being ignored. With one seed on a side, that side's seed noise is unknown and
the interval covers item noise only (the report says so and never calls such a cell a winner).

Pure numpy/scipy: arrays in, dicts of floats out; a fixed seed makes every interval reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0  # every bootstrap starts from this seed: the same inputs give the same interval


def _tails() -> tuple[float, float]:
    alpha = (1.0 - CONFIDENCE) / 2
    return 100 * alpha, 100 * (1 - alpha)


def _seed_means(rng, x: np.ndarray, n_resamples: int) -> np.ndarray:
    """[B, N]: per replicate, x's per-item mean over a with-replacement draw of its seeds (rows)."""
    draw = rng.integers(0, x.shape[0], size=(n_resamples, x.shape[0]))  # [B, S]
    return x[draw].mean(axis=1)  # [B, S, N] -> [B, N]


def _item_means(rng, per_item: np.ndarray) -> np.ndarray:
    """[B]: mean over a with-replacement draw of the items of each replicate's row [B, N]."""
    draw = rng.integers(0, per_item.shape[1], size=per_item.shape)  # [B, N]
    return np.take_along_axis(per_item, draw, axis=1).mean(axis=1)


def paired_ci(a: np.ndarray, b: np.ndarray | None = None, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Mean over items of (a's seed mean − b's seed mean), with a percentile bootstrap 95% CI.

    a: [Sa, N] per-item values, one row per training seed; b: [Sb, N] on the same N items in the
    same order, or None for a's own mean. Returns {mean, lo, hi, n_items, n_seeds, n_ref_seeds}.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"paired_ci needs a [seeds, items] array with items, got shape {a.shape}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != a.shape[1]:
            raise ValueError(f"paired_ci: {a.shape} and {b.shape} do not share their items")
    rng = np.random.default_rng(SEED)
    reps = _seed_means(rng, a, n_resamples)
    point = a.mean(axis=0)  # [N]
    if b is not None:
        reps = reps - _seed_means(rng, b, n_resamples)
        point = point - b.mean(axis=0)
    lo, hi = np.percentile(_item_means(rng, reps), _tails())
    return {"mean": float(point.mean()), "lo": float(lo), "hi": float(hi), "n_items": int(a.shape[1]),
            "n_seeds": int(a.shape[0]), "n_ref_seeds": None if b is None else int(b.shape[0])}


def excludes_zero(ci: dict | None, higher: bool) -> bool:
    """The whole interval lies on the better side of zero (above for metrics, below for losses)."""
    if ci is None:
        return False
    return ci["lo"] > 0 if higher else ci["hi"] < 0


def half_width(ci: dict | None) -> float | None:
    return None if ci is None else (ci["hi"] - ci["lo"]) / 2


def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)  # average ranks for ties


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of [B, K] arrays; nan where a row is constant."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / den, np.nan)


def _rho_ci(point: float, reps: np.ndarray, n: int) -> dict[str, Any]:
    ok = reps[np.isfinite(reps)]
    if not np.isfinite(point) or ok.size < reps.size // 2:  # mostly degenerate resamples: no interval
        return {"rho": None if not np.isfinite(point) else float(point), "lo": None, "hi": None, "n": n}
    lo, hi = np.percentile(ok, _tails())
    return {"rho": float(point), "lo": float(lo), "hi": float(hi), "n": n}


def spearman_bins(bins: Sequence[float], runs: Sequence[np.ndarray], n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Spearman ρ(bin, mean value) with a CI from resampling items and each bin's seeds.

    bins: K bin numbers; runs[k]: [S_k, N] per-item values of bin k's training seeds on the same
    N items. The point estimate is ρ over the K bin means; each replicate redraws the items (one
    draw for all bins, keeping the pairing) and every bin's seeds, then recomputes ρ.
    """
    if len(bins) < 3:
        return {"rho": None, "lo": None, "hi": None, "n": len(bins)}
    rng = np.random.default_rng(SEED)
    n_items = runs[0].shape[1]
    items = rng.integers(0, n_items, size=(n_resamples, n_items))  # [B, N], shared by every bin
    means = np.stack([np.take_along_axis(_seed_means(rng, np.asarray(r, np.float64), n_resamples), items, axis=1)
                      .mean(axis=1) for r in runs], axis=1)  # [B, K]
    x = _rank_rows(np.asarray(bins, dtype=np.float64)[None, :])
    point_means = np.array([np.asarray(r, np.float64).mean() for r in runs])[None, :]
    point = _pearson_rows(x, _rank_rows(point_means))[0]
    return _rho_ci(point, _pearson_rows(np.broadcast_to(x, means.shape), _rank_rows(means)), len(bins))


def spearman_points(x: Sequence[float], y: Sequence[float], n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Spearman ρ(x, y) over paired points with a CI from resampling the points (pairs kept)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 3:
        return {"rho": None, "lo": None, "hi": None, "n": int(xa.size)}
    rng = np.random.default_rng(SEED)
    draw = rng.integers(0, xa.size, size=(n_resamples, xa.size))  # [B, n]
    point = _pearson_rows(_rank_rows(xa[None]), _rank_rows(ya[None]))[0]
    reps = _pearson_rows(_rank_rows(xa[draw]), _rank_rows(ya[draw]))
    return _rho_ci(point, reps, int(xa.size))


def item_matrix(runs: Sequence[dict[str, float]], ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray] | None:
    """[S, N] array from per-run {item id: value} dicts on the items every run has (in the first
    run's order, or `ids`' order); None when there is no run or no shared item."""
    if not runs:
        return None
    shared = [i for i in (ids if ids is not None else runs[0]) if all(i in r for r in runs)]
    if not shared:
        return None
    return shared, np.array([[r[i] for i in shared] for r in runs], dtype=np.float64)
