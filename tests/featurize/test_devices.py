"""One device per op: the projection, Adam and per-example hook math never mix devices.

Run on `meta` inputs: a CPU tensor slipping into that math (a table built on the host, a
moment never moved) is exactly the bug that crashes on CUDA, and OneDevice flags it on CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tselect.featurize.adam import adam_transform, adam_transform_bias_corrected
from tselect.featurize.grads import _factor_grads
from tselect.featurize.project import PROJECTIONS, make_projector

from .dispatch import OneDevice

META = torch.device("meta")


def test_the_checker_catches_a_cpu_tensor_in_meta_math():
    with pytest.raises(AssertionError, match="mixes devices"), OneDevice():
        torch.ones(3, device=META) + torch.ones(3)


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_projection_adam_and_hook_math_stay_on_the_input_device(kind):
    lin = nn.Linear(16, 4, bias=False, device=META)  # a LoRA A factor: [r=4, in=16]
    x = torch.empty(2, 5, 16, device=META)  # [B, T, in]
    g = torch.empty(2, 5, 4, device=META)  # [B, T, out]
    keep = torch.ones(2, 5, dtype=torch.bool, device=META)
    moments = {"w": torch.empty(4, 16, device=META)}
    proj = make_projector(kind, 64, seed=0)
    with OneDevice():
        grad = _factor_grads(lin, x, g, keep)["weight"]  # [B, 4, 16]
        for transform in (adam_transform(moments, moments), adam_transform_bias_corrected(moments, moments, 3)):
            out = proj.project("w", transform("w", grad))
            assert out.shape == (2, 64) and out.device == META
