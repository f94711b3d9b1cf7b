"""The Adam update direction LESS uses for pool (training) examples.

Under one Adam step from a warmup checkpoint, a training example z moves the parameters along
Γ(z) = m' / √(v' + ε), with m' = β1·m + (1−β1)·g and v' = β2·v + (1−β2)·g² — the moments
(m, v) the checkpoint's optimizer holds, updated with the example's own gradient g. ε sits
inside the square root, as in the LESS reference. Query examples use plain gradients.

Moments are always looked up by parameter NAME: the positional order of an optimizer state
dict is not a stable contract (LESS issues #4/#10/#44 come from exactly that mismatch).
Loading them from disk is the LESS stage's job; this module is arrays in, arrays out.

Imports torch at module top: only the featurize stage imports this module, lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8

Transform = Callable[[str, torch.Tensor], torch.Tensor]  # (param name, g [B, *shape]) -> same shape


def _compute_dtype(g: torch.Tensor) -> torch.dtype:
    # fp32 at least (bf16 g² underflows); keep fp64 when the caller passes it (exact tests).
    return torch.promote_types(g.dtype, torch.float32)


def _updated_moments(g, exp_avg, exp_avg_sq, betas):
    dt = _compute_dtype(g)
    g = g.to(dt)
    b1, b2 = betas
    m = exp_avg.to(device=g.device, dtype=dt) * b1 + g * (1 - b1)  # [B, *shape] via broadcast
    v = exp_avg_sq.to(device=g.device, dtype=dt) * b2 + g * g * (1 - b2)
    return m, v


def adam_direction(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                   betas: tuple[float, float] = BETAS, eps: float = EPS) -> torch.Tensor:
    """Γ = m' / √(v' + ε), without bias correction (the LESS reference).

    g [B, *shape] (or [*shape]); exp_avg, exp_avg_sq [*shape], broadcast over the batch.
    """
    m, v = _updated_moments(g, exp_avg, exp_avg_sq, betas)
    return m / torch.sqrt(v + eps)


def adam_direction_bias_corrected(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                                  step: int, betas: tuple[float, float] = BETAS,
                                  eps: float = EPS) -> torch.Tensor:
    """Γ = m̂ / √(v̂ + ε) with m̂ = m'/(1−β1^t), v̂ = v'/(1−β2^t).

    `step` is t, the index of the hypothetical update (≥ 1): a checkpoint saved after n
    optimizer steps gives t = n + 1, matching torch.optim.Adam, which increments before use.
    """
    if step < 1:
        raise ValueError(f"bias correction needs step >= 1, got {step}")
    m, v = _updated_moments(g, exp_avg, exp_avg_sq, betas)
    b1, b2 = betas
    return (m / (1 - b1**step)) / torch.sqrt(v / (1 - b2**step) + eps)


def check_moments(shapes: Mapping[str, tuple[int, ...]], exp_avg: Mapping[str, torch.Tensor],
                  exp_avg_sq: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError unless every named parameter has both moments with its exact shape."""
    problems = []
    for name, shape in shapes.items():
        for label, table in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            if name not in table:
                problems.append(f"{label} missing for {name}")
            elif tuple(table[name].shape) != tuple(shape):
                problems.append(f"{label}[{name}] has shape {tuple(table[name].shape)}, parameter {tuple(shape)}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ValueError(f"Adam moments do not match the adapter's parameters: {shown}. "
                         f"Use the optimizer state saved with the same checkpoint, keyed by parameter name")


def _lookup(name: str, table: Mapping[str, torch.Tensor], label: str) -> torch.Tensor:
    if name not in table:
        raise ValueError(f"no {label} for parameter {name!r}; the moments hold {len(table)} names, "
                         f"e.g. {next(iter(table), '(none)')!r}; run check_moments first")
    return table[name]


def _direction_inplace(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                       betas: tuple[float, float], eps: float) -> torch.Tensor:
    """adam_direction with the same operations in the same order (so the same bits), in place on
    two [B, *shape] temporaries instead of ~8 fresh ones; β1·m and β2·v are [*shape], 1/B of it."""
    dt = _compute_dtype(g)
    g = g.to(dt)
    b1, b2 = betas
    b1m = exp_avg.to(device=g.device, dtype=dt) * b1
    b2v = exp_avg_sq.to(device=g.device, dtype=dt) * b2
    v = (g * g).mul_(1 - b2).add_(b2v)  # β2·v + g²(1−β2)  [B, *shape]
    m = (g * (1 - b1)).add_(b1m)  # β1·m + g(1−β1)
    return m.div_(v.add_(eps).sqrt_())


def adam_transform(exp_avg: Mapping[str, torch.Tensor], exp_avg_sq: Mapping[str, torch.Tensor],
                   betas: tuple[float, float] = BETAS, eps: float = EPS) -> Transform:
    """A per-parameter transform(name, g) = adam_direction with that parameter's moments."""

    def transform(name: str, g: torch.Tensor) -> torch.Tensor:
        m, v = _lookup(name, exp_avg, "exp_avg"), _lookup(name, exp_avg_sq, "exp_avg_sq")
        return _direction_inplace(g, m, v, betas, eps)

    return transform


def adam_transform_bias_corrected(exp_avg: Mapping[str, torch.Tensor],
                                  exp_avg_sq: Mapping[str, torch.Tensor], step: int,
                                  betas: tuple[float, float] = BETAS, eps: float = EPS) -> Transform:
    """As adam_transform, with bias correction at update index `step`."""
    if step < 1:
        raise ValueError(f"bias correction needs step >= 1, got {step}")

    def transform(name: str, g: torch.Tensor) -> torch.Tensor:
        m, v = _lookup(name, exp_avg, "exp_avg"), _lookup(name, exp_avg_sq, "exp_avg_sq")
        return adam_direction_bias_corrected(g, m, v, step, betas, eps)

    return transform
