"""Bootstrap CIs and Spearman intervals: exact values on degenerate inputs, coverage, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tselect.report.stats import excludes_zero, half_width, item_matrix, paired_ci, spearman_bins, spearman_points


def test_identical_sides_give_a_zero_interval():
    a = np.array([[0.1, 0.5, 0.9, 0.3]])
    assert paired_ci(a, a.copy()) == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n_items": 4, "n_seeds": 1, "n_ref_seeds": 1}


def test_constant_shift_is_exact_and_seed_noise_widens_the_interval():
    b = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    d = paired_ci(b + 0.25, b)
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx((0.25, 0.25, 0.25))
    # seeds of the method that differ by a constant: the item draw cancels, only the seed draw is left
    a = np.stack([b[0] + 0.1, b[0] + 0.2, b[0] + 0.3])
    d = paired_ci(a, b)
    assert d["mean"] == pytest.approx(0.2) and 0.1 - 1e-12 <= d["lo"] < 0.2 < d["hi"] <= 0.3 + 1e-12


def test_own_mean_interval_brackets_the_mean():
    x = np.array([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    ci = paired_ci(x)
    assert ci["mean"] == pytest.approx(5 / 8) and ci["lo"] < 5 / 8 < ci["hi"] and ci["n_ref_seeds"] is None
    assert 0.0 <= ci["lo"] and ci["hi"] <= 1.0


def test_deterministic():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 40)), rng.normal(size=(2, 40))
    assert paired_ci(a, b) == paired_ci(a, b)


def test_coverage_near_95_percent():
    """Items ~ N(μ, 1) with one seed per side: the interval covers the true difference ~95% of the time."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(300):
        base = rng.normal(size=60)
        a = (base + 0.3 + rng.normal(scale=0.5, size=60))[None]
        hits += paired_ci(a, base[None], n_resamples=400)["lo"] <= 0.3 <= paired_ci(a, base[None], n_resamples=400)["hi"]
    assert 0.88 <= hits / 300 <= 0.99


def test_mismatched_items_rejected():
    with pytest.raises(ValueError, match="do not share"):
        paired_ci(np.zeros((2, 3)), np.zeros((2, 4)))


def test_excludes_zero_and_half_width():
    assert excludes_zero({"lo": 0.1, "hi": 0.2}, higher=True) and not excludes_zero({"lo": 0.1, "hi": 0.2}, higher=False)
    assert excludes_zero({"lo": -0.2, "hi": -0.1}, higher=False) and not excludes_zero({"lo": -0.2, "hi": 0.0}, higher=False)
    assert half_width({"lo": -0.2, "hi": 0.1}) == pytest.approx(0.15) and half_width(None) is None


def test_spearman_points_matches_scipy_and_brackets_it():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=1.0, size=30)
    ci = spearman_points(x, y)
    assert ci["rho"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert ci["lo"] < ci["rho"] < ci["hi"] and ci["n"] == 30
    perfect = spearman_points([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert (perfect["rho"], perfect["lo"], perfect["hi"]) == pytest.approx((1.0, 1.0, 1.0))
    assert spearman_points([1, 2], [3, 4])["rho"] is None  # too few points for an interval


def test_spearman_bins_monotone_and_noisy():
    items = np.linspace(0.0, 1.0, 50)
    runs = [np.stack([items + k, items + k + 0.01]) for k in range(4)]  # bin means 0.505, 1.505, ...
    ci = spearman_bins([1, 2, 3, 4], runs)
    assert (ci["rho"], ci["lo"], ci["hi"], ci["n"]) == pytest.approx((1.0, 1.0, 1.0, 4))
    rng = np.random.default_rng(2)
    flat = [rng.normal(size=(2, 50)) for _ in range(5)]  # no relation: a wide interval around ~0
    ci = spearman_bins([1, 2, 3, 4, 5], flat)
    assert ci["lo"] < 0 < ci["hi"] and ci["hi"] - ci["lo"] > 0.5


def test_item_matrix_aligns_by_id():
    ids, m = item_matrix([{"a": 1.0, "b": 2.0, "c": 3.0}, {"c": 30.0, "a": 10.0}])
    assert ids == ["a", "c"] and m.tolist() == [[1.0, 3.0], [10.0, 30.0]]
    assert item_matrix([]) is None and item_matrix([{"a": 1.0}, {"b": 1.0}]) is None
