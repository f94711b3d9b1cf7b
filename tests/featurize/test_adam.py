"""Adam update direction: exact values computed by hand, and lookup by parameter name."""

from __future__ import annotations

import math

import pytest
import torch

from tselect.featurize.adam import (adam_direction, adam_direction_bias_corrected, adam_transform,
                                    adam_transform_bias_corrected, check_moments)

G = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
M = torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64)
V = torch.tensor([0.01, 0.0, 0.04], dtype=torch.float64)


def test_direction_exact_values():
    # m' = 0.9m + 0.1g = [0.19, -0.2, -0.13]; v' = 0.999v + 0.001g² = [0.01099, 0.004, 0.04021];
    # Γ = m' / √(v' + 1e-8).
    want = [0.19 / math.sqrt(0.01099001), -0.2 / math.sqrt(0.00400001), -0.13 / math.sqrt(0.04021001)]
    got = adam_direction(G, M, V)
    assert got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_bias_corrected_exact_values():
    # Fresh moments, t = 1: m̂ = 0.1g/0.1 = g, v̂ = 0.001g²/0.001 = g², so Γ = g/√(g² + ε).
    g = torch.tensor([2.0, -0.5], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    want = [2.0 / math.sqrt(4.00000001), -0.5 / math.sqrt(0.25000001)]
    got = adam_direction_bias_corrected(g, zero, zero, step=1)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    # t = 3 with the moments above: m̂ = m'/(1 − 0.9³), v̂ = v'/(1 − 0.999³).
    want3 = (0.19 / 0.271) / math.sqrt(0.01099 / (1 - 0.999**3) + 1e-8)
    got3 = adam_direction_bias_corrected(G, M, V, step=3)[0]
    assert math.isclose(float(got3), want3, rel_tol=1e-12)


def test_moments_broadcast_over_the_batch_in_fp32():
    g = torch.stack([G, 2 * G, -G]).to(torch.bfloat16)  # [B=3, 3]
    got = adam_direction(g, M.float(), V.float())
    assert got.shape == (3, 3) and got.dtype == torch.float32
    for b in range(3):
        assert torch.allclose(got[b], adam_direction(g[b].float(), M.float(), V.float()))


def test_transform_looks_moments_up_by_name_not_position():
    moments = {"b": (M, V), "a": (M * 0, V * 0 + 1.0)}
    exp_avg = {k: m for k, (m, _) in moments.items()}
    exp_avg_sq = {k: v for k, (_, v) in moments.items()}
    t = adam_transform(exp_avg, exp_avg_sq)
    assert torch.equal(t("b", G), adam_direction(G, M, V))
    assert torch.equal(t("a", G), adam_direction(G, M * 0, V * 0 + 1.0))
    tb = adam_transform_bias_corrected(exp_avg, exp_avg_sq, step=4)
    assert torch.equal(tb("b", G), adam_direction_bias_corrected(G, M, V, step=4))
    with pytest.raises(ValueError, match="'c'"):
        t("c", G)


def test_check_moments_reports_missing_and_misshapen():
    shapes = {"a": (3,), "b": (2, 2)}
    check_moments(shapes, {"a": M, "b": torch.zeros(2, 2)}, {"a": V, "b": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"exp_avg_sq missing for b"):
        check_moments(shapes, {"a": M, "b": torch.zeros(2, 2)}, {"a": V})
    with pytest.raises(ValueError, match=r"exp_avg\[b\] has shape \(4,\)"):
        check_moments(shapes, {"a": M, "b": torch.zeros(4)}, {"a": V, "b": torch.zeros(2, 2)})


def test_bias_correction_needs_a_positive_step():
    with pytest.raises(ValueError, match="step >= 1"):
        adam_direction_bias_corrected(G, M, V, step=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_transform_is_bit_identical_to_adam_direction_on_batches(dtype):
    # The transform runs in place on its own temporaries; stored features must keep their bytes,
    # so it has to equal the out-of-place formula exactly, and must not modify its input.
    gen = torch.Generator().manual_seed(3)
    g = (torch.randn(5, 7, 11, generator=gen) * 1e-3).to(dtype)
    m, v = torch.randn(7, 11, generator=gen) * 1e-4, torch.randn(7, 11, generator=gen).square() * 1e-7
    before = g.clone()
    got = adam_transform({"w": m}, {"w": v})("w", g)
    assert torch.equal(got, adam_direction(g, m, v))
    assert torch.equal(g, before)
